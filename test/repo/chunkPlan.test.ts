import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { chunkIndexes, chunksCovering, readUnits } from '../../src/repo/chunkPlan.js';
import { fcSeed } from '../helpers/tools.js';

test('readUnits cuts intervals into units of at most n chunks covering exactly the same chunks in order (property)', () => {
  fc.assert(
    fc.property(
      fc.array(fc.record({ offset: fc.nat(1 << 24), length: fc.nat(1 << 20) }), { maxLength: 30 }),
      fc.integer({ min: 1, max: 40 }),
      (ranges, n) => {
        const size = (1 << 24) + (1 << 20);
        const intervals = chunksCovering(ranges, size, 32768);
        const units = [...readUnits(intervals, n)];
        const fromUnits: number[] = [];
        for (const u of units) {
          assert.ok(u.end > u.start && u.end - u.start <= n, `unit ${u.start}-${u.end} for n=${n}`);
          assert.ok(intervals.some((iv) => iv.start <= u.start && u.end <= iv.end), 'a unit never spans a gap between intervals');
          for (let i = u.start; i < u.end; i++) fromUnits.push(i);
        }
        assert.deepEqual(fromUnits, [...chunkIndexes(intervals)]);
      },
    ),
    { seed: fcSeed(), numRuns: 300 },
  );
});
