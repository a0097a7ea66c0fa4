#!/usr/bin/env bash
# Install the Debian packages Tidemark's tests use as oracles and peers (qemu-img, qemu-nbd, nbdinfo,
# nbdcopy, qemu-system-x86_64, busybox for the test VM, debugfs). Needs root; does nothing when all
# tools are already present. Under CI=true it always installs and then fails if any tool is missing.
set -euo pipefail
TOOLS="qemu-img qemu-io qemu-nbd nbdinfo nbdcopy qemu-system-x86_64 debugfs busybox cpio openssl xz mkfs.xfs filefrag fincore"
missing=()
for t in $TOOLS; do command -v "$t" >/dev/null || missing+=("$t"); done
if [ "${CI:-}" != true ] && [ ${#missing[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" != 0 ]; then
  echo "missing tools: ${missing[*]:-none}; run as root (or: sudo $0) to install them from Debian" >&2
  [ "${CI:-}" = true ] && exit 1 || exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends \
  qemu-utils qemu-system-x86 libnbd-bin busybox-static cpio e2fsprogs xfsprogs util-linux-extra \
  openssl xz-utils ca-certificates python3 make g++
for t in $TOOLS; do
  command -v "$t" >/dev/null || { echo "required tool '$t' is missing after install" >&2; exit 1; }
done
