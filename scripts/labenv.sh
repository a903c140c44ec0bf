# shellcheck shell=bash
# Shared helpers for the project-managed libvirt lab. Source it; it sets no shell options.
#
#   source "$(dirname "${BASH_SOURCE[0]}")/labenv.sh"
#   require_lab_netns_exists          # the lab namespace must be there
#   lab_exec curl -s http://192.168.81.100/   # traffic to lab addresses only from inside it
#   require_in_lab_netns              # in a script that itself must run inside the lab namespace
#
# The rule these enforce: nothing talks to VM or lab addresses from the host (root) network
# namespace. libvirtd, its bridges, taps, dnsmasq and the VMs live in network namespace
# $HACLUSTER_NETNS (default halab); the host reaches libvirtd only over its unix socket.

LAB_NETNS=${HACLUSTER_NETNS-halab}
# shellcheck disable=SC2034  # used by the scripts that source this file
# One privileged libvirtd per machine, so its pid files and logs live in one machine-wide place.
LAB_RUN_DIR=${HACLUSTER_LAB_RUN_DIR:-/run/hacluster-lab}
# shellcheck disable=SC2034
LAB_URI=${HACLUSTER_LIBVIRT_URI:-qemu:///system}

lab_log() { printf 'lab: %s\n' "$*" >&2; }
lab_die() { printf 'lab: error: %s\n' "$*" >&2; exit 1; }

# Inode of a network namespace handle (a /proc/PID/ns/net link or a /run/netns/NAME file).
_netns_id() { stat -L -c '%d:%i' "$1" 2>/dev/null; }

lab_netns_exists() {
  [[ -n "$LAB_NETNS" && -e "/run/netns/$LAB_NETNS" ]]
}

# The host's network namespace: PID 1's, or, where /proc/1/ns is unreadable (as on this machine,
# whose PID 1 is not dumpable), kthreadd's (PID 2): kernel threads always live in the initial one.
host_netns_id() {
  _netns_id /proc/1/ns/net && return 0
  [[ "$(cat /proc/2/comm 2>/dev/null)" == kthreadd ]] && _netns_id /proc/2/ns/net
}

# True when this process is in the host's network namespace; false when that cannot be told.
in_root_netns() {
  local root
  root=$(host_netns_id) || return 1
  [[ "$(_netns_id /proc/self/ns/net)" == "$root" ]]
}

# True when process PID (default: this shell) is inside the lab namespace.
pid_in_lab_netns() {
  local lab mine
  lab_netns_exists || return 1
  lab=$(_netns_id "/run/netns/$LAB_NETNS") || return 1
  mine=$(_netns_id "/proc/${1:-self}/ns/net") || return 1
  [[ "$mine" == "$lab" ]]
}

in_lab_netns() { pid_in_lab_netns self; }

require_lab_netns_exists() {
  lab_netns_exists ||
    lab_die "network namespace '${LAB_NETNS}' does not exist: start the lab first (make lab)"
}

# Refuse to go on anywhere but inside the lab namespace: for scripts that send traffic to lab
# addresses themselves (rather than through lab_exec).
require_in_lab_netns() {
  in_lab_netns && return 0
  if in_root_netns; then
    lab_die "refusing to talk to lab addresses from the host network namespace; run this under: ip netns exec ${LAB_NETNS} ..."
  fi
  lab_die "not inside the lab network namespace '${LAB_NETNS}'"
}

# Run a command inside the lab namespace (for anything that talks to VM or lab addresses).
lab_exec() {
  require_lab_netns_exists
  if in_lab_netns; then
    "$@"
  else
    ip netns exec "$LAB_NETNS" "$@"
  fi
}

# PID from a pid file when that process is alive and is the expected program, else nothing.
pidfile_pid() {
  local file=$1 comm=$2 pid
  [[ -r "$file" ]] || return 1
  pid=$(<"$file")                   # libvirt's daemons write the pid without a newline
  pid=${pid//[[:space:]]/}
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$comm" ]] || return 1
  echo "$pid"
}
