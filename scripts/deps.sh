#!/usr/bin/env bash
# Install the Debian packages this project needs, only when some are missing.
#
#   bash scripts/deps.sh          # no-op (well under a second) when everything is present
#   bash scripts/deps.sh --list   # print the package list and exit
#
# Package postinst scripts must not start daemons on the deploy host (libvirtd, nginx and
# keepalived only ever run inside a lab network namespace), so while apt-get runs a
# /usr/sbin/policy-rc.d that answers 101 ("action forbidden") is put in place when none exists.
set -euo pipefail

PACKAGES=(
  # virtualisation: qemu under libvirt, TCG is enough
  qemu-system-x86 qemu-utils
  libvirt-daemon-system libvirt-clients libvirt-daemon-driver-qemu
  dnsmasq-base iptables nftables
  # CloudInitDisk shells out to mkisofs; the domain xml.xslt hook needs xsltproc
  genisoimage xsltproc
  # golden image: debootstrap needs wget and the archive keyring
  debootstrap wget debian-archive-keyring e2fsprogs
  # real nginx + keepalived for the integration tier (only ever started in a namespace)
  nginx keepalived
  # the nodes' sudoers file is checked by the real visudo and sudo in the unit tier (tests/unit/test_sudoers.py)
  sudo
  # lab plumbing, verifier, benchmarks
  iproute2 procps socat curl openssh-client wrk
  # the two-hypervisor lab (make lab HOSTS=2): an sshd inside each hypervisor namespace (never started
  # as a service here), nc -U for qemu+ssh
  openssh-server netcat-openbsd
  # shared Pulumi state for a team (scripts/pg.sh, the PostgreSQL backend e2e test); never started here
  postgresql
  # the Makefile itself and its virtualenv
  make python3 python3-venv ca-certificates
)

if [[ "${1:-}" == "--list" ]]; then
  printf '%s\n' "${PACKAGES[@]}"
  exit 0
fi

# One dpkg-query for all packages; packages dpkg has never heard of print nothing here.
declare -A installed=()
while read -r name status; do
  [[ "$status" == "ii" ]] && installed["$name"]=1
done < <(dpkg-query -W -f='${Package} ${db:Status-Abbrev}\n' "${PACKAGES[@]}" 2>/dev/null || true)

missing=()
for pkg in "${PACKAGES[@]}"; do
  [[ -n "${installed[$pkg]:-}" ]] || missing+=("$pkg")
done

if ((${#missing[@]} == 0)); then
  exit 0
fi

echo "deps: installing missing Debian packages: ${missing[*]}"

SUDO=()
if ((EUID != 0)); then
  command -v sudo >/dev/null || { echo "deps: need root (or sudo) to install packages" >&2; exit 1; }
  SUDO=(sudo)
fi

POLICY=/usr/sbin/policy-rc.d
created_policy=0
cleanup() {
  if ((created_policy)); then
    "${SUDO[@]}" rm -f "$POLICY"
  fi
}
trap cleanup EXIT
if [[ ! -e "$POLICY" ]]; then
  printf '#!/bin/sh\n# created by hacluster scripts/deps.sh for the duration of apt-get\nexit 101\n' |
    "${SUDO[@]}" tee "$POLICY" >/dev/null
  "${SUDO[@]}" chmod 755 "$POLICY"
  created_policy=1
fi

export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
  -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${missing[@]}"
echo "deps: done"
