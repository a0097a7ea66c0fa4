#!/bin/sh
# Build the boot assets of Tidemark's VM test harness (test/vm/guest.ts): a Debian cloud kernel and a
# busybox initramfs whose /init runs a script handed in through QEMU's fw_cfg, then powers off.
#
#   scripts/vm-assets.sh [--force] [--print]
#
# Output (in $TIDEMARK_VM_CACHE, default <repo>/.cache/vm, gitignored):
#   vmlinuz      the kernel
#   initrd.gz    newc cpio, gzip: busybox-static, the virtio/fw_cfg/virtio_console modules, /init, and
#                /bin/qemu-ga (Debian's qemu-guest-agent) with the host's copies of its shared libraries
#   stamp        what was built from (script hash, kernel package and version)
#
# Idempotent: when the stamp matches this script, nothing is downloaded or rebuilt (works offline).
# Otherwise needs: apt-get/apt-cache/dpkg-deb (Debian archive only), busybox-static, cpio, gzip, flock;
# xz/zstd only if the kernel ships compressed modules. Runs `apt-get update` once if apt knows no kernel.
# Concurrent runs serialise on a lock file. Fails loudly (exit 1, "vm-assets: ..." on stderr).
set -eu

die() { echo "vm-assets: $*" >&2; exit 1; }
log() { echo "vm-assets: $*" >&2; }

FORCE=0
PRINT=0
for arg in "$@"; do
  case "$arg" in
    --force) FORCE=1 ;;
    --print) PRINT=1 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) die "unknown argument '$arg' (use --force, --print)" ;;
  esac
done

SELF=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")
REPO=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${TIDEMARK_VM_CACHE:-$REPO/.cache/vm}
META=${TIDEMARK_VM_KERNEL_META:-linux-image-cloud-amd64}
# Modules the guest needs (their dependencies are added automatically, in load order).
WANT_MODULES="virtio_pci virtio_blk qemu_fw_cfg virtio_console"
# The guest agent package (its qemu-ga binary runs in the guest with the host's libraries: host and
# guest packages both come from the same Debian release).
QGA_PKG=qemu-guest-agent

need() { command -v "$1" >/dev/null 2>&1 || die "'$1' not found: install $2 (apt-get install $2)"; }
need sha256sum coreutils
need flock util-linux

mkdir -p "$CACHE" || die "cannot create cache dir $CACHE"
exec 9>"$CACHE/.lock"
flock 9 || die "cannot lock $CACHE/.lock"

SCRIPT_HASH=$(sha256sum "$SELF" | cut -c1-16)
print_paths() {
  if [ "$PRINT" = 1 ]; then
    echo "kernel=$CACHE/vmlinuz"
    echo "initrd=$CACHE/initrd.gz"
  fi
}
if [ "$FORCE" = 0 ] && [ -s "$CACHE/vmlinuz" ] && [ -s "$CACHE/initrd.gz" ] && [ -f "$CACHE/stamp" ] \
   && grep -qx "script=$SCRIPT_HASH" "$CACHE/stamp"; then
  log "up to date in $CACHE ($(grep '^kernel=' "$CACHE/stamp" | cut -d= -f2))"
  print_paths
  exit 0
fi

need apt-get apt
need apt-cache apt
need dpkg-deb dpkg
need cpio cpio
need gzip gzip
BUSYBOX=""
for b in /bin/busybox /usr/bin/busybox; do [ -x "$b" ] && BUSYBOX=$b && break; done
[ -n "$BUSYBOX" ] || die "busybox not found: apt-get install busybox-static"
# The initramfs has no libc: busybox must be static (ldd fails on static binaries).
if ldd "$BUSYBOX" >/dev/null 2>&1; then die "$BUSYBOX is dynamically linked: apt-get install busybox-static"; fi

# Resolve the metapackage to the real kernel package (apt-get download of the meta gives no kernel).
resolve() { apt-cache depends "$META" 2>/dev/null | awk '/Depends: linux-image-/ { print $2; exit }'; }
PKG=$(resolve || true)
if [ -z "$PKG" ]; then
  log "apt does not know $META; running apt-get update"
  apt-get update -qq >&2 || die "apt-get update failed (need root and access to the Debian archive)"
  PKG=$(resolve || true)
fi
[ -n "$PKG" ] || die "cannot resolve $META to a linux-image-*-cloud-amd64 package (is this Debian/amd64?)"
VERSION=$(apt-cache policy "$PKG" | awk '/Candidate:/ { print $2; exit }')
log "kernel package $PKG $VERSION"

WORK=$(mktemp -d "$CACHE/.build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT INT TERM
chmod 755 "$WORK"   # apt's _apt user may write the download here

# download PKG: apt-get download into $WORK, once retrying after apt-get update when apt knows no such package.
download() {
  ( cd "$WORK" && apt-get download "$1" >/dev/null 2>"$WORK/apt.err" ) || {
    if grep -qi 'unable to locate\|has no installation candidate' "$WORK/apt.err"; then
      log "apt-get download $1: package unknown; running apt-get update and retrying"
      apt-get update -qq >&2 || die "apt-get update failed"
      ( cd "$WORK" && apt-get download "$1" >/dev/null ) || die "apt-get download $1 failed"
    else
      cat "$WORK/apt.err" >&2
      die "apt-get download $1 failed"
    fi
  }
}
download "$PKG"
DEB=$(ls "$WORK"/"$PKG"_*.deb 2>/dev/null | head -n 1)
[ -n "$DEB" ] || die "apt-get download $PKG produced no .deb in $WORK"
dpkg-deb -x "$DEB" "$WORK/pkg" || die "dpkg-deb -x $DEB failed"

VMLINUZ=$(ls "$WORK"/pkg/boot/vmlinuz-* 2>/dev/null | head -n 1)
[ -n "$VMLINUZ" ] || die "$DEB has no /boot/vmlinuz-*"
KVER=${VMLINUZ##*/vmlinuz-}
CONFIG="$WORK/pkg/boot/config-$KVER"
MODDIR="$WORK/pkg/lib/modules/$KVER"
[ -f "$CONFIG" ] || die "$DEB has no /boot/config-$KVER"
[ -d "$MODDIR" ] || die "$DEB has no /lib/modules/$KVER"

# The guest needs these built in: initramfs (gzip), devtmpfs, serial console, ext2 via ext4.
for opt in BLK_DEV_INITRD RD_GZIP DEVTMPFS SERIAL_8250_CONSOLE EXT4_FS EXT4_USE_FOR_EXT2; do
  grep -qx "CONFIG_$opt=y" "$CONFIG" || die "kernel $KVER lacks CONFIG_$opt=y (the guest needs it)"
done

# Find a module file by name (foo or foo-bar spelled either way), any compression.
find_module() {
  f=$(find "$MODDIR/kernel" \( -name "$1.ko" -o -name "$1.ko.xz" -o -name "$1.ko.zst" -o -name "$1.ko.gz" \
      -o -name "$(echo "$1" | tr _ -).ko" -o -name "$(echo "$1" | tr _ -).ko.xz" \
      -o -name "$(echo "$1" | tr _ -).ko.zst" \) | head -n 1)
  echo "$f"
}
# Decompress a module to stdout (busybox insmod wants a plain ELF).
cat_module() {
  case "$1" in
    *.ko) cat "$1" ;;
    *.ko.xz) need xz xz-utils; xz -dc "$1" ;;
    *.ko.zst) need zstd zstd; zstd -dc "$1" ;;
    *.ko.gz) gzip -dc "$1" ;;
  esac
}
# The built-in list: a wanted module that is built in needs no file.
builtin() { grep -q "/$1.ko\$" "$MODDIR/modules.builtin" 2>/dev/null || grep -q "/$(echo "$1" | tr _ -).ko\$" "$MODDIR/modules.builtin" 2>/dev/null; }

ROOT="$WORK/root"
mkdir -p "$ROOT/bin" "$ROOT/dev" "$ROOT/proc" "$ROOT/sys" "$ROOT/tmp" "$ROOT/mnt" "$ROOT/lib/modules"
ORDER=""
added=" "
# Depth-first over modinfo "depends=": dependencies first, each once.
add_module() {
  case "$added" in *" $1 "*) return 0 ;; esac
  if builtin "$1"; then added="$added$1 "; return 0; fi
  file=$(find_module "$1")
  [ -n "$file" ] || die "kernel $KVER has no module $1 (and it is not built in)"
  deps=$(cat_module "$file" | tr '\0' '\n' | grep -a '^depends=' | head -n 1 | cut -d= -f2 | tr , ' ')
  added="$added$1 "
  # Unpack before recursing: sh has no local variables, so $file is clobbered by the recursion.
  cat_module "$file" > "$ROOT/lib/modules/$1.ko" || die "cannot unpack $file"
  for d in $deps; do add_module "$d"; done
  ORDER="$ORDER $1"
}
for m in $WANT_MODULES; do add_module "$m"; done
echo "$ORDER" | tr ' ' '\n' | sed '/^$/d' > "$ROOT/lib/modules/order"
log "modules:$ORDER"

cp "$BUSYBOX" "$ROOT/bin/busybox"
for applet in $("$ROOT/bin/busybox" --list); do
  [ "$applet" = busybox ] || ln -sf busybox "$ROOT/bin/$applet"
done
ln -s bin "$ROOT/sbin"

# The guest agent: qemu-ga from the Debian package plus the shared libraries ldd finds for it on the host,
# copied to the same paths in the initramfs (the loader's default search path finds them there).
need ldd libc-bin
download "$QGA_PKG"
QGA_DEB=$(ls "$WORK"/"$QGA_PKG"_*.deb 2>/dev/null | head -n 1)
[ -n "$QGA_DEB" ] || die "apt-get download $QGA_PKG produced no .deb in $WORK"
QGA_VERSION=$(dpkg-deb -f "$QGA_DEB" Version)
dpkg-deb -x "$QGA_DEB" "$WORK/qga" || die "dpkg-deb -x $QGA_DEB failed"
[ -x "$WORK/qga/usr/sbin/qemu-ga" ] || die "$QGA_DEB has no /usr/sbin/qemu-ga"
cp "$WORK/qga/usr/sbin/qemu-ga" "$ROOT/bin/qemu-ga"
LDD_OUT=$(ldd "$ROOT/bin/qemu-ga") || die "ldd $ROOT/bin/qemu-ga failed"
if echo "$LDD_OUT" | grep -q 'not found'; then
  die "qemu-ga needs libraries this host lacks: $(echo "$LDD_OUT" | grep 'not found' | tr -s ' \t\n' ' ')(install $QGA_PKG's dependencies: apt-get install libglib2.0-0 libnuma1 liburing2 libudev1)"
fi
for lib in $(echo "$LDD_OUT" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'); do
  mkdir -p "$ROOT$(dirname "$lib")"
  cp -L "$lib" "$ROOT$lib" || die "cannot copy $lib"
done
log "qemu-ga $QGA_VERSION with $(echo "$LDD_OUT" | grep -c '/') libraries"

cat > "$ROOT/init" <<'EOF'
#!/bin/busybox sh
# Tidemark VM test guest. Contract with test/vm/guest.ts:
#   kernel cmdline tidemark.disks=N: wait for /dev/vda.. (N disks) before running the script;
#   fw_cfg opt/tidemark/script: the script, run with sh -e; its output goes to the serial console;
#   prints "TIDEMARK-BEGIN" before and "TIDEMARK-END rc=<status>" after, syncs, powers off.
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec 0</dev/console 1>/dev/console 2>&1
for m in $(cat /lib/modules/order); do
  insmod "/lib/modules/$m.ko" || echo "TIDEMARK-INIT insmod $m failed"
done
disks=0
for w in $(cat /proc/cmdline); do
  case "$w" in tidemark.disks=*) disks=${w#tidemark.disks=} ;; esac
done
n=0
for d in a b c d e f g h; do
  [ "$n" -lt "$disks" ] || break
  i=0
  while [ ! -b "/dev/vd$d" ] && [ "$i" -lt 100 ]; do usleep 50000; i=$((i + 1)); done
  [ -b "/dev/vd$d" ] || echo "TIDEMARK-INIT /dev/vd$d did not appear"
  n=$((n + 1))
done
raw=/sys/firmware/qemu_fw_cfg/by_name/opt/tidemark/script/raw
if [ -r "$raw" ]; then
  cat "$raw" > /tmp/script
  echo "TIDEMARK-BEGIN"
  (cd /tmp && sh -e /tmp/script)
  rc=$?
else
  echo "TIDEMARK-INIT no script at $raw"
  rc=127
fi
sync
echo "TIDEMARK-END rc=$rc"
poweroff -f
EOF
chmod 755 "$ROOT/init"

( cd "$ROOT" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0 ) | gzip -9n > "$WORK/initrd.gz" \
  || die "building the initramfs failed"
cp "$VMLINUZ" "$WORK/vmlinuz"
printf 'script=%s\nkernel=%s\npackage=%s %s\nmodules=%s\nqga=%s %s\n' "$SCRIPT_HASH" "$KVER" "$PKG" "$VERSION" "$ORDER" "$QGA_PKG" "$QGA_VERSION" > "$WORK/stamp"
mv -f "$WORK/vmlinuz" "$CACHE/vmlinuz"
mv -f "$WORK/initrd.gz" "$CACHE/initrd.gz"
mv -f "$WORK/stamp" "$CACHE/stamp"
log "built $CACHE/vmlinuz ($KVER) and $CACHE/initrd.gz ($(wc -c < "$CACHE/initrd.gz") bytes)"
print_paths
