#!/usr/bin/env bash
# Tidemark quickstart: build, then back up a disk twice (full, then incremental through change
# tracking), list the restore points and restore the first one, checking it bit for bit.
# Everything happens in ./tidemark-demo (removed and recreated on every run), with
# TIDEMARK_HOME=./tidemark-demo/home, so the default repository is ./tidemark-demo/home/repo.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

if [ ! -d node_modules ]; then
  step "Installing dependencies (npm ci)"
  npm ci
fi
step "Building (native addon + TypeScript into dist/)"
npm run build

DEMO="$ROOT/tidemark-demo"
export TIDEMARK_HOME="$DEMO/home"
export TIDEMARK_CACHE_DIR="$DEMO/cache"   # the local pack index cache (default ~/.cache/tidemark)
tidemark() { node "$ROOT/dist/src/cli/main.js" "$@"; }

step "Starting fresh in $DEMO (TIDEMARK_HOME=$TIDEMARK_HOME)"
rm -rf "$DEMO"
mkdir -p "$DEMO"
cd "$DEMO"

step "Generating the disk's initial content: a sparse 1 GiB raw file with 48 MiB of data in three places"
truncate -s 1G seed.raw
head -c $((16 << 20)) /dev/urandom | dd of=seed.raw bs=1M seek=0 conv=notrunc status=none
head -c $((16 << 20)) /dev/urandom | dd of=seed.raw bs=1M seek=300 conv=notrunc status=none
head -c $((16 << 20)) /dev/urandom | dd of=seed.raw bs=1M seek=900 conv=notrunc status=none

step "Writing it into a new 1 GiB dynamic VHDX through Tidemark: tidemark disk convert seed.raw disk.vhdx"
tidemark disk convert seed.raw disk.vhdx --format vhdx --type dynamic
tidemark disk info disk.vhdx

step "First backup (full: reads only allocated data; creates the default repository and enables change tracking)"
tidemark backup disk.vhdx

step "Changing 4 MiB of the disk through Tidemark (a writer opens disks with change tracking, as 'tidemark serve' does)"
node --input-type=module -e "
import { randomBytes } from 'node:crypto';
const { DiskLock } = await import('$ROOT/dist/src/blockdev/DiskLock.js');
const { openTrackedDisk } = await import('$ROOT/dist/src/rct/openTrackedDisk.js');
const lock = await DiskLock.acquire('disk.vhdx', { exclusive: true, holder: 'quickstart writer' });
const dev = await openTrackedDisk('disk.vhdx');
for (const mib of [5, 301, 640, 905]) await dev.write(mib * 1048576, randomBytes(1048576));
await dev.close();
await lock.release();
console.log('wrote 1 MiB at 5, 301, 640 and 905 MiB');
"

step "Second backup (incremental: reads only what changed since the first)"
tidemark backup disk.vhdx --json | tee backup2.json
node -e "const r = JSON.parse(require('fs').readFileSync('backup2.json', 'utf8')); if (r.mode !== 'incremental') { console.error('expected an incremental backup, got ' + r.mode + ': ' + (r.reason || '')); process.exit(1); } console.log('mode ' + r.mode + ': read ' + (r.bytesRead / 1048576).toFixed(2) + ' MiB of a ' + (r.diskSize / 1073741824) + ' GiB disk')"

step "Restore points"
tidemark snapshots

FIRST="$(tidemark snapshots --json | node -e "let s='';process.stdin.on('data',d=>s+=d).on('end',()=>console.log(JSON.parse(s)[0].id))")"
LAST="$(tidemark snapshots --json | node -e "let s='';process.stdin.on('data',d=>s+=d).on('end',()=>{const a=JSON.parse(s);console.log(a[a.length-1].id)})")"

step "What changed between them (from the indexes alone)"
tidemark snapshots diff "$FIRST" "$LAST"

step "Restoring the first snapshot to restored.raw (sparse, every chunk verified, written to a temp name then renamed)"
tidemark restore "$FIRST" --to restored.raw

step "Checking the restored disk against the original content (seed.raw)"
tidemark disk compare restored.raw seed.raw

step "Checking the repository"
tidemark verify

step "Done. Try: TIDEMARK_HOME=$TIDEMARK_HOME node dist/src/cli/main.js mount $LAST --listen 127.0.0.1:10809"
