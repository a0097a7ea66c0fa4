import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { CorruptError } from '../../src/errors.js';
import { PAGE_BITS, PAGE_BYTES } from '../../src/rct/constants.js';
import { decodeMrt, encodeMrtSlot, mrtSlotSize } from '../../src/rct/mrtCodec.js';
import { decodeRct, encodeRct, type RctFileState } from '../../src/rct/rctCodec.js';
import { formatRctId, parseRctId } from '../../src/rct/RctId.js';
import { SparseBitmap } from '../../src/rct/SparseBitmap.js';
import { fcSeed } from '../helpers/tools.js';

test('SparseBitmap: runs over several maps equal the naive union, across page boundaries', () => {
  const span = 3 * PAGE_BITS;
  const rangeArb = fc.tuple(fc.integer({ min: 0, max: span - 1 }), fc.integer({ min: 1, max: 20000 }));
  fc.assert(
    fc.property(fc.array(fc.array(rangeArb, { maxLength: 6 }), { minLength: 1, maxLength: 3 }), fc.integer({ min: 0, max: span }), fc.integer({ min: 0, max: span }), (maps, a, b) => {
      const [from, to] = a <= b ? [a, b] : [b, a];
      const naive = new Uint8Array(span + 20000);
      const bms = maps.map((ranges) => {
        const bm = new SparseBitmap();
        for (const [s, n] of ranges) {
          bm.setRange(s, s + n);
          naive.fill(1, s, s + n);
        }
        return bm;
      });
      const want: Array<[number, number]> = [];
      for (let i = from; i < to; i++) {
        if (!naive[i]) continue;
        const last = want[want.length - 1];
        if (last && last[1] === i) last[1] = i + 1;
        else want.push([i, i + 1]);
      }
      assert.deepEqual(SparseBitmap.runs(bms, from, to), want);
      // orWith gives the same union as runs over the list
      const u = new SparseBitmap();
      for (const bm of bms) u.orWith(bm);
      assert.deepEqual(SparseBitmap.runs([u], from, to), want);
    }),
    { seed: fcSeed(), numRuns: 200 },
  );
});

test('SparseBitmap: memory is per touched page', () => {
  const bm = new SparseBitmap();
  bm.setRange(5, 6);
  bm.setRange(1000 * PAGE_BITS, 1000 * PAGE_BITS + 1);
  assert.equal(bm.memoryBytes, 2 * PAGE_BYTES);
  assert.ok(bm.get(5) && !bm.get(6) && bm.get(1000 * PAGE_BITS));
});

test('RctId: round trip; anything else is rejected', () => {
  const p = { tracker: 'ab'.repeat(16), gen: 42, nonce: '0123456789abcdef' };
  assert.deepEqual(parseRctId(formatRctId(p)), p);
  for (const bad of ['', 'rct:', `rct:${'ab'.repeat(16)}:0:0123456789abcdef`, `rct:${'ab'.repeat(15)}:1:0123456789abcdef`, `rct:${'ab'.repeat(16)}:1:0123`, `x${formatRctId(p)}`]) {
    assert.equal(parseRctId(bad), null, bad);
  }
});

function sampleState(): RctFileState {
  const page = new Uint8Array(PAGE_BYTES);
  page[0] = 0b101;
  page[PAGE_BYTES - 1] = 0x80;
  return {
    tracker: '0f'.repeat(16),
    diskSize: 3 * 2 ** 40 + 512, // > 2 TiB: 64-bit fields
    blockSize: 65536,
    regionSize: 0,
    clean: false,
    unbound: false,
    generation: 9,
    persistSeq: 77,
    leaseUntil: 1_800_000_000_000,
    createdAt: 1_700_000_000_000,
    identityKind: 'device',
    identities: ['{guid-current}', '{guid-next}'],
    invalidation: { reason: 'the disk shrank', at: 1_700_000_000_001, previousTracker: 'aa'.repeat(16) },
    ids: [
      { gen: 3, nonce: '0011223344556677', createdAt: 1_700_000_000_100, pages: [[0, page], [700, page]] },
      { gen: 8, nonce: '8899aabbccddeeff', createdAt: 1_700_000_000_200, pages: [] },
    ],
  };
}

test('rct codec: round trip (values > 2^32), and every single-byte corruption is detected', () => {
  const s = sampleState();
  const buf = encodeRct(s);
  assert.deepEqual(decodeRct(buf, 'd.rct'), s);
  for (let i = 0; i < buf.length; i += 97) {
    const bad = Buffer.from(buf);
    bad[i]! ^= 0x10;
    assert.throws(() => decodeRct(bad, 'd.rct'), (e: unknown) => e instanceof CorruptError && e.message.startsWith('d.rct'), `flip at ${i}`);
  }
  assert.throws(() => decodeRct(buf.subarray(0, buf.length - 1), 'd.rct'), CorruptError);
  assert.throws(() => decodeRct(Buffer.alloc(10), 'd.rct'), /shorter than/);
});

test('mrt codec: the newer valid slot wins; a torn slot falls back to the other; both bad is corrupt', () => {
  const bits = new Uint8Array(2);
  bits[0] = 0b11;
  const older = encodeMrtSlot({ tracker: '0f'.repeat(16), seq: 4, regionSize: 1 << 26, regionCount: 10, bits: new Uint8Array(2) });
  const newer = encodeMrtSlot({ tracker: '0f'.repeat(16), seq: 5, regionSize: 1 << 26, regionCount: 10, bits });
  assert.equal(older.length, mrtSlotSize(10));
  assert.equal(older.length % 4096, 0);
  assert.equal(decodeMrt(Buffer.concat([older, newer]), 'm').seq, 5);
  assert.equal(decodeMrt(Buffer.concat([newer, older]), 'm').seq, 5);
  assert.deepEqual([...decodeMrt(Buffer.concat([older, newer]), 'm').bits], [3, 0]);
  const torn = Buffer.from(newer);
  torn.fill(0, 40); // the write stopped after the first 40 bytes
  assert.equal(decodeMrt(Buffer.concat([older, torn]), 'm').seq, 4);
  const torn2 = Buffer.from(older);
  torn2[70]! ^= 1;
  assert.throws(() => decodeMrt(Buffer.concat([torn2, torn]), 'm'), (e: unknown) => e instanceof CorruptError && /checksum/.test(e.message));
  assert.throws(() => decodeMrt(Buffer.alloc(100), 'm'), CorruptError);
  // 32768 regions (the maximum) still fit a two-sector-aligned slot
  assert.equal(mrtSlotSize(32768), 8192);
});
