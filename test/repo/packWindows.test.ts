import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { packWindows } from '../../src/repo/packWindows.js';
import type { BlobLocation } from '../../src/repo/PackStore.js';
import { fcSeed } from '../helpers/tools.js';

test('packWindows: every blob once, sorted, each window one pack, in order, within gap/span/count (property)', () => {
  const loc = fc.record({ pack: fc.constantFrom('aa', 'bb', 'cc'), offset: fc.nat(1 << 20), length: fc.integer({ min: 1, max: 1 << 16 }) });
  fc.assert(
    fc.property(fc.array(loc, { maxLength: 80 }), fc.nat(1 << 17), fc.integer({ min: 1, max: 1 << 19 }), fc.integer({ min: 1, max: 10 }), (raw, gap, span, maxBlobs) => {
      const items: BlobLocation[] = raw.map((r, i) => ({ ...r, kind: 1, digest: String(i) }));
      const windows = packWindows(items, (l) => l, { gap, span, maxBlobs });
      assert.deepEqual(windows.flat().map((l) => l.digest).sort(), items.map((l) => l.digest).sort(), 'every blob exactly once');
      const flat = windows.flat();
      for (let i = 1; i < flat.length; i++) assert.ok(flat[i - 1].pack < flat[i].pack || (flat[i - 1].pack === flat[i].pack && flat[i - 1].offset <= flat[i].offset), 'sorted by (pack, offset)');
      for (const w of windows) {
        assert.ok(w.length >= 1 && w.length <= maxBlobs);
        for (let i = 1; i < w.length; i++) {
          const prevEnd = w[i - 1].offset + w[i - 1].length;
          assert.equal(w[i].pack, w[0].pack);
          assert.ok(w[i].offset >= prevEnd && w[i].offset - prevEnd <= gap, 'no overlap, gap bounded');
        }
        if (w.length > 1) assert.ok(w[w.length - 1].offset + w[w.length - 1].length - w[0].offset <= span, 'span bounded');
      }
    }),
    { seed: fcSeed(), numRuns: 300 },
  );
});
