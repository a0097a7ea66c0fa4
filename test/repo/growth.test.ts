/**
 * The repository's cost model, measured: small changes must cost little.
 * (Byte counts are the stored object sizes, identical on every backend; MemoryBackend keeps it quick.)
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import type { Backend } from '../../src/backend/Backend.js';
import { MemoryBackend } from '../../src/backend/MemoryBackend.js';
import { MemoryDevice } from '../../src/blockdev/MemoryDevice.js';
import { ZERO_DIGEST } from '../../src/repo/constants.js';
import { treeDepth } from '../../src/repo/IndexTree.js';
import type { DiskEntry } from '../../src/repo/Manifest.js';
import { restoreDevice } from '../../src/repo/restoreDevice.js';
import { runBackup } from '../../src/repo/runBackup.js';
import { initRepo, rng, sameContent } from './helpers.js';
import { ObjectKind } from '../../src/repo/constants.js';
import { PackStore } from '../../src/repo/PackStore.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;
const TiB = 1024 * GiB;
const source = { id: 'vm', name: 'vm' };

/**
 * Stored bytes: `chunks` = data packs (whole files: blobs + header + trailer), `index` = index-page packs
 * plus the pack index objects, `snapshots` = manifests.
 */
async function totals(b: Backend): Promise<Record<'chunks' | 'index' | 'snapshots', number>> {
  const out = { chunks: 0, index: 0, snapshots: 0 };
  const store = new PackStore(b, null);
  await store.ensureLoaded();
  for await (const n of b.list('packs')) {
    const size = (await b.stat('packs', n)).size;
    if (store.indexedPacks.get(n)?.[0]?.kind === ObjectKind.indexPage) out.index += size;
    else out.chunks += size;
  }
  for await (const n of b.list('packindex')) out.index += (await b.stat('packindex', n)).size;
  for await (const n of b.list('snapshots')) out.snapshots += (await b.stat('snapshots', n)).size;
  return out;
}

/** RCT reports changes in 64 KiB blocks: widen a write to the blocks it touches. */
function rctBlocks(offset: number, length: number, block = 64 * KiB): { offset: number; length: number } {
  const start = Math.floor(offset / block) * block;
  return { offset: start, length: Math.ceil((offset + length) / block) * block - start };
}

test('655 scattered 64 KiB writes on a sparse 4 GiB disk grow the repository by <= 2x the changed bytes', async () => {
  const backend = new MemoryBackend();
  const repo = await initRepo(backend);
  const dev = new MemoryDevice(4 * GiB);
  const rand = rng(655);
  for (let i = 0; i < 32; i++) await dev.write(Math.floor(rand() * 4000) * MiB, randomBytes(MiB)); // some existing data
  const s1 = await runBackup(repo, { source, disks: [{ name: 'disk0', device: dev }] });

  const changed: Array<{ offset: number; length: number }> = [];
  for (let i = 0; i < 655; i++) {
    const offset = Math.floor(rand() * (4 * GiB / (4 * KiB) - 16)) * 4 * KiB; // 4 KiB aligned, like a guest filesystem
    await dev.write(offset, randomBytes(64 * KiB));
    changed.push(rctBlocks(offset, 64 * KiB));
  }
  const before = await totals(backend);
  const s2 = await runBackup(repo, { source, parent: s1.id, disks: [{ name: 'disk0', device: dev, previous: s1.disks[0], changedRanges: changed }] });
  const after = await totals(backend);
  const changedBytes = 655 * 64 * KiB;
  const growth = after.chunks + after.index + after.snapshots - (before.chunks + before.index + before.snapshots);
  const ratio = growth / changedBytes;
  console.log(`655 x 64 KiB writes: changed ${changedBytes} B, repository grew ${growth} B (chunks ${after.chunks - before.chunks}, index ${after.index - before.index}, manifest ${after.snapshots - before.snapshots}) = ${ratio.toFixed(2)}x`);
  assert.ok(ratio <= 2, `growth ${ratio.toFixed(2)}x exceeds 2x`);
  assert.ok(ratio >= 1, 'random data cannot be stored in less than its size');

  const target = new MemoryDevice(4 * GiB);
  await restoreDevice(repo, s2.disks[0], target);
  assert.ok(await sameContent(target, dev), 'restores bit-exact');
});

test('scattered 64 KiB writes over DENSE data (no zeros to compress away) still grow <= 2x', async () => {
  const backend = new MemoryBackend();
  const repo = await initRepo(backend);
  const C = repo.config.chunkSize;
  const dev = new MemoryDevice(4 * GiB);
  const rand = rng(1655);
  const offsets = Array.from({ length: 160 }, () => Math.floor(rand() * (4 * GiB / (4 * KiB) - 64)) * 4 * KiB);
  // Fill every chunk the writes will touch with random data first, so no chunk has free zeros.
  for (const o of offsets) {
    const start = Math.floor(o / C) * C;
    await dev.write(start, randomBytes(Math.ceil((o + 64 * KiB) / C) * C - start));
  }
  const s1 = await runBackup(repo, { source, disks: [{ name: 'disk0', device: dev }] });
  for (const o of offsets) await dev.write(o, randomBytes(64 * KiB));
  const before = await totals(backend);
  await runBackup(repo, { source, parent: s1.id, disks: [{ name: 'disk0', device: dev, previous: s1.disks[0], changedRanges: offsets.map((o) => rctBlocks(o, 64 * KiB)) }] });
  const after = await totals(backend);
  const ratio = (after.chunks + after.index + after.snapshots - before.chunks - before.index - before.snapshots) / (offsets.length * 64 * KiB);
  console.log(`dense: ${offsets.length} x 64 KiB writes at 4 KiB alignment, ${C / KiB} KiB chunks: ${ratio.toFixed(2)}x`);
  assert.ok(ratio <= 2, `growth ${ratio.toFixed(2)}x exceeds 2x`);
});

test('a tiny change on a huge sparse disk (4 TiB) writes KiBs of metadata: one leaf + its path + the manifest', async () => {
  const backend = new MemoryBackend();
  const repo = await initRepo(backend);
  const size = 4 * TiB;
  const dev = new MemoryDevice(size);
  const empty: DiskEntry = { name: 'disk0', size, chunkSize: repo.config.chunkSize, fanout: repo.config.fanout, indexRoot: ZERO_DIGEST };
  const writes = [0, 1 * TiB + 12345, 2 * TiB + 7, 3 * TiB, size - MiB].map((offset) => ({ offset, length: MiB }));
  for (const w of writes) await dev.write(w.offset, randomBytes(w.length));
  const s1 = await runBackup(repo, { source, disks: [{ name: 'disk0', device: dev, previous: empty, changedRanges: writes }] });
  const t1 = await totals(backend);
  assert.ok(t1.index < 200 * KiB, `first backup of 5 MiB on 4 TiB wrote ${t1.index} B of index`);

  await dev.write(2 * TiB + 100 * MiB, Buffer.from('a tiny change'));
  const s2 = await runBackup(repo, { source, parent: s1.id, disks: [{ name: 'disk0', device: dev, previous: s1.disks[0], changedRanges: [{ offset: 2 * TiB + 100 * MiB, length: 13 }] }] });
  const t2 = await totals(backend);
  const meta = t2.index - t1.index + (t2.snapshots - t1.snapshots);
  console.log(`tiny change on 4 TiB: ${t2.chunks - t1.chunks} B chunk, ${t2.index - t1.index} B index (${s2.stats?.pagesWritten} pages), ${t2.snapshots - t1.snapshots} B manifest`);
  assert.equal(s2.stats?.pagesWritten, treeDepth(s2.disks[0]) + 1);
  assert.ok(meta < 64 * KiB, `metadata ${meta} B for a 13-byte change`);

  // Reading back the changed chunk through the tree works at 4 TiB offsets.
  const { IndexTree } = await import('../../src/repo/IndexTree.js');
  const tree = IndexTree.open(repo, s2.disks[0]);
  const idx = Math.floor((2 * TiB + 100 * MiB) / repo.config.chunkSize);
  const chunk = await repo.getChunk(await tree.lookup(idx));
  const off = (2 * TiB + 100 * MiB) % repo.config.chunkSize;
  assert.equal(chunk.subarray(off, off + 13).toString(), 'a tiny change');
  assert.equal(await tree.lookup(idx + 1), ZERO_DIGEST);
});

test('a full scan of a sparse 256 GiB disk reads only allocated data and writes index proportional to it', async () => {
  const backend = new MemoryBackend();
  const repo = await initRepo(backend);
  const dev = new MemoryDevice(256 * GiB);
  for (let i = 0; i < 8; i++) await dev.write(i * 32 * GiB + 5 * MiB, randomBytes(512 * KiB));
  const s = await runBackup(repo, { source, disks: [{ name: 'disk0', device: dev }] });
  const t = await totals(backend);
  assert.ok((s.stats?.bytesRead ?? 0) <= 8 * (512 * KiB + 128 * KiB), `read ${s.stats?.bytesRead}`);
  assert.ok(t.index < 256 * KiB, `index ${t.index} B for 4 MiB of data on 256 GiB`);
});
