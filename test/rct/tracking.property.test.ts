import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import fc from 'fast-check';
import { MemoryDevice } from '../../src/blockdev/MemoryDevice.js';
import { enableTracking } from '../../src/rct/enableTracking.js';
import { openTracked, type TrackedDevice } from '../../src/rct/trackingLayer.js';
import { fcSeed, tempDir } from '../helpers/tools.js';
import { assertMerged, blocksOf, keepOpen } from './rctTestKit.js';

const BS = 4096;
const REGION = 1 << 20;
const SIZE = 6 * REGION + 3 * 512; // a partial last block

type Op =
  | { k: 'write' | 'zero' | 'trim'; offset: number; length: number }
  | { k: 'seal' }
  | { k: 'drop'; pick: number }
  | { k: 'flush' }
  | { k: 'crash' }
  | { k: 'reopen' };

const ioArb = fc.record({
  k: fc.constantFrom('write' as const, 'zero' as const, 'trim' as const),
  offset: fc.integer({ min: 0, max: SIZE - 1 }),
  length: fc.integer({ min: 1, max: 3 * BS + 17 }),
}).map((o) => ({ ...o, length: Math.min(o.length, SIZE - o.offset) }));
const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 8, arbitrary: ioArb },
  { weight: 3, arbitrary: fc.constant({ k: 'seal' as const }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('drop' as const), pick: fc.nat() }) },
  { weight: 1, arbitrary: fc.constant({ k: 'flush' as const }) },
  { weight: 1, arbitrary: fc.constant({ k: 'crash' as const }) },
  { weight: 1, arbitrary: fc.constant({ k: 'reopen' as const }) },
);

interface ModelId {
  id: string;
  touched: Set<number>;
  /** A crash happened while this ID was live: the answer may be a superset. */
  exact: boolean;
}

test('tracking: exact after clean close, a superset after crashes, for random write/zero/trim/seal/drop/crash sequences', async (t) => {
  const dir = await tempDir(t, 'tidemark-rct-prop-');
  let round = 0;
  await fc.assert(
    fc.asyncProperty(fc.array(opArb, { minLength: 1, maxLength: 30 }), async (ops) => {
      const disk = join(dir, `disk${round++}`);
      await writeFile(disk, '');
      await enableTracking(disk, { blockSize: BS, regionSize: REGION });
      const mem = new MemoryDevice(SIZE);
      const opts = { persistIntervalMs: 0 };
      let dev: TrackedDevice = await openTracked(keepOpen(mem), disk, opts);
      const ids: ModelId[] = [];
      const check = async (afterCrash: boolean) => {
        for (let i = 0; i < ids.length; i++) {
          const m = ids[i]!;
          const got = await dev.changes(m.id);
          assertMerged(got);
          const blocks = blocksOf(got, BS);
          for (const b of m.touched) assert.ok(blocks.has(b), `block ${b} written after ${m.id} is missing (afterCrash=${afterCrash})`);
          if (m.exact) assert.deepEqual([...blocks].sort((a, b) => a - b), [...m.touched].sort((a, b) => a - b), `changes since ${m.id} must be exact`);
          // until: the span between two live IDs is exactly the difference of touched sets' growth
          if (i + 1 < ids.length) {
            const span = blocksOf(await dev.changes(m.id, ids[i + 1]!.id), BS);
            for (const b of m.touched) if (!ids[i + 1]!.touched.has(b)) assert.ok(span.has(b), `block ${b} missing from ${m.id}..next`);
          }
        }
      };
      for (const op of ops) {
        switch (op.k) {
          case 'write':
          case 'zero':
          case 'trim': {
            if (op.k === 'write') await dev.write(op.offset, Buffer.alloc(op.length, 0xab));
            else if (op.k === 'zero') await dev.zero(op.offset, op.length);
            else await dev.trim(op.offset, op.length);
            for (let b = Math.floor(op.offset / BS); b * BS < op.offset + op.length; b++) for (const m of ids) m.touched.add(b);
            break;
          }
          case 'seal':
            ids.push({ id: await dev.seal(), touched: new Set(), exact: true });
            break;
          case 'drop': {
            if (ids.length === 0) break;
            const [gone] = ids.splice(op.pick % ids.length, 1);
            await dev.drop(gone!.id);
            break;
          }
          case 'flush':
            await dev.flush();
            break;
          case 'crash':
            await dev.tracker.abandon();
            dev = await openTracked(keepOpen(mem), disk, opts);
            assert.equal(dev.status().verdict, 'recovered');
            for (const m of ids) m.exact = false;
            await check(true);
            break;
          case 'reopen':
            await dev.close();
            dev = await openTracked(keepOpen(mem), disk, opts);
            assert.equal(dev.status().verdict, 'clean');
            await check(false);
            break;
        }
      }
      await dev.close();
      dev = await openTracked(keepOpen(mem), disk, opts);
      await check(false);
      // every live ID is still known; dropped ones are a typed error
      assert.deepEqual(dev.status().liveIds!.map((x) => x.id), ids.map((m) => m.id));
      await dev.close();
    }),
    { seed: fcSeed(), numRuns: 40 },
  );
});
