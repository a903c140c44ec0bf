#!/usr/bin/env bash
# Boot the golden image once in the lab by hand (virsh, no Pulumi) and measure it, then remove
# everything it made. Proves image + lab + templates/domain-tcg.xsl together, the way the
# pulumi-libvirt provider wires them (NAT network, qcow2 overlay over an uploaded base volume,
# NoCloud ISO as IDE cdrom hdd, direct kernel boot, domain type qemu, default machine type).
#
#   bash scripts/lab.sh up && bash scripts/boot-smoke.sh
#
# Prints: seconds from `virsh start` to HTTP 200 from the VM, cloud-init and systemd timings read
# over SSH (key only, from inside the lab namespace), the QEMU process RSS. SMOKE_KEEP=1 keeps the
# VM and its network for poking around (remove them with the same script: SMOKE_CLEAN_ONLY=1).
set -euo pipefail

# shellcheck source=scripts/labenv.sh
source "$(dirname "${BASH_SOURCE[0]}")/labenv.sh"
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

NAME=${SMOKE_NAME:-hasmoke}
SUBNET=${SMOKE_SUBNET:-192.168.81}
VM_IP=$SUBNET.${SMOKE_HOST:-230}
SSH_USER=debian
HTTP_PATH=${SMOKE_HTTP_PATH:-/}
GW=$SUBNET.1
MAC=52:54:00:81:00:e6
MEMORY_MIB=${SMOKE_MEMORY_MIB:-512}
BOOT_TIMEOUT=${SMOKE_BOOT_TIMEOUT:-300}
IMAGE_DIR=$ROOT/.images/debian12
POOL_DIR=/var/lib/libvirt/images/$NAME
WORK=$(mktemp -d "/tmp/$NAME.XXXXXX")
SSH_KEY=$WORK/id_ed25519
# The VM's own host key, made here and pinned by every ssh below (known_hosts 0600 in the 0700 $WORK; the
# private host key and known_hosts are removed at exit, unless SMOKE_KEEP=1 keeps the VM to log in to).
HOST_KEY=$WORK/host_ed25519
KNOWN_HOSTS=$WORK/known_hosts

virsh_() { virsh -q -c "$LAB_URI" "$@"; }

cleanup_libvirt() {
  virsh_ destroy "$NAME" >/dev/null 2>&1 || true
  virsh_ undefine "$NAME" --nvram >/dev/null 2>&1 || virsh_ undefine "$NAME" >/dev/null 2>&1 || true
  virsh_ net-destroy "$NAME" >/dev/null 2>&1 || true
  virsh_ net-undefine "$NAME" >/dev/null 2>&1 || true
  local vol
  for vol in "$NAME.qcow2" "$NAME-base.qcow2" "$NAME-cidata.iso"; do
    virsh_ vol-delete --pool "$NAME" "$vol" >/dev/null 2>&1 || true
  done
  virsh_ pool-destroy "$NAME" >/dev/null 2>&1 || true
  virsh_ pool-undefine "$NAME" >/dev/null 2>&1 || true
  rm -rf "$POOL_DIR"
  rm -f "/var/log/libvirt/qemu/$NAME-serial0.log"
}

on_exit() {
  local rc=$?
  if [[ "${SMOKE_KEEP:-0}" == 1 ]]; then
    echo "smoke: kept domain, network and pool '$NAME'; key $SSH_KEY; remove with SMOKE_CLEAN_ONLY=1 $0"
  else
    [[ -s "/var/log/libvirt/qemu/$NAME-serial0.log" ]] && cp "/var/log/libvirt/qemu/$NAME-serial0.log" "$WORK/serial.log"
    cleanup_libvirt
    rm -f "$HOST_KEY" "$KNOWN_HOSTS"
    echo "smoke: cleaned up (serial log copy and key under $WORK)"
  fi
  exit "$rc"
}

if [[ "${SMOKE_CLEAN_ONLY:-0}" == 1 ]]; then
  cleanup_libvirt
  rm -rf "$WORK"
  echo "smoke: removed '$NAME'"
  exit 0
fi

require_lab_netns_exists
virsh_ version >/dev/null 2>&1 || lab_die "libvirt does not answer on $LAB_URI: run scripts/lab.sh up"
for f in disk.qcow2 vmlinuz initrd.img; do
  [[ -s "$IMAGE_DIR/$f" ]] || lab_die "$IMAGE_DIR/$f missing: run image/build.sh"
done
if virsh_ dominfo "$NAME" >/dev/null 2>&1 || virsh_ net-info "$NAME" >/dev/null 2>&1; then
  lab_die "'$NAME' already exists in libvirt (SMOKE_CLEAN_ONLY=1 $0 removes it)"
fi
trap on_exit EXIT

links_before=$(ip -br link | awk '{print $1}' | sort)

# --- network: NAT, inside the lab namespace, no DHCP (addresses come from network-config) -------
cat >"$WORK/net.xml" <<EOF
<network>
  <name>$NAME</name>
  <forward mode='nat'/>
  <bridge name='br-$NAME' stp='off' delay='0'/>
  <ip address='$GW' netmask='255.255.255.0'/>
</network>
EOF
virsh_ net-define "$WORK/net.xml" >/dev/null
virsh_ net-start "$NAME" >/dev/null

# --- storage: a pool, the golden image uploaded as base volume, an overlay, the cidata ISO -------
install -d -m 755 "$POOL_DIR"
virsh_ pool-define-as "$NAME" dir --target "$POOL_DIR" >/dev/null
virsh_ pool-start "$NAME" >/dev/null
base_bytes=$(stat -c %s "$IMAGE_DIR/disk.qcow2")
t=$SECONDS
virsh_ vol-create-as "$NAME" "$NAME-base.qcow2" "$base_bytes" --format qcow2 >/dev/null
virsh_ vol-upload --pool "$NAME" "$NAME-base.qcow2" "$IMAGE_DIR/disk.qcow2"
upload_s=$((SECONDS - t))
base_path=$(virsh_ vol-path --pool "$NAME" "$NAME-base.qcow2")
virsh_ vol-create-as "$NAME" "$NAME.qcow2" 4G --format qcow2 \
  --backing-vol "$base_path" --backing-vol-format qcow2 >/dev/null
disk_path=$(virsh_ vol-path --pool "$NAME" "$NAME.qcow2")

ssh-keygen -q -t ed25519 -N '' -C "$NAME-smoke" -f "$SSH_KEY"
ssh-keygen -q -t ed25519 -N '' -C "$NAME-smoke-host" -f "$HOST_KEY"
(umask 077 && printf '%s %s\n' "$VM_IP" "$(cut -d' ' -f1,2 "$HOST_KEY.pub")" >"$KNOWN_HOSTS")
mkdir -p "$WORK/cidata"
cat >"$WORK/cidata/meta-data" <<EOF
instance-id: $NAME-$(date +%s)
local-hostname: $NAME
EOF
# SMOKE_NODE=web01|lb02: that dev-stack node's real user-data (its addresses moved to SUBNET) instead
# of the minimal one below; log in as the stack's admin user.
if [[ -n "${SMOKE_NODE:-}" ]]; then
  "$ROOT/venv/bin/python" "$ROOT/scripts/smoke_user_data.py" "$SMOKE_NODE" "$SSH_KEY.pub" "$SUBNET" "$HOST_KEY" \
    >"$WORK/cidata/user-data" 2>"$WORK/admin-user"
  SSH_USER=$(<"$WORK/admin-user")
else
cat >"$WORK/cidata/user-data" <<EOF
#cloud-config
ssh_authorized_keys:
  - $(cat "$SSH_KEY.pub")
write_files:
  - path: /var/www/html/index.html
    content: |
      hello from $NAME
  - path: /etc/nginx/sites-enabled/$NAME
    content: |
      server {
        listen 80 default_server;
        root /var/www/html;
        index index.html;
      }
runcmd:
  - [systemctl, restart, nginx]
EOF
  "$ROOT/venv/bin/python" "$ROOT/scripts/smoke_user_data.py" --host-key "$WORK/cidata/user-data" "$HOST_KEY" \
    >"$WORK/cidata/user-data.new"
  mv "$WORK/cidata/user-data.new" "$WORK/cidata/user-data"
fi
# SMOKE_NETCFG=v2 (default) or v1: network-config version. With v2, SMOKE_GATEWAY=gateway4
# (default) or routes says how the default route is given.
if [[ "${SMOKE_NETCFG:-v2}" == v1 ]]; then
  cat >"$WORK/cidata/network-config" <<EOF
version: 1
config:
  - type: physical
    name: eth0
    mac_address: "$MAC"
    subnets:
      - type: static
        address: $VM_IP/24
        gateway: $GW
        dns_nameservers: [$GW]
EOF
else
  if [[ "${SMOKE_GATEWAY:-gateway4}" == routes ]]; then
    gateway_yaml=$(printf '    routes:\n      - to: 0.0.0.0/0\n        via: %s' "$GW")
  else
    gateway_yaml="    gateway4: $GW"
  fi
  cat >"$WORK/cidata/network-config" <<EOF
version: 2
ethernets:
  eth0:
    addresses: [$VM_IP/24]
$gateway_yaml
    nameservers:
      addresses: [$GW]
EOF
fi
# SMOKE_PACKAGES="nginx curl": a cloud-config `packages:` list (makes cloud-init run apt-get).
if [[ -n "${SMOKE_PACKAGES:-}" ]]; then
  read -r -a pkgs <<<"$SMOKE_PACKAGES"
  (IFS=,; printf 'packages: [%s]\n' "${pkgs[*]}") >>"$WORK/cidata/user-data"
fi
genisoimage -quiet -output "$POOL_DIR/$NAME-cidata.iso" -volid cidata -joliet -rock \
  "$WORK/cidata/user-data" "$WORK/cidata/meta-data" "$WORK/cidata/network-config"
virsh_ pool-refresh "$NAME" >/dev/null

# --- domain: what the provider generates, then templates/domain-tcg.xsl ------------------------
cat >"$WORK/domain.xml" <<EOF
<domain type="qemu">
  <name>$NAME</name>
  <memory unit="MiB">$MEMORY_MIB</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch="x86_64">hvm</type>
    <kernel>$IMAGE_DIR/vmlinuz</kernel>
    <initrd>$IMAGE_DIR/initrd.img</initrd>
    <cmdline>console=ttyS0 net.ifnames=0 root=/dev/vda rw</cmdline>
  </os>
  <features><pae/><acpi/><apic/></features>
  <devices>
    <disk type="file" device="disk">
      <driver name="qemu" type="qcow2"/>
      <source file="$disk_path"/>
      <target dev="vda" bus="virtio"/>
    </disk>
    <disk type="file" device="cdrom">
      <driver name="qemu" type="raw"/>
      <source file="$POOL_DIR/$NAME-cidata.iso"/>
      <target dev="hdd" bus="ide"/>
      <readonly/>
    </disk>
    <interface type="network">
      <mac address="$MAC"/>
      <source network="$NAME"/>
      <model type="virtio"/>
    </interface>
    <serial type="pty"><target port="0"/></serial>
    <console type="pty"><target type="serial" port="0"/></console>
    <channel type="unix"><target type="virtio" name="org.qemu.guest_agent.0"/></channel>
    <graphics type="spice" autoport="yes"/>
    <rng model="virtio"><backend model="random">/dev/urandom</backend></rng>
  </devices>
</domain>
EOF
# SMOKE_XSLT=0 skips the transform (to compare QEMU's RSS without the tb-cache cap).
if [[ "${SMOKE_XSLT:-1}" == 1 ]]; then
  xsltproc "$ROOT/templates/domain-tcg.xsl" "$WORK/domain.xml" >"$WORK/domain-tcg.xml"
  virsh_ define "$WORK/domain-tcg.xml" >/dev/null
  virsh_ dumpxml "$NAME" | grep -q "<tb-cache unit='KiB'>131072</tb-cache>" ||
    lab_die "tb-cache not in the defined domain"
  tb_note="tb-cache 128 MiB"
else
  sed 's#<serial type="pty"><target port="0"/></serial>#<serial type="pty"><log file="/var/log/libvirt/qemu/'"$NAME"'-serial0.log"/><target port="0"/></serial>#' \
    "$WORK/domain.xml" >"$WORK/domain-plain.xml"
  virsh_ define "$WORK/domain-plain.xml" >/dev/null
  tb_note="no tb-cache cap"
fi

# --- boot and measure --------------------------------------------------------------------------
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }
t0=$EPOCHREALTIME
virsh_ start "$NAME" >/dev/null
code=000
while :; do
  code=$(lab_exec curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://$VM_IP$HTTP_PATH" || true)
  [[ "$code" == 200 ]] && break
  elapsed=$(since "$t0")
  if ((${elapsed%.*} > BOOT_TIMEOUT)); then
    tail -n 40 "/var/log/libvirt/qemu/$NAME-serial0.log" >&2 || true
    lab_die "no HTTP 200 from $VM_IP after $BOOT_TIMEOUT s"
  fi
  sleep 0.5
done
boot_s=$(since "$t0")
body=$(lab_exec curl -s --max-time 2 "http://$VM_IP$HTTP_PATH")

qemu_pid=$(cat "/run/libvirt/qemu/$NAME.pid")
rss_kib=$(ps -o rss= -p "$qemu_pid" | tr -d ' ')

pin_opts=(-o StrictHostKeyChecking=yes -o "UserKnownHostsFile=$KNOWN_HOSTS" -o GlobalKnownHostsFile=/dev/null
  -o "HostKeyAlias=$VM_IP" -o HostKeyAlgorithms=ssh-ed25519 -o CheckHostIP=no -o UpdateHostKeys=no)
ssh_opts=(-i "$SSH_KEY" -o BatchMode=yes -o IdentitiesOnly=yes "${pin_opts[@]}" -o LogLevel=ERROR -o ConnectTimeout=10)
# sshd starts after cloud-init made the host keys, often a little after nginx answers.
until lab_exec ssh "${ssh_opts[@]}" "$SSH_USER@$VM_IP" true 2>/dev/null; do
  (($(since "$t0" | cut -d. -f1) < BOOT_TIMEOUT)) || lab_die "no ssh to $VM_IP after $BOOT_TIMEOUT s"
  sleep 1
done
ssh_s=$(since "$t0")
lab_exec ssh "${ssh_opts[@]}" "$SSH_USER@$VM_IP" 'cloud-init status --wait >/dev/null' || true
cloudinit_s=$(since "$t0")
guest_report=$(lab_exec ssh "${ssh_opts[@]}" "$SSH_USER@$VM_IP" '
  set -x
  cloud-init status --long
  sudo cloud-init schema --system 2>&1 | tail -n 5
  systemd-analyze
  systemd-analyze blame --no-pager | head -n 12
  sudo grep -iE "schema|WARNING" /var/log/cloud-init.log | head -n 8
  sudo cloud-init analyze show | grep -E "^Finished stage|Total Time|ran [0-9]+ mod"
  ip -br addr; ip route
  cat /etc/network/interfaces.d/50-cloud-init
  systemctl is-active nginx ssh qemu-guest-agent
  systemctl status keepalived --no-pager | head -n 4
  systemctl --failed --no-pager
  sudo cloud-init analyze blame | head -n 8
  ls /etc/nginx/sites-enabled; uname -r; free -m' 2>&1 || true)
# SMOKE_REPORT_DIR: keep the full profiles (cloud-init analyze blame/show, systemd-analyze blame,
# critical chain, the serial console) for before/after comparisons.
if [[ -n "${SMOKE_REPORT_DIR:-}" ]]; then
  mkdir -p "$SMOKE_REPORT_DIR"
  lab_exec ssh "${ssh_opts[@]}" "$SSH_USER@$VM_IP" '
    echo "== systemd-analyze"; systemd-analyze
    echo "== systemd-analyze blame"; systemd-analyze blame --no-pager
    echo "== systemd-analyze critical-chain"; systemd-analyze critical-chain --no-pager
    echo "== cloud-init analyze show"; sudo cloud-init analyze show
    echo "== cloud-init analyze blame"; sudo cloud-init analyze blame' >"$SMOKE_REPORT_DIR/profile.txt" 2>&1 || true
  cp "/var/log/libvirt/qemu/$NAME-serial0.log" "$SMOKE_REPORT_DIR/serial.log" 2>/dev/null || true
fi
# Key only: password authentication must be refused by the server.
if lab_exec ssh -o BatchMode=yes -o PreferredAuthentications=password -o PubkeyAuthentication=no \
  "${pin_opts[@]}" -o ConnectTimeout=10 \
  "$SSH_USER@$VM_IP" true 2>"$WORK/pw.err"; then
  pw_result="ACCEPTED (unexpected)"
else
  pw_result="refused: $(tr -d '\r' <"$WORK/pw.err" | tail -n 1)"
fi
rss_after_ssh=$(ps -o rss= -p "$qemu_pid" | tr -d ' ')

links_after=$(ip -br link | awk '{print $1}' | sort)
echo "=== guest (over ssh from netns $LAB_NETNS)"
echo "$guest_report"
echo "=== lab namespace links (ip -n $LAB_NETNS -br link)"
ip -n "$LAB_NETNS" -br link
echo "=== root namespace links added during the run: $(comm -13 <(echo "$links_before") <(echo "$links_after") | tr '\n' ' ')<none if empty>"
echo "=== results"
cat <<EOF
base volume upload:        ${upload_s} s ($base_bytes bytes)
start -> HTTP 200:         ${boot_s} s (body: $body)
start -> ssh login:        ${ssh_s} s
start -> cloud-init done:  ${cloudinit_s} s
qemu RSS at HTTP 200:      $((rss_kib / 1024)) MiB (guest ${MEMORY_MIB} MiB, $tb_note)
qemu RSS after ssh checks: $((rss_after_ssh / 1024)) MiB
password login:            $pw_result
EOF
