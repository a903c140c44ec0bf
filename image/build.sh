#!/usr/bin/env bash
# Build the golden Debian 12 image the cluster's VMs boot from, from Debian packages only.
#
#   bash image/build.sh            # or: make image
#
# Output (what the stack uses):
#   .images/debian12/disk.qcow2   ext4 on the whole disk (no partitions), root=/dev/vda
#   .images/debian12/vmlinuz      kernel for direct kernel boot
#   .images/debian12/initrd.img   its initramfs
#   .images/debian12/manifest.json
#
# Recipe: debootstrap --variant=minbase with image/packages.txt, then without mounting anything:
# image/rootfs/ copied over the tree, empty machine-id, no ssh host keys (cloud-init makes them on
# first boot), nginx's default site disabled, unused units masked, nftables enabled, SysV scripts of
# native units removed, a virtio-only initramfs, Python bytecode compiled, `mkfs.ext4 -d` into a raw file,
# `qemu-img convert` to qcow2.
#
# Cache: the recipe hash is the sha256 over every file under image/. Built artifacts live in
# ${HACLUSTER_CACHE:-$HOME/.cache/hacluster}/images/<hash>/ and are hard-linked (or copied) into
# .images/debian12; a build only happens when no artifacts exist for the current hash.
#
# Environment:
#   HACLUSTER_CACHE          cache root (default ~/.cache/hacluster)
#   HACLUSTER_DEBIAN_MIRROR  Debian mirror URL (default: the one apt uses for bookworm)
#   HACLUSTER_IMAGE_SIZE     virtual disk size (default 4G; hacluster-growfs.service grows the fs to a bigger
#                            disk at every boot)
#   HACLUSTER_IMAGE_REBUILD  1 = ignore the cache and build again
#   HACLUSTER_IMAGE_KEEP     how many recipes to keep in the cache (default 3, newest first)
set -euo pipefail
umask 022

SUITE=bookworm
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
OUT=$ROOT/.images/debian12
CACHE=${HACLUSTER_CACHE:-$HOME/.cache/hacluster}
IMAGE_SIZE=${HACLUSTER_IMAGE_SIZE:-4G}
ARTIFACTS=(disk.qcow2 vmlinuz initrd.img manifest.json)

log() { printf 'image: %s\n' "$*" >&2; }
die() { printf 'image: error: %s\n' "$*" >&2; exit 1; }

# sha256 over the relative path and content of every file of the recipe (this directory).
recipe_hash() {
  (cd "$HERE" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum) |
    sha256sum | cut -c1-16
}

# The Debian mirror apt uses for $SUITE: one-line sources.list entries or deb822 .sources files.
detect_mirror() {
  if [[ -n "${HACLUSTER_DEBIAN_MIRROR:-}" ]]; then
    echo "$HACLUSTER_DEBIAN_MIRROR"
    return
  fi
  local f uri
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -r "$f" ]] || continue
    uri=$(awk -v suite="$SUITE" '
      $1 == "deb" {
        i = 2
        if ($i ~ /^\[/) { while ($i !~ /\]$/ && i < NF) i++; i++ }   # skip [ options ]
        if ($(i + 1) == suite) { print $i; exit }
      }' "$f")
    [[ -n "$uri" ]] && { echo "$uri"; return; }
  done
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -r "$f" ]] || continue
    uri=$(awk -v suite="$SUITE" '
      BEGIN { RS = ""; FS = "\n" }                   # one deb822 stanza per record
      {
        types = ""; uris = ""; suites = ""; enabled = "yes"
        for (n = 1; n <= NF; n++) {
          line = $n
          if (line ~ /^#/) continue
          if (match(line, /^[A-Za-z-]+:/)) {
            key = tolower(substr(line, 1, RLENGTH - 1)); val = substr(line, RLENGTH + 1)
            if (key == "types") types = val
            else if (key == "uris") uris = val
            else if (key == "suites") suites = val
            else if (key == "enabled") enabled = val
          }
        }
        gsub(/^[ \t]+|[ \t]+$/, "", enabled)
        if (enabled == "no") next
        if ((" " types " ") !~ /[ \t]deb[ \t]/) next
        if ((" " suites " ") !~ ("[ \t]" suite "[ \t]")) next
        split(uris, u, /[ \t]+/)
        for (k in u) if (u[k] != "") { print u[k]; exit }
      }' "$f")
    [[ -n "$uri" ]] && { echo "$uri"; return; }
  done
  die "no '$SUITE' entry in /etc/apt/sources.list*; set HACLUSTER_DEBIAN_MIRROR"
}

# Hard-link the cached artifacts into .images/debian12 (copy when on another filesystem).
publish() {
  local src=$1 name
  install -d -m 755 "$ROOT/.images" "$OUT"
  chmod 755 "$ROOT/.images" "$OUT"
  for name in "${ARTIFACTS[@]}"; do
    if [[ "$src/$name" -ef "$OUT/$name" ]]; then
      continue
    fi
    rm -f "$OUT/$name"
    ln "$src/$name" "$OUT/$name" 2>/dev/null || cp --reflink=auto "$src/$name" "$OUT/$name"
  done
}

cached_complete() {
  local dir=$1 name
  for name in "${ARTIFACTS[@]}"; do
    [[ -s "$dir/$name" ]] || return 1
  done
}

# ---------------------------------------------------------------------------------------------

HASH=$(recipe_hash)
DEST=$CACHE/images/$HASH

if [[ "${HACLUSTER_IMAGE_REBUILD:-0}" != 1 ]] && cached_complete "$DEST"; then
  publish "$DEST"
  log "up to date (recipe $HASH): $OUT"
  exit 0
fi

((EUID == 0)) || die "building the image needs root (debootstrap, chroot)"
for tool in debootstrap mkfs.ext4 qemu-img unshare chroot flock; do
  command -v "$tool" >/dev/null || die "$tool not found (run: make deps)"
done

install -d -m 755 "$CACHE" "$CACHE/images" "$CACHE/debs"
exec 9>"$CACHE/images/.lock"
flock 9
if [[ "${HACLUSTER_IMAGE_REBUILD:-0}" != 1 ]] && cached_complete "$DEST"; then
  publish "$DEST"            # another build finished while we waited for the lock
  log "up to date (recipe $HASH): $OUT"
  exit 0
fi

MIRROR=$(detect_mirror)
START=$SECONDS
WORK=$(mktemp -d "$CACHE/images/.build-$HASH.XXXXXX")
ROOTFS=$WORK/rootfs

cleanup() {
  local mnt
  # debootstrap mounts /proc and /sys inside the target; never rm -rf through a mount.
  if [[ -d "$ROOTFS" ]]; then
    while read -r mnt; do
      umount -l "$mnt" 2>/dev/null || true
    done < <(awk -v r="$ROOTFS" 'index($2, r) == 1 { print $2 }' /proc/mounts | sort -r)
  fi
  rm -rf --one-file-system "$WORK"
}
trap cleanup EXIT

mapfile -t PACKAGES < <(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$HERE/packages.txt" | tr -d ' \t')
INCLUDE=$(IFS=,; echo "${PACKAGES[*]}")

log "recipe $HASH: debootstrap $SUITE from $MIRROR (${#PACKAGES[@]} extra packages)"
# Stage 1 downloads (into a shared .deb cache) and unpacks; it needs the mirror.
debootstrap --foreign --variant=minbase --arch=amd64 --cache-dir="$CACHE/debs" \
  --include="$INCLUDE" "$SUITE" "$ROOTFS" "$MIRROR" >"$WORK/debootstrap-1.log" 2>&1 ||
  { tail -n 30 "$WORK/debootstrap-1.log" >&2; die "debootstrap stage 1 failed"; }
log "stage 1 done after $((SECONDS - START)) s; configuring packages (no network, own mount namespace)"
# Stage 2 runs the maintainer scripts. debootstrap already forbids service starts (policy-rc.d,
# fake start-stop-daemon); a private network namespace makes sure nothing a postinst might start
# could ever listen or send on the host's network.
unshare --net --mount --propagation private --fork \
  chroot "$ROOTFS" /debootstrap/debootstrap --second-stage >"$WORK/debootstrap-2.log" 2>&1 ||
  { tail -n 30 "$WORK/debootstrap-2.log" >&2; die "debootstrap stage 2 failed"; }
log "stage 2 done after $((SECONDS - START)) s"

# --- customise the tree (no chroot needed except for two systemctl links) ---------------------
# image/rootfs/ overlays the tree: root-owned, 0644 whatever the checkout's umask made of them.
while IFS= read -r -d '' f; do
  install -D -o root -g root -m 644 "$HERE/rootfs/$f" "$ROOTFS/$f"
done < <(cd "$HERE/rootfs" && find . -type f -printf '%P\0')
: >"$ROOTFS/etc/machine-id"                          # systemd makes a fresh one on first boot
rm -f "$ROOTFS/var/lib/dbus/machine-id"
ln -s /etc/machine-id "$ROOTFS/var/lib/dbus/machine-id"
rm -f "$ROOTFS"/etc/ssh/ssh_host_*                   # cloud-init generates host keys per VM
rm -f "$ROOTFS/etc/nginx/sites-enabled/default"      # the project's cloud-init writes its sites
rm -f "$ROOTFS/etc/nftables.conf"                   # no accept-all default: the rules are the node's own
                                                     # (firewall.enabled), or none and the firewall unit skips
rm -f "$ROOTFS/etc/resolv.conf"                      # do not ship the build host's resolver
install -m 644 /dev/null "$ROOTFS/etc/resolv.conf"
# Units the nodes never use, masked: every unit started costs CPU that 4 booting VMs share.
#   apt timers: no mirror is reachable from the lab; e2scrub only serves LVM (~15 s of CPU at boot);
#   cloud-config.service: the 'config' stage is folded into 'init' and 'final' (90_hacluster.cfg);
#   hotplug, binfmt, fuse, debug/tracing fs, hugepages, pstore, fstrim, dpkg backup, man-db: unused.
MASKED=(apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service
  cloud-config.service cloud-init-hotplugd.socket cloud-init-hotplugd.service
  systemd-binfmt.service proc-sys-fs-binfmt_misc.automount proc-sys-fs-binfmt_misc.mount
  sys-fs-fuse-connections.mount sys-kernel-debug.mount sys-kernel-tracing.mount dev-hugepages.mount
  systemd-pstore.service fstrim.timer dpkg-db-backup.timer man-db.timer
  modprobe@drm.service modprobe@fuse.service modprobe@efi_pstore.service modprobe@dm_mod.service
  modprobe@loop.service)
for unit in "${MASKED[@]}"; do
  ln -sf /dev/null "$ROOTFS/etc/systemd/system/$unit"
done
rm -f "$ROOTFS/etc/systemd/system/timers.target.wants/"{apt-daily,apt-daily-upgrade,dpkg-db-backup,e2scrub_all,fstrim}.timer \
  "$ROOTFS/etc/systemd/system/sysinit.target.wants/systemd-pstore.service" \
  "$ROOTFS/etc/systemd/system/cloud-init.target.wants/"{cloud-config.service,cloud-init-hotplugd.socket} \
  "$ROOTFS/etc/systemd/system/multi-user.target.wants/e2scrub_reap.service"
# Units the nodes run, enabled here rather than by cloud-init at first boot: nginx and keepalived are
# enabled by their packages already, nftables is not (its rules come from cloud-init's write_files;
# until then none). Their SysV scripts go: with /etc/init.d/NAME present,
# every `systemctl enable NAME` runs systemd-sysv-install (perl update-rc.d), 60 s on a loaded node.
install -d "$ROOTFS/etc/systemd/system/sysinit.target.wants"
ln -sf /lib/systemd/system/nftables.service "$ROOTFS/etc/systemd/system/sysinit.target.wants/nftables.service"
# The root filesystem grows to its disk at every boot (a node's disk can be bigger than the image: vm.diskGiB).
for unit in hacluster-growfs.service; do
  ln -sf "/etc/systemd/system/$unit" "$ROOTFS/etc/systemd/system/sysinit.target.wants/$unit"
done
for unit in nginx keepalived ssh qemu-guest-agent; do
  [[ -e "$ROOTFS/lib/systemd/system/$unit.service" ]] || continue
  rm -f "$ROOTFS/etc/init.d/$unit" \
    "$ROOTFS"/etc/rc[0-6S].d/[SK][0-9][0-9]"$unit"
done
# The project's own units (image/rootfs): the health agent (balancers only: it needs the config their
# cloud-init writes) and the firewall load after cloud-init. With them baked in, the first boot needs no
# daemon-reload and no systemctl at all: every service starts after cloud-init's 'init' stage.
for unit in hacluster-health.service hacluster-firewall.service hacluster-ready.service; do
  ln -sf "/etc/systemd/system/$unit" "$ROOTFS/etc/systemd/system/multi-user.target.wants/$unit"
done
for unit in nginx.service keepalived.service ssh.service nftables.service hacluster-health.service \
  hacluster-firewall.service hacluster-ready.service hacluster-growfs.service; do
  # -L: the links are absolute (they point into the image, not at this host)
  [[ -L "$ROOTFS/etc/systemd/system/multi-user.target.wants/$unit" ||
     -L "$ROOTFS/etc/systemd/system/sysinit.target.wants/$unit" ]] || die "$unit is not enabled in the image"
done
rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/* \
  "$ROOTFS"/var/log/*.log "$ROOTFS"/var/cache/debconf/*-old "$ROOTFS"/tmp/* "$ROOTFS/debootstrap"

# Kernel and initramfs for direct kernel boot (Debian installs vmlinuz mode 600).
KERNEL=$(find "$ROOTFS/boot" -maxdepth 1 -name 'vmlinuz-*' -printf '%f\n' | sort -V | tail -n 1)
[[ -n "$KERNEL" ]] || die "no kernel in $ROOTFS/boot"
KVER=${KERNEL#vmlinuz-}
# In the chroot (own network and mount namespace, /proc mounted inside only): a small initramfs with
# just the virtio drivers (image/rootfs/etc/initramfs-tools), and bytecode for every Python module
# (cloud-init runs three Python processes on first boot; none should compile anything).
unshare --net --mount --propagation private --fork sh -c '
  mount -t proc proc "$1/proc" &&
  chroot "$1" update-initramfs -u -k "$2" &&
  { chroot "$1" python3 -m compileall -q /usr/lib/python3/dist-packages >/dev/null || echo "compileall: some files did not compile"; };
  rc=$?; umount "$1/proc"; exit $rc' sh "$ROOTFS" "$KVER" >"$WORK/chroot.log" 2>&1 ||
  { tail -n 30 "$WORK/chroot.log" >&2; die "initramfs/compileall in the chroot failed"; }
log "initramfs $(du -h "$ROOTFS/boot/initrd.img-$KVER" | cut -f1) (virtio drivers only), bytecode compiled"
[[ -s "$ROOTFS/boot/initrd.img-$KVER" ]] || die "no initrd.img-$KVER in $ROOTFS/boot"
install -m 644 "$ROOTFS/boot/$KERNEL" "$WORK/vmlinuz"
install -m 644 "$ROOTFS/boot/initrd.img-$KVER" "$WORK/initrd.img"

pkg_version() {
  dpkg-query --admindir="$ROOTFS/var/lib/dpkg" -W -f='${Version}' "$1" 2>/dev/null || echo unknown
}
NGINX_V=$(pkg_version nginx)
KEEPALIVED_V=$(pkg_version keepalived)
CLOUDINIT_V=$(pkg_version cloud-init)
SYSTEMD_V=$(pkg_version systemd)
KPKG_V=$(pkg_version "linux-image-$KVER")

# --- filesystem image, without mounting ------------------------------------------------------
ROOTFS_MB=$(du -sm --one-file-system "$ROOTFS" | cut -f1)
log "rootfs ${ROOTFS_MB} MiB; mkfs.ext4 -d into a ${IMAGE_SIZE} raw file"
truncate -s "$IMAGE_SIZE" "$WORK/disk.raw"
mkfs.ext4 -q -F -L hacluster-root -d "$ROOTFS" "$WORK/disk.raw"
qemu-img convert -f raw -O qcow2 "$WORK/disk.raw" "$WORK/disk.qcow2"
rm -f "$WORK/disk.raw"
chmod 644 "$WORK/disk.qcow2"

BUILD_SECONDS=$((SECONDS - START))
sha() { sha256sum "$1" | cut -d' ' -f1; }
size() { stat -c %s "$1"; }
cat >"$WORK/manifest.json" <<EOF
{
  "name": "debian12",
  "suite": "$SUITE",
  "recipe_hash": "$HASH",
  "mirror": "$MIRROR",
  "built_at": "$(date -u +%Y-%m-%dT%H:%M:%SZ)",
  "build_seconds": $BUILD_SECONDS,
  "rootfs_mib": $ROOTFS_MB,
  "kernel_cmdline": "root=/dev/vda rw console=ttyS0 net.ifnames=0",
  "files": {
    "disk.qcow2": {"bytes": $(size "$WORK/disk.qcow2"), "virtual_size": "$IMAGE_SIZE", "sha256": "$(sha "$WORK/disk.qcow2")"},
    "vmlinuz": {"bytes": $(size "$WORK/vmlinuz"), "sha256": "$(sha "$WORK/vmlinuz")"},
    "initrd.img": {"bytes": $(size "$WORK/initrd.img"), "sha256": "$(sha "$WORK/initrd.img")"}
  },
  "versions": {
    "kernel": "$KVER",
    "kernel_package": "$KPKG_V",
    "nginx": "$NGINX_V",
    "keepalived": "$KEEPALIVED_V",
    "cloud-init": "$CLOUDINIT_V",
    "systemd": "$SYSTEMD_V"
  }
}
EOF

# Move the finished set into the cache in one rename, then publish.
install -d -m 755 "$WORK/out"
for name in "${ARTIFACTS[@]}"; do
  mv "$WORK/$name" "$WORK/out/$name"
done
rm -rf "$DEST"
mv "$WORK/out" "$DEST"
chmod 755 "$DEST"
publish "$DEST"
# Prune the oldest recipes (other clones on this machine may still use the newer ones).
find "$CACHE/images" -mindepth 1 -maxdepth 1 -type d -regex '.*/[0-9a-f]+' -printf '%T@ %p\n' |
  sort -rn | tail -n +"$((${HACLUSTER_IMAGE_KEEP:-3} + 1))" | cut -d' ' -f2- |
  while read -r old; do rm -rf "$old"; log "pruned old recipe ${old##*/}"; done
log "built in ${BUILD_SECONDS} s (recipe $HASH): $OUT ($(du -h "$DEST/disk.qcow2" | cut -f1) qcow2)"
