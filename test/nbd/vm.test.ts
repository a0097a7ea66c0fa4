/**
 * End to end: a real Linux guest (QEMU, TCG) whose only disk is a Tidemark VHDX with change tracking,
 * served by Tidemark's NBD server. The guest makes an ext2 filesystem, writes files, zeroes, deletes
 * and trims, syncs and powers off. Then the host checks: the files are in the image (read with
 * debugfs after Tidemark converts the VHDX to raw; qemu-img is the oracle for that conversion), the
 * VHDX passes `qemu-img check`, every command type really crossed the wire, and RCT's answer for the
 * ID sealed before boot is exactly the set of blocks the guest wrote — over the API, after a clean
 * close from the tracking files, and as the `tidemark:changes:<ID>` NBD meta context seen by nbdinfo.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { requireTools, run, tempDir } from '../helpers/tools.js';
import { bootGuest, assertGuestOk } from '../vm/guest.js';
import { debugfsCat, debugfsList } from '../vm/debugfs.js';
import { NbdTap } from '../vm/NbdTap.js';
import { CountingDevice } from '../vm/CountingDevice.js';
import { createDisk } from '../../src/disk/createDisk.js';
import { openDisk } from '../../src/disk/openDisk.js';
import { convertDisk } from '../../src/disk/convertDisk.js';
import { enableTracking } from '../../src/rct/enableTracking.js';
import { openTrackedDisk } from '../../src/rct/openTrackedDisk.js';
import { openRctHandle } from '../../src/rct/openRctHandle.js';
import { isTracked } from '../../src/rct/trackingLayer.js';
import type { Range } from '../../src/rct/Range.js';
import { NbdServer } from '../../src/nbd/NbdServer.js';

const MiB = 1024 * 1024;
const SIZE = 64 * MiB;
const GRANULE = 4096;
const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/** RCT block indices covered by ranges. */
function blocksOf(ranges: Array<{ offset: number; length: number }>, blockSize: number): Set<number> {
  const out = new Set<number>();
  for (const r of ranges) {
    if (r.length === 0) continue;
    for (let b = Math.floor(r.offset / blockSize); b < Math.ceil((r.offset + r.length) / blockSize); b++) out.add(b);
  }
  return out;
}

const inside = (ranges: Range[], offset: number, length: number): boolean =>
  ranges.some((r) => r.offset <= offset && offset + length <= r.offset + r.length);

test('guest writes a filesystem onto a tracked VHDX over Tidemark NBD; files and RCT changes check out', { timeout: 240_000 }, async (t) => {
  if (!requireTools(t, 'qemu-system-x86_64', 'debugfs', 'qemu-img', 'nbdinfo')) return;
  const dir = await tempDir(t);
  const disk = join(dir, 'disk.vhdx');
  await createDisk(disk, { format: 'vhdx', size: SIZE });

  // Some content from before tracking starts, so "changed" is measured against non-trivial data.
  const prefill = randomBytes(2 * MiB);
  {
    const d = await openDisk(disk);
    await d.write(40 * MiB, prefill);
    await d.close();
  }
  await enableTracking(disk);

  const opened = await openTrackedDisk(disk);
  assert.ok(isTracked(opened), 'a disk with tracking enabled opens as a TrackedDevice');
  const dev = opened;
  let devClosed = false;
  t.after(async () => {
    if (!devClosed) await dev.close().catch(() => undefined);
  });
  const blockSize = dev.status().blockSize!;
  const id0 = await dev.seal();
  const before = await dev.read(0, SIZE);
  assert.ok(before.subarray(40 * MiB, 42 * MiB).equals(prefill));

  const counting = new CountingDevice(dev);
  const serverSock = join(dir, 'nbd.sock');
  const server = new NbdServer({ exports: [{ name: 'disk', device: counting, changes: dev }] });
  await server.listen({ path: serverSock });
  t.after(() => server.close().catch(() => undefined));
  const tap = await NbdTap.start(serverSock, join(dir, 'tap.sock'));
  t.after(() => tap.close());

  const guest = await bootGuest({
    disks: [{ nbdUrl: `nbd+unix:///disk?socket=${tap.socketPath}` }],
    script: `
      mke2fs -b 4096 /dev/vda >/dev/null
      mount -t ext2 /dev/vda /mnt
      echo "written by the guest over Tidemark NBD" > /mnt/hello.txt
      mkdir /mnt/data
      dd if=/dev/urandom of=/mnt/data/random.bin bs=65536 count=24 2>/dev/null
      result random_sha "$(sha /mnt/data/random.bin)"
      dd if=/dev/zero of=/mnt/data/zeros.bin bs=65536 count=16 2>/dev/null
      sync
      dd if=/dev/urandom of=/mnt/doomed.bin bs=65536 count=16 2>/dev/null
      sync
      rm /mnt/doomed.bin
      sync
      fstrim /mnt
      umount /mnt
      result done yes
    `,
  });
  assertGuestOk(guest);
  assert.equal(guest.results.done, 'yes');
  t.diagnostic(`guest boot + script: ${guest.durationMs} ms`);

  await tap.close();
  await server.close();

  // 1. The wire: structured replies and base:allocation were negotiated; every data command was sent.
  const s = tap.stats;
  assert.deepEqual(s.errors, []);
  assert.equal(s.structuredReplies, true, JSON.stringify(s.options));
  assert.ok(s.metaContexts.includes('base:allocation'), JSON.stringify(s.options));
  for (const cmd of ['READ', 'WRITE', 'FLUSH', 'TRIM', 'WRITE_ZEROES', 'DISC']) {
    assert.ok((s.counts[cmd] ?? 0) > 0, `guest sent no NBD_CMD_${cmd}: ${JSON.stringify(s.counts)}`);
  }
  // ... and the server turned them into device calls.
  for (const op of ['read', 'write', 'zero', 'trim', 'flush'] as const) {
    assert.ok(counting.counts[op] > 0, `server made no ${op}() call: ${JSON.stringify(counting.counts)}`);
  }
  t.diagnostic(`NBD commands: ${JSON.stringify(s.counts)}; device calls: ${JSON.stringify(counting.counts)}`);

  // 2. RCT: the changes since id0 are exactly the blocks the guest wrote, zeroed or trimmed.
  const changes = await dev.changes(id0);
  const changed = blocksOf(changes, blockSize);
  const touched = blocksOf(counting.mutations, blockSize);
  assert.deepEqual([...changed].sort((a, b) => a - b), [...touched].sort((a, b) => a - b));
  const after = await dev.read(0, SIZE);
  let differing = 0;
  for (let off = 0; off < SIZE; off += GRANULE) {
    if (before.subarray(off, off + GRANULE).equals(after.subarray(off, off + GRANULE))) continue;
    differing++;
    assert.ok(inside(changes, off, GRANULE), `bytes at ${off} changed but RCT does not report them`);
  }
  assert.ok(differing > 0);
  const changedBytes = changes.reduce((n, r) => n + r.length, 0);
  assert.ok(changedBytes < SIZE, 'RCT reports less than the whole disk');
  t.diagnostic(`RCT block ${blockSize}: ${changes.length} ranges, ${changedBytes} bytes changed; ${differing} 4 KiB granules differ`);

  // The same answer through NBD's tidemark:changes:<ID> context, read by a real client (nbdinfo).
  {
    const server2 = new NbdServer({ exports: [{ name: 'disk', device: dev, changes: dev, readOnly: true }] });
    const sock2 = join(dir, 'nbd2.sock');
    await server2.listen({ path: sock2 });
    try {
      const out = run('nbdinfo', ['--json', `--map=tidemark:changes:${id0}`, `nbd+unix:///disk?socket=${sock2}`]);
      const map = JSON.parse(out.stdout) as Array<{ offset: number; length: number; type: number }>;
      const viaNbd = map.filter((e) => e.type & 1).map((e) => ({ offset: e.offset, length: e.length }));
      assert.deepEqual(viaNbd, changes.map((r) => ({ offset: r.offset, length: r.length })));
    } finally {
      await server2.close();
    }
  }

  await dev.close();
  devClosed = true;

  // After a clean close the tracking files give the same answer.
  const handle = await openRctHandle(disk);
  try {
    assert.deepEqual(await handle.changes(id0), changes);
  } finally {
    await handle.close();
  }

  // 3. The image: a valid VHDX whose content is what the guest saw.
  run('qemu-img', ['check', '-f', 'vhdx', disk]);
  const raw = join(dir, 'disk.raw');
  await convertDisk(disk, raw, { format: 'raw' });
  const oracle = join(dir, 'oracle.raw');
  run('qemu-img', ['convert', '-f', 'vhdx', '-O', 'raw', disk, oracle]);
  const rawBytes = await readFile(raw);
  assert.ok(rawBytes.equals(await readFile(oracle)), 'Tidemark and qemu-img agree on the VHDX content');
  assert.ok(rawBytes.equals(after), 'the image holds what the device served');

  assert.equal(debugfsCat(raw, '/hello.txt').toString(), 'written by the guest over Tidemark NBD\n');
  const random = debugfsCat(raw, '/data/random.bin');
  assert.equal(random.length, 24 * 65536);
  assert.equal(sha256(random), guest.results.random_sha);
  assert.ok(debugfsCat(raw, '/data/zeros.bin').equals(Buffer.alloc(16 * 65536)));
  assert.deepEqual(debugfsList(raw, '/').sort(), ['data', 'hello.txt', 'lost+found']);
});
