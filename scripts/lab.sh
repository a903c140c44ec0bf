#!/usr/bin/env bash
# The project-managed libvirt lab: virtlogd + libvirtd running inside network namespace
# $HACLUSTER_NETNS (default halab), so every bridge, tap, dnsmasq and VM address exists only there.
# The host talks to libvirtd over its unix socket (virsh -c qemu:///system, the Pulumi provider).
#
#   bash scripts/lab.sh up             # make lab: create the namespace, start the daemons (idempotent)
#   bash scripts/lab.sh status         # namespace, daemons, domains, networks, links
#   bash scripts/lab.sh down [--force] # make lab-down: stop what `up` started
#
# HACLUSTER_LAB_HOSTS=2 (make lab HOSTS=2) adds two hypervisors, hv1 and hv2, each a libvirtd in a
# network and mount namespace of its own, reached over qemu+ssh (see scripts/labhosts.sh).
#
# Pid files, logs and markers: $HACLUSTER_LAB_RUN_DIR (default /run/hacluster-lab).
#
# HACLUSTER_LAB_KVM=auto|on|off (default auto): with off, and with auto when /dev/kvm is missing or
# is a PVM device (kvm_pvm, which cannot boot a stock guest kernel), libvirtd gets no /dev/kvm in
# its own mount namespace, so it reports TCG only (no 'kvm' domain type in
# `virsh capabilities`) and keeps its QEMU capability cache valid. Without that, libvirt sees
# KVM in the probe but not in its access check, throws the cache away and re-probes QEMU on every
# call (4-8 s for each `virsh version`, define or start).
set -euo pipefail

# shellcheck source=scripts/labenv.sh
source "$(dirname "${BASH_SOURCE[0]}")/labenv.sh"
LAB_SCRIPT=$(readlink -f "${BASH_SOURCE[0]}")
LAB_HOSTS=${HACLUSTER_LAB_HOSTS:-1}
# shellcheck source=scripts/labhosts.sh
source "$(dirname "${BASH_SOURCE[0]}")/labhosts.sh"

LIBVIRTD_PID=$LAB_RUN_DIR/libvirtd.pid
VIRTLOGD_PID=$LAB_RUN_DIR/virtlogd.pid
NETNS_MARK=$LAB_RUN_DIR/netns-created
CONNECT_TIMEOUT=${HACLUSTER_LAB_CONNECT_TIMEOUT:-120}
STOP_TIMEOUT=${HACLUSTER_LAB_STOP_TIMEOUT:-20}
IMAGES_DIR=/var/lib/libvirt/images
LAB_KVM=${HACLUSTER_LAB_KVM:-auto}

usage() {
  sed -n '2,8p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
  exit "${1:-0}"
}

virsh_() { virsh -q -c "$LAB_URI" "$@"; }

libvirt_answers() { virsh_ version >/dev/null 2>&1; }

# PIDs of daemons with this name that the lab did not start (pgrep sees every namespace): not in
# any of the lab's pid files (its own, its hypervisors').
foreign_pids() {
  local name=$1 ours=${2:-} pid f mine=" ${2:-} "
  for f in "$LAB_RUN_DIR/$name.pid" "$LAB_RUN_DIR"/hv*/"$name.pid"; do
    mine+="$(pidfile_pid "$f" "$name" || true) "
  done
  for pid in $(pgrep -x "$name" || true); do
    [[ "$mine" == *" $pid "* ]] || echo "$pid"
  done
}

refuse_foreign_libvirtd() {
  local ours=$1 pids name
  for name in libvirtd virtqemud; do
    pids=$(foreign_pids "$name" "$ours" | tr '\n' ' ')
    [[ -z "$pids" ]] && continue
    cat >&2 <<EOF
lab: error: a $name that this lab did not start is already running (pid ${pids% }).
  It owns the qemu:///system socket, so a second, sandboxed libvirtd cannot start, and the
  networks it creates put their bridges, NAT rules and dnsmasq on the host's network.
  Either stop it (e.g. kill ${pids%% *}, or your init system's libvirtd service) and run
  'make lab' again, or deploy against it on purpose: set the stack's libvirtUri to its URI
  and run with HACLUSTER_NETNS= (empty) so the project does not manage a lab namespace.
EOF
    exit 1
  done
}

# Wait until PID has written FILE (the daemons write it after they detach).
wait_pidfile() {
  local file=$1 comm=$2 i
  for ((i = 0; i < 100; i++)); do
    pidfile_pid "$file" "$comm" >/dev/null && return 0
    sleep 0.1
  done
  return 1
}

stop_pid() {
  local pid=$1 name=$2 i
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < STOP_TIMEOUT * 10; i++)); do
    [[ -d "/proc/$pid" ]] || { lab_log "stopped $name (pid $pid)"; return 0; }
    sleep 0.1
  done
  lab_log "$name (pid $pid) still running after ${STOP_TIMEOUT} s: SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do
    [[ -d "/proc/$pid" ]] || return 0
    sleep 0.1
  done
  lab_log "warning: $name (pid $pid) did not exit"
}

# Should libvirtd see the host's /dev/kvm? (see HACLUSTER_LAB_KVM above)
kvm_visible() {
  case "$LAB_KVM" in
    on) return 0 ;;
    off) return 1 ;;
    auto) [[ -c /dev/kvm && ! -d /sys/module/kvm_pvm ]] ;;
    *) lab_die "HACLUSTER_LAB_KVM must be auto, on or off (got '$LAB_KVM')" ;;
  esac
}

cmd_up() {
  ((EUID == 0)) || lab_die "the lab needs root (network namespaces, a privileged libvirtd)"
  [[ -n "$LAB_NETNS" ]] ||
    lab_die "HACLUSTER_NETNS is empty: the lab is disabled (the stack uses an external libvirt)"
  hv_validate
  local tool
  for tool in ip libvirtd virtlogd virsh pgrep; do
    command -v "$tool" >/dev/null || lab_die "$tool not found (run: make deps)"
  done
  install -d -m 755 "$LAB_RUN_DIR"

  local libvirtd_pid virtlogd_pid
  libvirtd_pid=$(pidfile_pid "$LIBVIRTD_PID" libvirtd || true)
  refuse_foreign_libvirtd "$libvirtd_pid"

  if [[ -n "$libvirtd_pid" ]]; then
    pid_in_lab_netns "$libvirtd_pid" ||
      lab_die "libvirtd pid $libvirtd_pid (from $LIBVIRTD_PID) is not inside netns '$LAB_NETNS'; run 'lab.sh down' first"
    lab_log "already running: libvirtd pid $libvirtd_pid in netns $LAB_NETNS"
    wait_connect
    cmd_hosts_up
    return 0
  fi

  # The namespace: only lo, no uplink. libvirt's NAT networks give the VMs a gateway inside it.
  if ! lab_netns_exists; then
    ip netns add "$LAB_NETNS"
    echo "$LAB_NETNS" >"$NETNS_MARK"
    lab_log "created network namespace $LAB_NETNS"
  elif [[ ! -e "$NETNS_MARK" ]]; then
    lab_log "using existing network namespace $LAB_NETNS (not created by the lab; down keeps it)"
  fi
  ip -n "$LAB_NETNS" link set lo up

  virtlogd_pid=$(pidfile_pid "$VIRTLOGD_PID" virtlogd || true)
  if [[ -z "$virtlogd_pid" ]]; then
    local others
    others=$(foreign_pids virtlogd | tr '\n' ' ')
    if [[ -n "$others" ]]; then
      lab_log "using the virtlogd already running (pid ${others% }); down leaves it alone"
    else
      rm -f "$VIRTLOGD_PID"
      ip netns exec "$LAB_NETNS" env LIBVIRT_LOG_OUTPUTS="3:file:$LAB_RUN_DIR/virtlogd.log" \
        virtlogd --daemon --pid-file "$VIRTLOGD_PID"
      wait_pidfile "$VIRTLOGD_PID" virtlogd || lab_die "virtlogd did not start (see $LAB_RUN_DIR/virtlogd.log)"
      lab_log "started virtlogd pid $(<"$VIRTLOGD_PID") in netns $LAB_NETNS"
    fi
  fi

  local kvm_mode=keep-kvm
  kvm_visible || kvm_mode=hide-kvm
  rm -f "$LIBVIRTD_PID"
  ip netns exec "$LAB_NETNS" env LIBVIRT_LOG_OUTPUTS="3:file:$LAB_RUN_DIR/libvirtd.log" \
    bash "${BASH_SOURCE[0]}" _exec-libvirtd "$kvm_mode" "$(stat -L -c %i /proc/self/ns/mnt)"
  wait_pidfile "$LIBVIRTD_PID" libvirtd || lab_die "libvirtd did not start (see $LAB_RUN_DIR/libvirtd.log)"
  libvirtd_pid=$(<"$LIBVIRTD_PID")
  pid_in_lab_netns "$libvirtd_pid" || lab_die "libvirtd pid $libvirtd_pid is not in netns $LAB_NETNS"
  local note=""
  [[ "$kvm_mode" == hide-kvm ]] && note=" (no /dev/kvm for it: TCG only)"
  lab_log "started libvirtd pid $libvirtd_pid in netns $LAB_NETNS$note"

  # Dynamic ownership chowns images to libvirt-qemu; qemu must be able to reach them.
  install -d -m 755 "$IMAGES_DIR"
  chmod 755 "$IMAGES_DIR"
  wait_connect
  cmd_hosts_up
}

wait_connect() { wait_libvirt "$LAB_URI" "$LAB_RUN_DIR" "VMs live in netns $LAB_NETNS"; }

# Wait until libvirtd answers on URI (its pid file and logs in RUN); NOTE ends the ready line.
wait_libvirt() {
  local uri=$1 run=$2 note=$3 start=$SECONDS
  until virsh -q -c "$uri" version >/dev/null 2>"$run/connect.err"; do
    ((SECONDS - start < CONNECT_TIMEOUT)) ||
      lab_die "libvirtd does not answer on $uri after ${CONNECT_TIMEOUT} s ($(tail -n1 "$run/connect.err"); see $run/libvirtd.log)"
    sleep 1
  done
  lab_log "ready: $uri answers ($((SECONDS - start)) s); $note"
}

# Internal: runs under `ip netns exec` (its own mount namespace, a slave of the host's) and
# becomes libvirtd. With hide-kvm, /dev is replaced, in this mount namespace only, by a tmpfs
# copy of the host's /dev without kvm, with its submounts (/dev/pts, /dev/shm, ...) bound back in
# once each. Simpler tricks fail: a bind mount over /dev/kvm breaks libvirt's per-domain /dev
# ("Unable to move ... mount to /dev/kvm"), and a tmpfs stacked over the old /dev leaves the old
# submounts in the mount table, which libvirt then tries to move twice.
cmd_exec_libvirtd() {
  in_lab_netns || lab_die "internal: _exec-libvirtd must run inside netns $LAB_NETNS"
  hide_kvm "${1:-}" "${2:-}"
  mount_cgroups
  exec libvirtd --daemon --pid-file "$LIBVIRTD_PID"
}

# With MODE hide-kvm: /dev without kvm, in this mount namespace only (not HOST_MNT_NS, the caller's).
hide_kvm() {
  local mode=$1 host_mnt_ns=$2
  if [[ "$mode" == hide-kvm && -e /dev/kvm ]]; then
    # (/proc/1/ns/* is not readable here: the caller passes its own mount namespace.)
    [[ -n "$host_mnt_ns" && "$(stat -L -c %i /proc/self/ns/mnt)" != "$host_mnt_ns" ]] ||
      lab_die "internal: refusing to replace /dev in the caller's mount namespace"
    local stage m
    stage=$(mktemp -d "$LAB_RUN_DIR/dev.XXXXXX")
    mount -t tmpfs -o mode=755,nosuid,size=4m hacluster-lab-dev "$stage"
    cp -a --one-file-system /dev/. "$stage/"
    rm -f "$stage/kvm"
    while read -r m; do
      mkdir -p "$stage${m#/dev}"
      mount --bind "$m" "$stage${m#/dev}"
    done < <(awk '$2 ~ "^/dev/" { print $2 }' /proc/self/mounts | sort -u)
    umount -l /dev                  # only in this namespace: it is a slave, nothing propagates back
    mount --move "$stage" /dev
    rmdir "$stage" 2>/dev/null || true
  fi
}

# `ip netns exec` remounts /sys for the namespace, which hides the host's cgroup mounts: libvirtd then
# cannot set a domain's CPU quota (`virsh schedinfo ... vcpu_quota`, used by the starved-balancer drill).
# Mount the cpu controllers again, in this mount namespace only (cgroup v1 hosts: cpu and cpuacct, the
# rest stays as it is; cgroup v2 hosts: the unified hierarchy).
mount_cgroups() {
  [[ -e /sys/fs/cgroup/cpu/cpu.cfs_quota_us || -e /sys/fs/cgroup/cgroup.controllers ]] && return 0
  if awk '$1 == "cpu" && $2 != 0 { found = 1 } END { exit !found }' /proc/cgroups; then
    mount -t tmpfs -o mode=755,nosuid,nodev,noexec hacluster-lab-cgroup /sys/fs/cgroup || return 0
    local c
    for c in cpu cpuacct; do
      mkdir -p "/sys/fs/cgroup/$c" && mount -t cgroup -o "$c" cgroup "/sys/fs/cgroup/$c" ||
        lab_log "note: cgroup controller $c not mounted for libvirtd (CPU quota drills unavailable)"
    done
  else
    mount -t cgroup2 cgroup2 /sys/fs/cgroup ||
      lab_log "note: cgroup2 not mounted for libvirtd (CPU quota drills unavailable)"
  fi
}

cmd_down() {
  local force=0
  [[ "${1:-}" == "--force" ]] && force=1
  ((EUID == 0)) || lab_die "needs root"
  cmd_hosts_down "$force"
  local libvirtd_pid virtlogd_pid
  libvirtd_pid=$(pidfile_pid "$LIBVIRTD_PID" libvirtd || true)
  virtlogd_pid=$(pidfile_pid "$VIRTLOGD_PID" virtlogd || true)

  if [[ -n "$libvirtd_pid" ]] && libvirt_answers; then
    local running networks
    running=$(virsh_ list --state-running --name | sed '/^$/d')
    networks=$(virsh_ net-list --name | sed '/^$/d')
    if [[ -n "$running$networks" ]] && ((!force)); then
      {
        echo "lab: error: the lab is in use; nothing was stopped."
        [[ -n "$running" ]] && echo "  running domains: $(echo "$running" | tr '\n' ' ')"
        [[ -n "$networks" ]] && echo "  active networks: $(echo "$networks" | tr '\n' ' ')"
        echo "  Remove them with 'pulumi destroy' (make destroy) first, or run 'lab.sh down --force',"
        echo "  which powers the domains off and stops the networks (their definitions and volumes stay)."
      } >&2
      exit 1
    fi
    local name
    while read -r name; do
      [[ -n "$name" ]] || continue
      virsh_ destroy "$name" >/dev/null && lab_log "powered off domain $name"
    done <<<"$running"
    while read -r name; do
      [[ -n "$name" ]] || continue
      virsh_ net-destroy "$name" >/dev/null && lab_log "stopped network $name"
    done <<<"$networks"
  elif [[ -n "$libvirtd_pid" ]]; then
    lab_log "libvirtd pid $libvirtd_pid does not answer; stopping it anyway"
  fi

  if [[ -n "$libvirtd_pid" ]]; then stop_pid "$libvirtd_pid" libvirtd; else lab_log "libvirtd: not running (not started by the lab)"; fi
  rm -f "$LIBVIRTD_PID"
  if [[ -n "$virtlogd_pid" ]]; then stop_pid "$virtlogd_pid" virtlogd; fi
  rm -f "$VIRTLOGD_PID"

  if [[ -e "$NETNS_MARK" ]] && lab_netns_exists; then
    local pids
    pids=$(ip netns pids "$LAB_NETNS" | tr '\n' ' ')
    if [[ -n "$pids" ]]; then
      lab_log "keeping netns $LAB_NETNS: processes still inside it (pids ${pids% }); stop them, then run down again"
      exit 1
    fi
    ip netns delete "$LAB_NETNS"
    rm -f "$NETNS_MARK"
    lab_log "deleted network namespace $LAB_NETNS"
  elif lab_netns_exists; then
    lab_log "netns $LAB_NETNS was not created by the lab: left in place"
  fi
}

cmd_status() {
  local libvirtd_pid virtlogd_pid
  libvirtd_pid=$(pidfile_pid "$LIBVIRTD_PID" libvirtd || true)
  virtlogd_pid=$(pidfile_pid "$VIRTLOGD_PID" virtlogd || true)
  if lab_netns_exists; then
    local how="created by the lab"
    [[ -e "$NETNS_MARK" ]] || how="not created by the lab"
    echo "netns:    $LAB_NETNS ($how)"
  else
    echo "netns:    ${LAB_NETNS:-<none>} (absent)"
  fi
  echo "libvirtd: ${libvirtd_pid:-not running}${libvirtd_pid:+ ($(pid_in_lab_netns "$libvirtd_pid" && echo "in $LAB_NETNS" || echo "NOT in $LAB_NETNS"))}"
  echo "virtlogd: ${virtlogd_pid:-not started by the lab}"
  echo "run dir:  $LAB_RUN_DIR"
  local foreign
  foreign=$(foreign_pids libvirtd "$libvirtd_pid" | tr '\n' ' ')
  [[ -z "$foreign" ]] || echo "WARNING: libvirtd not started by the lab: pid ${foreign% }"
  if libvirt_answers; then
    echo "--- virsh list --all"
    virsh -c "$LAB_URI" list --all
    echo "--- virsh net-list --all"
    virsh -c "$LAB_URI" net-list --all
    hv_status
  else
    echo "libvirt:  $LAB_URI does not answer"
  fi
  if lab_netns_exists; then
    echo "--- ip -n $LAB_NETNS -br link / addr"
    ip -n "$LAB_NETNS" -br link
    ip -n "$LAB_NETNS" -br addr
  fi
}

case "${1:-}" in
  up) cmd_up ;;
  down) shift; cmd_down "$@" ;;
  status) cmd_status ;;
  _exec-libvirtd) shift; cmd_exec_libvirtd "$@" ;;
  _exec-hv) shift; cmd_exec_hv "$@" ;;
  _pipe) shift; cmd_pipe "$@" ;;
  -h | --help | help) usage 0 ;;
  *) usage 2 >&2 ;;
esac
