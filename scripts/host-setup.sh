#!/bin/sh
# Installs the Debian packages that the demo and the tests call (mkfs tools, partitioners,
# independent checkers, the ISO builder's tools, qemu and OVMF for the VM tests). Idempotent:
# apt-get runs only when something is missing.
set -eu
PKGS="e2fsprogs dosfstools ntfs-3g exfatprogs exfat-fuse fuse3 mtools fdisk gdisk parted partclone
util-linux mount cryptsetup-bin lvm2 mdadm zstd libudev1 attr btrfs-progs time iproute2 curl
chromium fonts-dejavu-core samba smbclient smbnetfs cifs-utils
qemu-system-x86 ovmf xorriso squashfs-tools cpio kmod tftp-hpa atftp dnsmasq-base
ipxe isc-dhcp-client busybox iputils-ping"
missing=""
for p in $PKGS; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing="$missing $p"
  fi
done
if [ -n "$missing" ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "host-setup: missing Debian packages:$missing — run as root or install them" >&2
    exit 1
  fi
  echo "host-setup: installing$missing" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # shellcheck disable=SC2086
  apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
