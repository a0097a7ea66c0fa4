/**
 * End to end: a real Linux guest (QEMU, TCG) whose only disk is a Tidemark VHDX with change tracking,
 * served in-process by Tidemark's NBD server. Boot 1 makes an ext2 filesystem, writes files, zeroes,
 * deletes and trims. Boot 2 (after a new RCT ID is sealed) reads boot 1's file back and writes a
 * little. Then the host checks: the files are in the image (read with debugfs after Tidemark converts
 * the VHDX to raw; qemu-img is the oracle for that conversion), the VHDX passes `qemu-img check`,
 * every command type really crossed the wire, and RCT's answer for each ID is exactly the set of
 * blocks the guest wrote after it — over the API, from the tracking files after a clean close, and
 * as the `tidemark:changes:<ID>` NBD meta context seen by a real client (nbdinfo).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import { join } from 'node:path';
import { run, tempDir } from '../helpers/tools.js';
import { bootGuest, assertGuestOk, requireVm, type GuestRun } from '../vm/guest.js';
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
import type { TrackedDevice } from '../../src/rct/trackingLayer.js';
import { NbdServer } from '../../src/nbd/NbdServer.js';

const execFileP = promisify(execFile);
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

interface Served {
  guest: GuestRun;
  tap: NbdTap;
  counting: CountingDevice;
}

/** Serve `dev` (with its RCT as the change source) through a tap, boot a guest on it, shut down. */
async function serveAndBoot(dev: TrackedDevice, dir: string, tag: string, script: string): Promise<Served> {
  const counting = new CountingDevice(dev);
  const server = new NbdServer({ exports: [{ name: 'disk', device: counting, changes: dev }] });
  const serverSock = join(dir, `nbd-${tag}.sock`);
  await server.listen({ path: serverSock });
  const tap = await NbdTap.start(serverSock, join(dir, `tap-${tag}.sock`));
  try {
    const guest = await bootGuest({ disks: [{ nbdUrl: `nbd+unix:///disk?socket=${tap.socketPath}` }], script });
    assertGuestOk(guest);
    return { guest, tap, counting };
  } finally {
    await tap.close();
    await server.close();
  }
}

/** The RCT answer for `id` must be exactly the blocks `mutations` touched, and cover every changed byte. */
async function checkChanges(dev: TrackedDevice, id: string, mutations: Array<{ offset: number; length: number }>, before: Buffer, after: Buffer): Promise<{ changes: Range[]; changedBytes: number; differing: number }> {
  const blockSize = dev.status().blockSize!;
  const changes = await dev.changes(id);
  const sorted = (x: Set<number>) => [...x].sort((a, b) => a - b);
  assert.deepEqual(sorted(blocksOf(changes, blockSize)), sorted(blocksOf(mutations, blockSize)), 'RCT blocks = blocks the server wrote');
  let differing = 0;
  for (let off = 0; off < SIZE; off += GRANULE) {
    if (before.subarray(off, off + GRANULE).equals(after.subarray(off, off + GRANULE))) continue;
    differing++;
    assert.ok(inside(changes, off, GRANULE), `bytes at ${off} changed but RCT does not report them`);
  }
  assert.ok(differing > 0);
  return { changes, changedBytes: changes.reduce((n, r) => n + r.length, 0), differing };
}

/** The changed ranges for `id` as a real NBD client sees them through the tidemark:changes context. */
async function changesViaNbd(dev: TrackedDevice, dir: string, id: string): Promise<Range[]> {
  const server = new NbdServer({ exports: [{ name: 'disk', device: dev, changes: dev, readOnly: true }] });
  const sock = join(dir, 'nbd-map.sock');
  await server.listen({ path: sock });
  try {
    // Async: the server lives in this process, so a synchronous spawn would deadlock.
    const out = await execFileP('nbdinfo', ['--json', `--map=tidemark:changes:${id}`, `nbd+unix:///disk?socket=${sock}`]);
    const map = JSON.parse(out.stdout) as Array<{ offset: number; length: number; type: number }>;
    return map.filter((e) => e.type & 1).map((e) => ({ offset: e.offset, length: e.length }));
  } finally {
    await server.close();
  }
}

test('guest writes a filesystem onto a tracked VHDX over Tidemark NBD; files and RCT changes check out', { timeout: 300_000 }, async (t) => {
  if (!(await requireVm(t, 'debugfs', 'qemu-img', 'nbdinfo'))) return;
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
  const id0 = await dev.seal();
  const before0 = await dev.read(0, SIZE);
  assert.ok(before0.subarray(40 * MiB, 42 * MiB).equals(prefill));

  // Boot 1: mkfs, files, zeros (WRITE_ZEROES via detect-zeroes), delete + fstrim (TRIM).
  const boot1 = await serveAndBoot(dev, dir, '1', `
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
  `);
  assert.equal(boot1.guest.results.done, 'yes');
  t.diagnostic(`boot 1 (mkfs, write, trim): ${boot1.guest.durationMs} ms`);

  // The wire: structured replies and base:allocation were negotiated; every data command was sent ...
  const s = boot1.tap.stats;
  assert.deepEqual(s.errors, []);
  assert.equal(s.structuredReplies, true, JSON.stringify(s.options));
  assert.ok(s.metaContexts.includes('base:allocation'), JSON.stringify(s.options));
  for (const cmd of ['READ', 'WRITE', 'FLUSH', 'TRIM', 'WRITE_ZEROES', 'DISC']) {
    assert.ok((s.counts[cmd] ?? 0) > 0, `guest sent no NBD_CMD_${cmd}: ${JSON.stringify(s.counts)}`);
  }
  // ... and the server turned them into device calls.
  const c1 = boot1.counting.counts;
  for (const op of ['read', 'write', 'zero', 'trim', 'flush'] as const) assert.ok(c1[op] > 0, `server made no ${op}() call: ${JSON.stringify(c1)}`);
  t.diagnostic(`NBD commands: ${JSON.stringify(s.counts)}; device calls: ${JSON.stringify(c1)}`);

  const after1 = await dev.read(0, SIZE);
  const r0 = await checkChanges(dev, id0, boot1.counting.mutations, before0, after1);
  t.diagnostic(`id0: ${r0.changes.length} ranges, ${r0.changedBytes} bytes (fstrim of all free space counts)`);

  // Boot 2: a small change after a new ID; the guest reads boot 1's file back through NBD.
  const id1 = await dev.seal();
  const boot2 = await serveAndBoot(dev, dir, '2', `
    mount -t ext2 /dev/vda /mnt
    test "$(cat /mnt/hello.txt)" = "written by the guest over Tidemark NBD"
    result random_sha "$(sha /mnt/data/random.bin)"
    echo "second boot" >> /mnt/hello.txt
    dd if=/dev/urandom of=/mnt/data/more.bin bs=4096 count=25 2>/dev/null
    result more_sha "$(sha /mnt/data/more.bin)"
    sync
    umount /mnt
  `);
  assert.equal(boot2.guest.results.random_sha, boot1.guest.results.random_sha, 'boot 2 reads what boot 1 wrote');
  t.diagnostic(`boot 2 (small write): ${boot2.guest.durationMs} ms`);
  const after2 = await dev.read(0, SIZE);
  const r1 = await checkChanges(dev, id1, boot2.counting.mutations, after1, after2);
  assert.ok(r1.changedBytes <= 4 * MiB, `a 100 KiB write plus metadata changed ${r1.changedBytes} bytes`);
  t.diagnostic(`id1: ${r1.changes.length} ranges, ${r1.changedBytes} bytes; ${r1.differing} 4 KiB granules differ`);
  const allSince0 = await dev.changes(id0);
  for (const r of r1.changes) assert.ok(inside(allSince0, r.offset, r.length), 'changes since id0 include those since id1');

  // The same answers through NBD's tidemark:changes:<ID> context.
  assert.deepEqual(await changesViaNbd(dev, dir, id1), r1.changes.map((r) => ({ offset: r.offset, length: r.length })));
  assert.deepEqual(await changesViaNbd(dev, dir, id0), allSince0.map((r) => ({ offset: r.offset, length: r.length })));

  await dev.close();
  devClosed = true;

  // After a clean close the tracking files give the same answers.
  const handle = await openRctHandle(disk);
  try {
    assert.deepEqual(await handle.changes(id0), allSince0);
    assert.deepEqual(await handle.changes(id1), r1.changes);
  } finally {
    await handle.close();
  }

  // The image: a valid VHDX whose content is what the guest saw.
  run('qemu-img', ['check', '-f', 'vhdx', disk]);
  const raw = join(dir, 'disk.raw');
  await convertDisk(disk, raw, { format: 'raw' });
  const oracle = join(dir, 'oracle.raw');
  run('qemu-img', ['convert', '-f', 'vhdx', '-O', 'raw', disk, oracle]);
  const rawBytes = await readFile(raw);
  assert.ok(rawBytes.equals(await readFile(oracle)), 'Tidemark and qemu-img agree on the VHDX content');
  assert.ok(rawBytes.equals(after2), 'the image holds what the device served');

  assert.equal(debugfsCat(raw, '/hello.txt').toString(), 'written by the guest over Tidemark NBD\nsecond boot\n');
  const random = debugfsCat(raw, '/data/random.bin');
  assert.equal(random.length, 24 * 65536);
  assert.equal(sha256(random), boot1.guest.results.random_sha);
  assert.ok(debugfsCat(raw, '/data/zeros.bin').equals(Buffer.alloc(16 * 65536)));
  assert.equal(sha256(debugfsCat(raw, '/data/more.bin')), boot2.guest.results.more_sha);
  assert.deepEqual(debugfsList(raw, '/').sort(), ['data', 'hello.txt', 'lost+found']);
  assert.deepEqual(debugfsList(raw, '/data').sort(), ['more.bin', 'random.bin', 'zeros.bin']);
});
