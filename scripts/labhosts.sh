# shellcheck shell=bash
# The two-hypervisor lab (make lab HOSTS=2), sourced by scripts/lab.sh. Each hypervisor hvN is:
#
#   network namespace $LAB_NETNS-hvN   lo, bridge br0 (the VMs' taps), uplink up0 -> the switch
#   a mount namespace of its own       (libvirtd's): /etc/libvirt, /var/lib/libvirt, /var/cache/libvirt,
#                                      /var/log/libvirt from $HV_STATE/hvN (kept, like a real host's
#                                      disk), /run/libvirt from $LAB_RUN_DIR/hvN/run (fresh at each start)
#   virtlogd + libvirtd + sshd         in both namespaces; sshd on 127.0.0.1:22 of hvN, root by key only
#   qemu+ssh://root@127.0.0.1:$((HV_PORT_BASE+N))/system?keyfile=$HV_STATE/ssh/id_ed25519&no_verify=1
#                                      from the host and from $LAB_NETNS: a socat on that loopback port in
#                                      each, which enters hvN's namespace for every connection
#
# The switch namespace $LAB_NETNS-sw holds bridge sw0: every hypervisor's up0 and $LAB_NETNS's own
# port (seg0, $HV_SEGMENT_ADDR) are on it, one L2 segment for VRRP, ARP and the VIP. Nothing in these
# namespaces has a route out. $LAB_RUN_DIR/hosts/hvN names hvN's namespace (the verifier's proof that
# a namespace is a lab hypervisor before its host-lost drill signals qemu processes there).

HV_STATE=${HACLUSTER_LAB_STATE_DIR:-/var/lib/hacluster-lab}
HV_PORT_BASE=${HACLUSTER_LAB_SSH_PORT_BASE:-2220}
HV_SEGMENT_ADDR=${HACLUSTER_LAB_SEGMENT_ADDR:-192.168.85.1/24}
HV_SWITCH=${LAB_NETNS}-sw
HV_KEY=$HV_STATE/ssh/id_ed25519
# The host directories a hypervisor has its own copy of (bind-mounted in its mount namespace).
HV_DIRS=(/etc/libvirt /var/lib/libvirt /var/cache/libvirt /var/log/libvirt)

hv_netns() { echo "$LAB_NETNS-$1"; }
hv_port() { echo $((HV_PORT_BASE + ${1#hv})); }
hv_uri() { echo "qemu+ssh://root@127.0.0.1:$(hv_port "$1")/system?keyfile=$HV_KEY&no_verify=1"; }
hv_names() { local i; for ((i = 1; i <= LAB_HOSTS; i++)); do echo "hv$i"; done; }
# The hypervisors that are up (or half up): their run directories.
hv_running() { local d; for d in "$LAB_RUN_DIR"/hv[0-9]*; do [[ -d "$d" ]] && basename "$d"; done; return 0; }

hv_validate() {
  [[ "$LAB_HOSTS" =~ ^[1-4]$ ]] || lab_die "HOSTS (HACLUSTER_LAB_HOSTS) must be 1, 2, 3 or 4 (got '$LAB_HOSTS')"
  [[ "$HV_PORT_BASE" =~ ^[1-9][0-9]{2,4}$ ]] && ((HV_PORT_BASE + 4 <= 65535)) ||
    lab_die "HACLUSTER_LAB_SSH_PORT_BASE must be a port number 100..65531 (got '$HV_PORT_BASE')"
  [[ "$HV_SEGMENT_ADDR" =~ ^([0-9]{1,3}\.){3}[0-9]{1,3}/([89]|[12][0-9]|30)$ ]] ||
    lab_die "HACLUSTER_LAB_SEGMENT_ADDR must be an IPv4 address with prefix, like 192.168.85.1/24 (got '$HV_SEGMENT_ADDR')"
  ((LAB_HOSTS == 1 || ${#LAB_NETNS} <= 20)) || lab_die "HACLUSTER_NETNS '$LAB_NETNS' is too long for the hypervisor namespaces (at most 20)"
}

hv_keys() {
  install -d -m 700 "$HV_STATE" "$HV_STATE/ssh"
  [[ -s "$HV_KEY" ]] || ssh-keygen -q -t ed25519 -N '' -C hacluster-lab -f "$HV_KEY"
  if [[ ! -s "$HV_STATE/ssh/host_ed25519" ]]; then
    ssh-keygen -q -t ed25519 -N '' -C hacluster-lab-host -f "$HV_STATE/ssh/host_ed25519"
    # A new host key: forget what root's ssh recorded for the forwarder ports (no_verify=1 would still
    # connect, under a "REMOTE HOST IDENTIFICATION HAS CHANGED" warning).
    local i
    for ((i = 1; i <= 4; i++)); do ssh-keygen -q -R "[127.0.0.1]:$((HV_PORT_BASE + i))" >/dev/null 2>&1 || true; done
  fi
  install -m 600 "$HV_KEY.pub" "$HV_STATE/ssh/authorized_keys"
}

# The switch namespace, its bridge, and the lab namespace's port on the segment.
hv_switch() {
  if [[ ! -e "/run/netns/$HV_SWITCH" ]]; then
    ip netns add "$HV_SWITCH"
    lab_log "created switch namespace $HV_SWITCH"
  fi
  ip -n "$HV_SWITCH" link show sw0 >/dev/null 2>&1 || ip -n "$HV_SWITCH" link add sw0 type bridge stp_state 0
  ip -n "$HV_SWITCH" link set sw0 up
  if ! ip -n "$LAB_NETNS" link show seg0 >/dev/null 2>&1; then
    ip -n "$LAB_NETNS" link add seg0 type veth peer name lab netns "$HV_SWITCH"
    ip -n "$HV_SWITCH" link set lab master sw0 up
    ip -n "$LAB_NETNS" addr add "$HV_SEGMENT_ADDR" dev seg0
  fi
  ip -n "$LAB_NETNS" link set seg0 up
}

# A hypervisor's state directories: the host's directory skeleton (owners and modes) without its
# contents, except libvirt's *.conf files and nwfilter rules. Made once; kept across restarts.
hv_state_dirs() {
  local name=$1 d base sub
  for d in "${HV_DIRS[@]}"; do
    base=$HV_STATE/$name$d
    [[ -d "$base" ]] && continue
    install -d -m 755 "$base"
    while read -r sub; do
      install -d -o "$(stat -c %u "$d/$sub")" -g "$(stat -c %g "$d/$sub")" -m "$(stat -c %a "$d/$sub")" "$base/$sub"
    done < <(cd "$d" && find . -mindepth 1 -maxdepth 2 -type d ! -name 'domain-*' ! -path './hacluster*' \
               ! -path './images/*' ! -path './qemu/*/*' | sed 's|^\./||')
  done
  cp -a /etc/libvirt/*.conf "$HV_STATE/$name/etc/libvirt/"
  [[ -d /etc/libvirt/nwfilter ]] && cp -a /etc/libvirt/nwfilter "$HV_STATE/$name/etc/libvirt/"
  # No default NAT network on a hypervisor: its VMs use the bridge.
  rm -rf "$HV_STATE/$name/etc/libvirt/qemu/networks"
  return 0
}

hv_up() {
  local name=$1 kvm_mode=$2 ns run pid
  ns=$(hv_netns "$name")
  run=$LAB_RUN_DIR/$name
  pid=$(pidfile_pid "$run/libvirtd.pid" libvirtd || true)
  if [[ -n "$pid" ]]; then
    lab_log "already running: $name (libvirtd pid $pid in netns $ns)"
  else
    install -d -m 755 "$run" "$LAB_RUN_DIR/hosts"
    if [[ ! -e "/run/netns/$ns" ]]; then
      ip netns add "$ns"
      echo "$ns" >"$run/netns-created"
    fi
    ip -n "$ns" link set lo up
    ip -n "$ns" link show br0 >/dev/null 2>&1 || ip -n "$ns" link add br0 type bridge stp_state 0
    ip -n "$ns" link set br0 up
    if ! ip -n "$ns" link show up0 >/dev/null 2>&1; then
      ip -n "$ns" link add up0 type veth peer name "$name" netns "$HV_SWITCH"
      ip -n "$ns" link set up0 master br0 up
      ip -n "$HV_SWITCH" link set "$name" master sw0 up
    fi
    hv_state_dirs "$name"
    rm -rf "$run/run" && install -d -m 755 "$run/run"
    rm -f "$run/libvirtd.pid" "$run/virtlogd.pid"
    ip netns exec "$ns" env LIBVIRT_LOG_OUTPUTS="3:file:$run/libvirtd.log" \
      bash "$LAB_SCRIPT" _exec-hv "$name" "$kvm_mode" "$(stat -L -c %i /proc/self/ns/mnt)"
    wait_pidfile "$run/libvirtd.pid" libvirtd || lab_die "$name: libvirtd did not start (see $run/libvirtd.log)"
    pid=$(<"$run/libvirtd.pid")
    lab_log "started $name: libvirtd pid $pid in netns $ns and a mount namespace of its own"
  fi
  hv_sshd "$name" "$pid"
  hv_forward "$name" host
  hv_forward "$name" lab
  echo "$ns" >"$LAB_RUN_DIR/hosts/$name"
}

# Internal, inside hvN's network namespace (and the mount namespace `ip netns exec` made): give
# libvirt its own directories, then start virtlogd and become libvirtd.
cmd_exec_hv() {
  local name=$1 kvm_mode=$2 host_mnt_ns=$3 run=$LAB_RUN_DIR/$1 d
  [[ "$(_netns_id /proc/self/ns/net)" == "$(_netns_id "/run/netns/$(hv_netns "$name")")" ]] ||
    lab_die "internal: _exec-hv must run inside netns $(hv_netns "$name")"
  [[ "$(stat -L -c %i /proc/self/ns/mnt)" != "$host_mnt_ns" ]] ||
    lab_die "internal: refusing to bind-mount over the host's libvirt directories"
  for d in "${HV_DIRS[@]}"; do mount --bind "$HV_STATE/$name$d" "$d"; done
  mount --bind "$run/run" /run/libvirt
  hide_kvm "$kvm_mode" "$host_mnt_ns"
  mount_cgroups
  env LIBVIRT_LOG_OUTPUTS="3:file:$run/virtlogd.log" virtlogd --daemon --pid-file "$run/virtlogd.pid"
  wait_pidfile "$run/virtlogd.pid" virtlogd || lab_die "$name: virtlogd did not start (see $run/virtlogd.log)"
  exec libvirtd --daemon --pid-file "$run/libvirtd.pid"
}

# sshd in libvirtd's network and mount namespaces: `nc -U /run/libvirt/libvirt-sock` there reaches it.
hv_sshd() {
  local name=$1 libvirtd_pid=$2 run=$LAB_RUN_DIR/$1
  pidfile_pid "$run/sshd.pid" sshd >/dev/null && return 0
  install -d -m 755 /run/sshd
  cat >"$run/sshd_config" <<EOF
# hacluster lab hypervisor $name (scripts/labhosts.sh): loopback of its namespace only, root by key only
ListenAddress 127.0.0.1:22
HostKey $HV_STATE/ssh/host_ed25519
PidFile $run/sshd.pid
AuthorizedKeysFile $HV_STATE/ssh/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
X11Forwarding no
AllowTcpForwarding no
AllowAgentForwarding no
PrintMotd no
LogLevel ERROR
EOF
  rm -f "$run/sshd.pid"
  nsenter --target "$libvirtd_pid" --mount --net /usr/sbin/sshd -f "$run/sshd_config" -E "$run/sshd.log"
  wait_pidfile "$run/sshd.pid" sshd || lab_die "$name: sshd did not start (see $run/sshd.log)"
  lab_log "started $name: sshd pid $(<"$run/sshd.pid") on 127.0.0.1:22 of $(hv_netns "$name")"
}

# The loopback forwarder, 127.0.0.1:PORT -> hvN's sshd, in the host's namespace (`host`) or in the lab
# namespace (`lab`, for the verifier and the drills, which run there).
hv_forward() {
  local name=$1 where=$2 run=$LAB_RUN_DIR/$1 port pidf
  port=$(hv_port "$name")
  pidf=$run/forward-$where.pid
  pidfile_pid "$pidf" socat >/dev/null && return 0
  local pre=()
  [[ "$where" == lab ]] && pre=(ip netns exec "$LAB_NETNS")
  setsid "${pre[@]}" socat "TCP-LISTEN:$port,bind=127.0.0.1,reuseaddr,fork" \
    "EXEC:bash $LAB_SCRIPT _pipe $name" </dev/null >>"$run/forward-$where.log" 2>&1 &
  echo $! >"$pidf"
  wait_pidfile "$pidf" socat || lab_die "$name: the $where forwarder on 127.0.0.1:$port did not start (see $run/forward-$where.log)"
}

# Internal, per forwarded connection: stdin/stdout to hvN's sshd.
cmd_pipe() {
  local ns
  ns=$(hv_netns "$1")
  [[ -e "/run/netns/$ns" ]] || lab_die "no hypervisor namespace $ns"
  exec nsenter --net="/run/netns/$ns" socat STDIO TCP:127.0.0.1:22
}

hv_wait() { wait_libvirt "$(hv_uri "$1")" "$LAB_RUN_DIR/$1" "hypervisor $1, netns $(hv_netns "$1")"; }

cmd_hosts_up() {
  hv_validate
  ((LAB_HOSTS > 1)) || return 0
  local tool kvm_mode=keep-kvm name
  for tool in sshd:/usr/sbin/sshd nc ssh-keygen nsenter socat setsid; do
    [[ -x "${tool#*:}" ]] || command -v "${tool%%:*}" >/dev/null || lab_die "${tool%%:*} not found (run: make deps)"
  done
  kvm_visible || kvm_mode=hide-kvm
  hv_keys
  hv_switch
  for name in $(hv_names); do hv_up "$name" "$kvm_mode"; done
  for name in $(hv_names); do hv_wait "$name"; done
}

# Stop hvN: refuse while it runs domains (unless forced: then power them off), then every process the
# lab started for it, its namespace and its marker. Its state directory stays (a host's disk).
hv_down() {
  local name=$1 force=$2 run=$LAB_RUN_DIR/$1 ns uri pid running f
  ns=$(hv_netns "$name")
  uri=$(hv_uri "$name")
  if pidfile_pid "$run/libvirtd.pid" libvirtd >/dev/null && virsh -q -c "$uri" version >/dev/null 2>&1; then
    running=$(virsh -q -c "$uri" list --state-running --name | sed '/^$/d')
    if [[ -n "$running" ]] && ((!force)); then
      lab_log "error: $name is in use (running domains: $(echo "$running" | tr '\n' ' ')); nothing was stopped."
      lab_log "  Remove them with 'make destroy STACK=...' first, or run 'lab.sh down --force'."
      return 1
    fi
    while read -r f; do
      [[ -n "$f" ]] && virsh -q -c "$uri" destroy "$f" >/dev/null && lab_log "$name: powered off domain $f"
    done <<<"$running"
  fi
  rm -f "$LAB_RUN_DIR/hosts/$name"
  for f in forward-host forward-lab sshd libvirtd virtlogd; do
    pid=$(pidfile_pid "$run/$f.pid" "$([[ $f == forward-* ]] && echo socat || echo "$f")" || true)
    [[ -n "$pid" ]] && stop_pid "$pid" "$name $f"
    rm -f "$run/$f.pid"
  done
  if [[ -e "$run/netns-created" && -e "/run/netns/$ns" ]]; then
    local pids
    pids=$(ip netns pids "$ns" | tr '\n' ' ')
    [[ -z "$pids" ]] || { lab_log "keeping netns $ns: processes still inside it (pids ${pids% })"; return 1; }
    ip netns delete "$ns"
    lab_log "deleted hypervisor namespace $ns"
  fi
  rm -rf "$run"
}

cmd_hosts_down() {
  local force=$1 name rc=0
  for name in $(hv_running); do hv_down "$name" "$force" || rc=1; done
  ((rc == 0)) || exit 1
  if [[ -e "/run/netns/$HV_SWITCH" ]]; then
    ip -n "$LAB_NETNS" link del seg0 2>/dev/null || true
    ip netns delete "$HV_SWITCH"
    lab_log "deleted switch namespace $HV_SWITCH"
  fi
  rm -rf "$LAB_RUN_DIR/hosts"
}

hv_status() {
  local name run
  for name in $(hv_running); do
    run=$LAB_RUN_DIR/$name
    echo "$name:      netns $(hv_netns "$name"), libvirtd $(pidfile_pid "$run/libvirtd.pid" libvirtd || echo -), sshd $(pidfile_pid "$run/sshd.pid" sshd || echo -), $(hv_uri "$name")"
    virsh -q -c "$(hv_uri "$name")" list --all 2>/dev/null | sed 's/^/    /'
  done
}
