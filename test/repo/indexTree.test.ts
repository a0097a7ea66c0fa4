import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import fc from 'fast-check';
import { MemoryBackend } from '../../src/backend/MemoryBackend.js';
import { ZERO_DIGEST } from '../../src/repo/constants.js';
import { CorruptObjectError } from '../../src/repo/errors.js';
import { IndexTree, IndexWriter, treeDepth, type IndexRef } from '../../src/repo/IndexTree.js';
import { fcSeed } from '../helpers/tools.js';
import { flipBlobByte, initRepo } from './helpers.js';

const dig = (i: number) => (i === 0 ? ZERO_DIGEST : i.toString(16).padStart(64, 'a'));

test('tree depth follows fanout^(depth+1) >= chunks', () => {
  assert.equal(treeDepth({ size: 0, chunkSize: 4096, fanout: 4 }), 0);
  assert.equal(treeDepth({ size: 4 * 4096, chunkSize: 4096, fanout: 4 }), 0);
  assert.equal(treeDepth({ size: 4 * 4096 + 1, chunkSize: 4096, fanout: 4 }), 1);
  assert.equal(treeDepth({ size: 2 ** 40, chunkSize: 32768, fanout: 512 }), 2);
  assert.equal(treeDepth({ size: 2 ** 53 - 1, chunkSize: 4096, fanout: 2 }), 40);
});

test('IndexTree.update matches a model map through random update sequences (property)', async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.integer({ min: 1, max: 300 }),
      fc.array(fc.array(fc.tuple(fc.nat(299), fc.integer({ min: 0, max: 5 })), { maxLength: 40 }), { minLength: 1, maxLength: 5 }),
      async (nChunks, batches) => {
        const repo = await initRepo(new MemoryBackend());
        const ref: IndexRef = { size: nChunks * 4096 - 7, chunkSize: 4096, fanout: 4, indexRoot: ZERO_DIGEST };
        const model = new Map<number, string>();
        for (const batch of batches) {
          const changes = new Map<number, string>();
          for (const [i, v] of batch) if (i < nChunks) changes.set(i, dig(v));
          const r = await IndexTree.update(repo, ref, changes);
          for (const [i, v] of changes) model.set(i, v);
          ref.indexRoot = r.root;
          const tree = IndexTree.open(repo, ref);
          const expected = [...model].filter(([, v]) => v !== ZERO_DIGEST).sort((a, b) => a[0] - b[0]);
          const got: Array<[number, string]> = [];
          for await (const e of tree.entries()) got.push([e.index, e.digest]);
          assert.deepEqual(got, expected);
          for (let i = 0; i < nChunks; i += 7) assert.equal(await tree.lookup(i), model.get(i) ?? ZERO_DIGEST);
          if (expected.length === 0) assert.equal(r.root, ZERO_DIGEST, 'an all-zero disk has no pages');
          // Only changed leaves plus their paths are written.
          const leaves = new Set([...changes.keys()].map((i) => Math.floor(i / 4)));
          assert.ok(r.pagesWritten <= leaves.size * (tree.depth + 1), `${r.pagesWritten} pages for ${leaves.size} leaves`);
        }
      },
    ),
    { seed: fcSeed(), numRuns: 60 },
  );
});

test('an update equal to the base writes nothing and keeps the root', async () => {
  const repo = await initRepo(new MemoryBackend());
  const ref: IndexRef = { size: 1000 * 4096, chunkSize: 4096, fanout: 8, indexRoot: ZERO_DIGEST };
  const all = new Map(Array.from({ length: 1000 }, (_, i) => [i, dig(i + 1)] as [number, string]));
  const full = await IndexTree.update(repo, ref, all);
  assert.ok(full.pagesWritten > 125);
  const same = await IndexTree.update(repo, { ...ref, indexRoot: full.root }, new Map([[5, dig(6)], [999, dig(1000)]]));
  assert.equal(same.root, full.root);
  assert.equal(same.pagesWritten, 0);
  const one = await IndexTree.update(repo, { ...ref, indexRoot: full.root }, new Map([[500, dig(77777)]]));
  assert.equal(one.pagesWritten, treeDepth(ref) + 1, 'one leaf + its path to the root');
});

test('IndexWriter refuses out-of-order or out-of-range chunks', async () => {
  const repo = await initRepo(new MemoryBackend());
  const w = new IndexWriter(repo, { size: 10 * 4096, chunkSize: 4096, fanout: 4 });
  await w.set(3, dig(1));
  await assert.rejects(w.set(3, dig(2)), RangeError);
  await assert.rejects(w.set(1, dig(2)), RangeError);
  await assert.rejects(w.set(10, dig(2)), RangeError);
  await assert.rejects(w.set(4, 'nothex'), TypeError);
});

test('a damaged index page is CorruptObjectError naming the page', async () => {
  const backend = new MemoryBackend();
  const repo = await initRepo(backend);
  const ref: IndexRef = { size: 64 * 4096, chunkSize: 4096, fanout: 4, indexRoot: ZERO_DIGEST };
  const r = await IndexTree.update(repo, ref, new Map([[0, randomBytes(32).toString('hex')], [63, randomBytes(32).toString('hex')]]));
  await repo.flush();
  await flipBlobByte(repo, 'index', r.root, 20);
  await assert.rejects(IndexTree.open(repo, { ...ref, indexRoot: r.root }).lookup(63), (e) => e instanceof CorruptObjectError && e.type === 'index' && e.objectName === r.root);
});

/** Chunk indexes -> sorted half-open intervals (what backupDevice hands the prefetcher). */
function intervalsOf(indexes: number[]): Array<{ start: number; end: number }> {
  const out: Array<{ start: number; end: number }> = [];
  for (const i of [...new Set(indexes)].sort((a, b) => a - b)) {
    const last = out[out.length - 1];
    if (last && last.end === i) last.end++;
    else out.push({ start: i, end: i + 1 });
  }
  return out;
}

test('IndexWriter.prefetch: the same tree as without it, base pages read in a few coalesced reads (property)', async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.integer({ min: 1, max: 2000 }),
      fc.array(fc.tuple(fc.nat(1999), fc.integer({ min: 0, max: 9 })), { maxLength: 120 }),
      async (nChunks, picks) => {
        const backend = new MemoryBackend();
        const repo = await initRepo(backend, { packSize: 256 * 1024 });
        const ref: IndexRef = { size: nChunks * 4096, chunkSize: 4096, fanout: 4, indexRoot: ZERO_DIGEST };
        const base = await IndexTree.update(repo, ref, new Map(Array.from({ length: nChunks }, (_, i) => [i, dig((i % 97) + 1)] as [number, string])));
        await repo.flush(); // base pages in packs: the prefetcher reads them through getIndexPages
        const changes = new Map<number, string>();
        for (const [i, v] of picks) if (i < nChunks) changes.set(i, dig(v * 1000 + 1));
        const plain = await IndexTree.update(repo, { ...ref, indexRoot: base.root }, changes);
        // Same changes through a prefetching writer, counting ranged reads of packs.
        let ranged = 0;
        const getRange = backend.getRange.bind(backend);
        backend.getRange = (...a) => (ranged++, getRange(...a));
        const w = new IndexWriter(repo, ref, base.root);
        const order = [...changes.keys()].sort((a, b) => a - b);
        w.prefetch(intervalsOf(order));
        for (const i of order) await w.set(i, changes.get(i)!);
        const pre = await w.finish();
        backend.getRange = getRange;
        assert.equal(pre.root, plain.root, 'prefetching changes nothing in the result');
        const leaves = new Set(order.map((i) => Math.floor(i / 4))).size;
        if (leaves > 20) assert.ok(ranged < leaves / 2, `${ranged} ranged reads for ${leaves} leaves`);
        await repo.close();
      },
    ),
    { seed: fcSeed(), numRuns: 25 },
  );
});

test('IndexWriter.prefetch: a damaged base leaf fails the set that needs it, naming the page, its pack and offset', async () => {
  const repo = await initRepo(new MemoryBackend());
  const ref: IndexRef = { size: 64 * 4096, chunkSize: 4096, fanout: 4, indexRoot: ZERO_DIGEST };
  const base = await IndexTree.update(repo, ref, new Map(Array.from({ length: 64 }, (_, i) => [i, dig(i + 1)] as [number, string])));
  await repo.flush();
  const tree = IndexTree.open(repo, { ...ref, indexRoot: base.root });
  // The leaf holding chunk 40: walk the path to find its digest.
  let leafDigest = '';
  for await (const p of tree.pages()) if (p.level === 0 && p.first === 40) leafDigest = p.digest;
  assert.ok(leafDigest);
  const loc = await flipBlobByte(repo, 'index', leafDigest, 20);
  const w = new IndexWriter(repo, ref, base.root);
  w.prefetch([{ start: 1, end: 2 }, { start: 41, end: 42 }]);
  await w.set(1, dig(500)); // an intact leaf
  await assert.rejects(w.set(41, dig(501)), (e) => e instanceof CorruptObjectError && e.objectName === leafDigest && e.data.pack === loc.pack && e.data.offset === loc.offset);
});
