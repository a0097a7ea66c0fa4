import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { test } from 'node:test';
import { LocalBackend } from '../../src/backend/LocalBackend.js';
import type { BlockDevice } from '../../src/blockdev/BlockDevice.js';
import { MemoryDevice } from '../../src/blockdev/MemoryDevice.js';
import { backupDevice } from '../../src/repo/backupDevice.js';
import { ZERO_DIGEST } from '../../src/repo/constants.js';
import { DiskMismatchError } from '../../src/repo/errors.js';
import { treeDepth } from '../../src/repo/IndexTree.js';
import { listSnapshots, type DiskEntry, type Snapshot } from '../../src/repo/Manifest.js';
import { Repository } from '../../src/repo/Repository.js';
import { restoreDevice } from '../../src/repo/restoreDevice.js';
import { runBackup } from '../../src/repo/runBackup.js';
import { verifyRepository } from '../../src/repo/verifyRepository.js';
import { prune } from '../../src/repo/prune.js';
import { tempDir } from '../helpers/tools.js';
import { deviceHash, flipBlobByte, initRepo, locateBlob, objectNames, recordPublishOrder, rng } from './helpers.js';

const MiB = 1024 * 1024;
const source = { id: 'vm-1', name: 'test vm' };

/** Random changes: writes of random data, zeroing, and copies of existing content. Returns the ranges touched. */
async function mutate(dev: BlockDevice, rand: () => number, n: number): Promise<Array<{ offset: number; length: number }>> {
  const ranges: Array<{ offset: number; length: number }> = [];
  for (let i = 0; i < n; i++) {
    const length = 1 + Math.floor(rand() * 120_000);
    const offset = Math.floor(rand() * (dev.size - length));
    const kind = rand();
    if (kind < 0.6) await dev.write(offset, randomBytes(length));
    else if (kind < 0.8) await dev.zero(offset, length);
    else {
      const from = Math.floor(rand() * (dev.size - length));
      await dev.write(offset, await dev.read(from, length));
    }
    ranges.push({ offset, length });
  }
  return ranges;
}

async function restoreHash(repo: Repository, disk: DiskEntry): Promise<string> {
  const target = new MemoryDevice(disk.size);
  await restoreDevice(repo, disk, target, { concurrency: 4 });
  return deviceHash(target);
}

for (const encrypted of [false, true]) {
  test(`full backup then incrementals from changed ranges: every restore point restores bit-exact (${encrypted ? 'encrypted' : 'plain'})`, async (t) => {
    const backend = new LocalBackend(await tempDir(t));
    const repo = await initRepo(backend, { passphrase: encrypted ? 'pw' : undefined, chunkSize: 16384, fanout: 16 });
    const dev = new MemoryDevice(24 * MiB + 12345); // odd size: a short last chunk
    const rand = rng(encrypted ? 7 : 11);
    await dev.write(0, randomBytes(2 * MiB));
    await dev.write(10 * MiB, randomBytes(MiB + 5));
    await dev.write(dev.size - 5000, randomBytes(5000));

    const points: Array<{ snap: Snapshot; hash: string }> = [];
    let snap = await runBackup(repo, { source, disks: [{ name: 'disk0', device: dev }] });
    points.push({ snap, hash: await deviceHash(dev) });
    for (let i = 0; i < 4; i++) {
      const changedRanges = await mutate(dev, rand, 12);
      snap = await runBackup(repo, { source, parent: snap.id, disks: [{ name: 'disk0', device: dev, previous: snap.disks[0], changedRanges, rctId: `rct-${i}` }] });
      assert.equal(snap.disks[0].rctId, `rct-${i}`);
      assert.ok((snap.stats?.bytesRead ?? 0) < dev.size / 2, 'an incremental reads only the changed chunks');
      points.push({ snap, hash: await deviceHash(dev) });
    }

    const reopened = await Repository.open(backend, { passphrase: encrypted ? 'pw' : undefined });
    const listed = await listSnapshots(reopened);
    assert.deepEqual(new Set(listed.map((s) => s.id)), new Set(points.map((p) => p.snap.id)));
    for (const p of points) assert.equal(await restoreHash(reopened, p.snap.disks[0]), p.hash, `restore point ${p.snap.id}`);

    // A full scan of the final state builds the very same Merkle tree as the incremental chain.
    const full = await backupDevice(reopened, dev, { previous: snap.disks[0] });
    assert.equal(full.disk.indexRoot, snap.disks[0].indexRoot);
    assert.equal(full.stats.chunksWritten, 0, 'everything deduplicates');
    assert.equal(full.stats.pagesWritten, 0);

    const report = await verifyRepository(reopened, { readData: true });
    assert.equal(report.ok, true, JSON.stringify(report.problems));
    assert.equal(report.snapshots, 5);
  });
}

test('a synthetic full (changed ranges whose content is already stored) writes only index pages + manifest', async (t) => {
  const backend = new LocalBackend(await tempDir(t));
  const repo = await initRepo(backend, { chunkSize: 16384, fanout: 8 });
  const dev = new MemoryDevice(16 * MiB);
  const original = randomBytes(MiB);
  await dev.write(4 * MiB, original);
  const s1 = await runBackup(repo, { source, disks: [{ name: 'disk0', device: dev }] });
  await dev.write(4 * MiB + 16384 * 3, randomBytes(16384 * 2)); // change 2 chunks
  const s2 = await runBackup(repo, { source, parent: s1.id, disks: [{ name: 'disk0', device: dev, previous: s1.disks[0], changedRanges: [{ offset: 4 * MiB + 16384 * 3, length: 16384 * 2 }] }] });
  // Revert: the guest writes the old content back; RCT reports the range changed.
  await dev.write(4 * MiB + 16384 * 3, original.subarray(16384 * 3, 16384 * 5));
  const before = { chunks: await objectNames(repo, 'chunks'), index: await objectNames(repo, 'index'), snaps: await objectNames(repo, 'snapshots') };
  const s3 = await runBackup(repo, { source, parent: s2.id, disks: [{ name: 'disk0', device: dev, previous: s2.disks[0], changedRanges: [{ offset: 4 * MiB + 16384 * 3, length: 16384 * 2 }] }] });
  const after = { chunks: await objectNames(repo, 'chunks'), index: await objectNames(repo, 'index'), snaps: await objectNames(repo, 'snapshots') };
  assert.equal(after.chunks.size, before.chunks.size, 'no chunk written');
  assert.equal(after.snaps.size, before.snaps.size + 1, 'one manifest');
  // The reverted tree IS the first tree: every page already exists, nothing new at all.
  assert.equal(s3.disks[0].indexRoot, s1.disks[0].indexRoot);
  assert.equal(after.index.size, before.index.size);
  assert.equal(s3.stats?.chunksWritten, 0);
  assert.equal(await restoreHash(repo, s3.disks[0]), await deviceHash(dev));

  // Copy existing content somewhere new: chunks dedup, only the leaf + path to the root are written.
  await dev.write(12 * MiB, original.subarray(0, 16384));
  const s4 = await runBackup(repo, { source, parent: s3.id, disks: [{ name: 'disk0', device: dev, previous: s3.disks[0], changedRanges: [{ offset: 12 * MiB, length: 16384 }] }] });
  const final = await objectNames(repo, 'index');
  assert.equal(s4.stats?.chunksWritten, 0);
  assert.equal(final.size - after.index.size, treeDepth(s4.disks[0]) + 1);
  assert.equal(s4.stats?.pagesWritten, treeDepth(s4.disks[0]) + 1);
  assert.equal((await objectNames(repo, 'chunks')).size, after.chunks.size);
});

/** A device that fails its Nth read (a crash or an I/O error mid-backup). */
function failingAfter(dev: BlockDevice, reads: number): BlockDevice {
  let n = 0;
  return new Proxy(dev, {
    get(target, prop, receiver) {
      if (prop === 'read') {
        return async (offset: number, length: number) => {
          if (++n > reads) throw new Error('simulated crash mid-backup');
          return target.read(offset, length);
        };
      }
      const v = Reflect.get(target, prop, receiver);
      return typeof v === 'function' ? v.bind(target) : v;
    },
  });
}

test('an interrupted backup leaves no visible snapshot, no lock, and verify passes', async (t) => {
  const backend = new LocalBackend(await tempDir(t));
  // Small packs (64 KiB) so that the interrupted run stores some packs before it fails.
  const repo = await initRepo(backend, { chunkSize: 16384, fanout: 8, packSize: 64 * 1024 });
  const dev = new MemoryDevice(8 * MiB);
  await dev.write(0, randomBytes(MiB));
  const s1 = await runBackup(repo, { source, disks: [{ name: 'disk0', device: dev }] });
  await dev.write(MiB, randomBytes(2 * MiB));
  await assert.rejects(
    runBackup(repo, { source, parent: s1.id, disks: [{ name: 'disk0', device: failingAfter(dev, 3), previous: s1.disks[0], changedRanges: [{ offset: MiB, length: 2 * MiB }] }] }),
    /simulated crash/,
  );
  assert.deepEqual([...(await objectNames(repo, 'snapshots'))], [s1.id]);
  const locks = [];
  for await (const l of backend.list('locks')) locks.push(l);
  assert.deepEqual(locks, [], 'the shared lock was released');
  // 64 chunks from s1; the failed run read 3 units of 32 chunks (READ_UNIT_CHUNKS) and stored most of them.
  assert.ok((await objectNames(repo, 'chunks')).size > 64 + 50, 'garbage from the interrupted run exists');
  const report = await verifyRepository(repo, { readData: true });
  assert.equal(report.ok, true);
  // prune (no grace) removes exactly the interrupted run's blobs; s1 still restores.
  const pr = await prune(repo, { graceMs: 0 });
  assert.equal((await objectNames(repo, 'chunks')).size, 64);
  assert.ok(pr.removedChunks > 50 && pr.removedPacks > 0, JSON.stringify(pr));
  assert.equal((await verifyRepository(repo, { readData: true })).ok, true);
  // The next backup completes and restores.
  const s2 = await runBackup(repo, { source, parent: s1.id, disks: [{ name: 'disk0', device: dev, previous: s1.disks[0], changedRanges: [{ offset: MiB, length: 2 * MiB }] }] });
  assert.equal(await restoreHash(repo, s2.disks[0]), await deviceHash(dev));
});

async function flipByte(path: string, at: number): Promise<void> {
  const b = await readFile(path);
  b[Math.min(at, b.length - 1)] ^= 0x5a;
  await writeFile(path, b);
}

test('verify names a flipped chunk, index page and manifest, and the snapshots each affects', async (t) => {
  const backend = new LocalBackend(await tempDir(t));
  const repo = await initRepo(backend, { chunkSize: 16384, fanout: 4 });
  const dev = new MemoryDevice(4 * MiB);
  await dev.write(0, randomBytes(MiB));
  const s1 = await runBackup(repo, { source, disks: [{ name: 'disk0', device: dev }] });
  await dev.write(2 * MiB, randomBytes(16384));
  const s2 = await runBackup(repo, { source, parent: s1.id, disks: [{ name: 'disk0', device: dev, previous: s1.disks[0], changedRanges: [{ offset: 2 * MiB, length: 16384 }] }] });
  await dev.write(3 * MiB, randomBytes(16384));
  const s3 = await runBackup(repo, { source, parent: s2.id, disks: [{ name: 'disk0', device: dev, previous: s2.disks[0], changedRanges: [{ offset: 3 * MiB, length: 16384 }] }] });
  assert.equal((await verifyRepository(repo, { readData: true })).ok, true);

  const { IndexTree } = await import('../../src/repo/IndexTree.js');
  const shared = await IndexTree.open(repo, s1.disks[0]).lookup(0); // in all three
  const onlyLater = await IndexTree.open(repo, s2.disks[0]).lookup((2 * MiB) / 16384); // in s2 and s3
  await flipBlobByte(repo, 'chunks', shared, 40);
  await flipBlobByte(repo, 'chunks', onlyLater, 40);
  // The root page of s3 is only in s3.
  await flipBlobByte(repo, 'index', s3.disks[0].indexRoot, 30);
  const s4 = await runBackup(repo, { source: { id: 'other', name: 'x' }, disks: [{ name: 'd', device: new MemoryDevice(MiB) }] });
  await flipByte(backend.path('snapshots', s4.id), 25);

  const quick = await verifyRepository(repo);
  const deep = await verifyRepository(repo, { readData: true });
  assert.equal(deep.ok, false);
  const byName = new Map(deep.problems.map((p) => [`${p.type}/${p.name}`, p]));
  assert.deepEqual(byName.get(`chunks/${shared}`)?.snapshots.sort(), [s1.id, s2.id].sort(), 's3 reaches it only through its damaged root, which is reported instead');
  assert.deepEqual(byName.get(`chunks/${onlyLater}`)?.snapshots, [s2.id]);
  assert.deepEqual(byName.get(`index/${s3.disks[0].indexRoot}`)?.snapshots, [s3.id]);
  assert.equal(byName.get(`index/${s3.disks[0].indexRoot}`)?.problem, 'corrupt');
  assert.deepEqual(byName.get(`snapshots/${s4.id}`)?.snapshots, [s4.id]);
  assert.equal(deep.problems.length, 4);
  // Without readData, chunk corruption is not seen but page and manifest damage is.
  assert.deepEqual(quick.problems.map((p) => p.type).sort(), ['index', 'snapshots']);

  // A missing chunk is reported as missing even without reading data: s2's data pack holds only it
  // (index pages go to separate packs).
  const lost = await locateBlob(repo, 'chunks', onlyLater);
  await backend.remove('packs', lost.pack);
  const q2 = await verifyRepository(repo);
  assert.equal(q2.problems.find((p) => p.name === onlyLater)?.problem, 'missing');
  // Restoring a damaged point fails loudly, naming the object.
  await assert.rejects(restoreDevice(repo, s1.disks[0], new MemoryDevice(4 * MiB)), (e: Error) => e.message.includes(shared));
});

test('restore: zeroFill clears a used target; a too-small target is refused', async () => {
  const { MemoryBackend } = await import('../../src/backend/MemoryBackend.js');
  const repo = await initRepo(new MemoryBackend(), { chunkSize: 4096, fanout: 8 });
  const dev = new MemoryDevice(MiB);
  await dev.write(100_000, randomBytes(50_000));
  const { disk } = await backupDevice(repo, dev);
  const target = new MemoryDevice(MiB);
  await target.write(0, Buffer.alloc(MiB, 0xee));
  await restoreDevice(repo, disk, target, { zeroFill: true });
  assert.equal(await deviceHash(target), await deviceHash(dev));
  await assert.rejects(restoreDevice(repo, disk, new MemoryDevice(MiB - 512)), DiskMismatchError);
  const empty = await backupDevice(repo, new MemoryDevice(10 * MiB));
  assert.equal(empty.disk.indexRoot, ZERO_DIGEST);
});

test('backupDevice rejects changed ranges without a previous entry, outside the disk, or across a resize', async () => {
  const { MemoryBackend } = await import('../../src/backend/MemoryBackend.js');
  const repo = await initRepo(new MemoryBackend());
  const dev = new MemoryDevice(MiB);
  await assert.rejects(backupDevice(repo, dev, { changedRanges: [] }), /needs the previous disk entry/);
  const { disk } = await backupDevice(repo, dev);
  await assert.rejects(backupDevice(repo, dev, { previous: disk, changedRanges: [{ offset: MiB - 10, length: 11 }] }), DiskMismatchError);
  await assert.rejects(backupDevice(repo, new MemoryDevice(2 * MiB), { previous: disk, changedRanges: [] }), /resized disk needs a full backup/);
});

test('backupDevice reports progress and stops on abort', async () => {
  const { MemoryBackend } = await import('../../src/backend/MemoryBackend.js');
  const repo = await initRepo(new MemoryBackend(), { chunkSize: 4096 });
  const dev = new MemoryDevice(MiB);
  await dev.write(0, randomBytes(MiB));
  const seen: number[] = [];
  const r = await backupDevice(repo, dev, { onProgress: (p) => seen.push(p.chunksDone) });
  assert.equal(seen.length, 256);
  assert.equal(seen[255], 256);
  assert.equal(r.stats.bytesRead, MiB);
  const ac = new AbortController();
  await assert.rejects(
    backupDevice(repo, dev, { signal: ac.signal, onProgress: (p) => p.chunksDone === 10 && ac.abort(new Error('user cancelled')) }),
    /user cancelled/,
  );
});

test('a backup aborted while its last packs are flushed publishes no manifest; the manifest is linked only after packs and pack index (LocalBackend putAfter)', async (t) => {
  const backend = new LocalBackend(await tempDir(t));
  const repo = await initRepo(backend, { chunkSize: 16384, fanout: 8 });
  const dev = new MemoryDevice(2 * MiB);
  await dev.write(0, randomBytes(MiB));
  // Aborted once the flush is under way: the signal fires as the last pack is being published.
  const ac = new AbortController();
  let abortAtPack = true;
  const order = recordPublishOrder(backend, (type) => {
    if (abortAtPack && type === 'packs') ac.abort(new Error('user cancelled during the flush'));
  });
  await assert.rejects(runBackup(repo, { source: { id: 's', name: 's' }, disks: [{ name: 'd', device: dev }], signal: ac.signal }), /user cancelled during the flush/);
  assert.deepEqual(await listSnapshots(repo), [], 'no restore point');
  assert.ok(!order.includes('snapshots'), 'no manifest published');
  const leftovers = [];
  for await (const n of backend.list('snapshots')) leftovers.push(n);
  assert.deepEqual(leftovers, []);
  // Not aborted: the manifest is the last object published.
  abortAtPack = false;
  order.length = 0;
  await dev.write(0, randomBytes(MiB)); // new content: new packs
  const s = await runBackup(repo, { source: { id: 's', name: 's' }, disks: [{ name: 'd', device: dev }] });
  assert.equal(order[order.length - 1], 'snapshots', order.join(','));
  assert.ok(order.includes('packs') && order.indexOf('packindex') < order.indexOf('snapshots'));
  assert.deepEqual((await listSnapshots(repo)).map((x) => x.id), [s.id]);
});
