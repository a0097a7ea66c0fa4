/**
 * Model-based tests of the index views: SnapshotDevice (read, extents) and diffDisks against brute
 * force on the device content, with a tiny fanout so that trees are deep and sizes differ in depth.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { MemoryBackend } from '../../src/backend/MemoryBackend.js';
import { MemoryDevice } from '../../src/blockdev/MemoryDevice.js';
import { diffDisks } from '../../src/backup/diffSnapshots.js';
import { SnapshotDevice } from '../../src/backup/SnapshotDevice.js';
import { backupDevice } from '../../src/repo/backupDevice.js';
import { Repository } from '../../src/repo/Repository.js';
import { fcSeed } from '../helpers/tools.js';

const CS = 4096;
const FANOUT = 4;

const writesArb = (maxChunks: number) =>
  fc.array(fc.record({ chunk: fc.nat({ max: maxChunks - 1 }), fill: fc.integer({ min: 0, max: 3 }), partial: fc.boolean() }), { maxLength: 12 });

async function deviceWith(size: number, writes: Array<{ chunk: number; fill: number; partial: boolean }>): Promise<MemoryDevice> {
  const dev = new MemoryDevice(size);
  for (const w of writes) {
    const off = w.chunk * CS;
    if (off >= size) continue;
    const len = Math.min(w.partial ? 100 : CS, size - off);
    await dev.write(off, Buffer.alloc(len, w.fill)); // fill 0 writes zeros: a zero chunk
  }
  return dev;
}

test('SnapshotDevice reads and maps exactly what was backed up', async () => {
  await fc.assert(
    fc.asyncProperty(fc.integer({ min: 1, max: 90 }), fc.integer({ min: 0, max: CS - 1 }), writesArb(90), async (chunks, tail, writes) => {
      const size = Math.max(1, (chunks - 1) * CS + tail);
      const repo = await Repository.init(new MemoryBackend(), { chunkSize: CS, fanout: FANOUT });
      const dev = await deviceWith(size, writes);
      const { disk } = await backupDevice(repo, dev);
      const snap = new SnapshotDevice(repo, disk, { cacheChunks: 3 });
      assert.ok((await snap.read(0, size)).equals(await dev.read(0, size)));
      const off = Math.floor(size / 3);
      const len = Math.floor(size / 2);
      assert.ok((await snap.read(off, len)).equals(await dev.read(off, len)));
      const ext = await snap.extents(0, size);
      let pos = 0;
      for (const e of ext) {
        assert.equal(e.offset, pos);
        pos += e.length;
        const content = await dev.read(e.offset, e.length);
        if (e.type === 'hole') assert.ok(content.every((b) => b === 0), 'a hole reads as zeros');
      }
      assert.equal(pos, size);
      const sub = await snap.extents(off, len);
      assert.equal(sub[0]?.offset ?? off, off);
      assert.equal(sub.reduce((n, e) => n + e.length, 0), len);
    }),
    { seed: fcSeed(), numRuns: 40 },
  );
});

test('diffDisks names exactly the chunks whose content differs, across sizes of different depth', async () => {
  await fc.assert(
    fc.asyncProperty(fc.integer({ min: 1, max: 70 }), fc.integer({ min: 1, max: 70 }), writesArb(70), writesArb(70), async (ca, cb, wa, wb) => {
      const repo = await Repository.init(new MemoryBackend(), { chunkSize: CS, fanout: FANOUT });
      const [sa, sb] = [ca * CS, cb * CS];
      const da = await deviceWith(sa, wa);
      const db = await deviceWith(sb, [...wa, ...wb]);
      const a = (await backupDevice(repo, da)).disk;
      const b = (await backupDevice(repo, db)).disk;
      const d = await diffDisks(repo, a, b);
      const size = Math.max(sa, sb);
      const expected: number[] = [];
      for (let i = 0; i * CS < size; i++) {
        const x = i * CS < sa ? await da.read(i * CS, CS) : Buffer.alloc(CS);
        const y = i * CS < sb ? await db.read(i * CS, CS) : Buffer.alloc(CS);
        if (!x.equals(y)) expected.push(i);
      }
      const got: number[] = [];
      for (const r of d.ranges) for (let o = r.offset; o < r.offset + r.length; o += CS) got.push(o / CS);
      assert.deepEqual(got, expected);
      assert.equal(d.changedChunks, expected.length);
    }),
    { seed: fcSeed(), numRuns: 60 },
  );
});
