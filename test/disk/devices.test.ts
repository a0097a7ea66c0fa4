import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { fcSeed } from '../helpers/tools.js';
import { MemoryDevice } from '../../src/blockdev/MemoryDevice.js';
import type { BlockDevice } from '../../src/blockdev/BlockDevice.js';
import { copyDevice } from '../../src/disk/copyDevice.js';
import { compareDevices } from '../../src/disk/compareDevices.js';

const MiB = 1024 * 1024;

async function fill(dev: BlockDevice, writes: Array<[number, number, number]>): Promise<void> {
  for (const [off, len, v] of writes) {
    const o = Math.min(off, dev.size - 1);
    const l = Math.min(len, dev.size - o);
    await dev.write(o, Buffer.alloc(l, v));
  }
}

test('copyDevice: copies exactly, skips holes and zero granules, bounded chunks (property)', async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.integer({ min: 1, max: 6 * MiB }),
      fc.array(fc.tuple(fc.nat(6 * MiB), fc.integer({ min: 1, max: 300_000 }), fc.integer({ min: 0, max: 3 })), { maxLength: 6 }),
      fc.constantFrom(64 * 1024, 1 * MiB, 8 * MiB),
      fc.integer({ min: 1, max: 5 }),
      async (size, writes, chunkSize, concurrency) => {
        const src = new MemoryDevice(size);
        await fill(src, writes);
        const dst = new MemoryDevice(size);
        let last = -1;
        let maxRead = 0;
        const origRead = src.read.bind(src);
        src.read = async (o, l) => {
          maxRead = Math.max(maxRead, l);
          return origRead(o, l);
        };
        const st = await copyDevice(src, dst, { chunkSize, concurrency, onProgress: (d, t) => {
          assert.ok(d >= last && d <= t);
          last = d;
        } });
        assert.equal(last, size);
        assert.ok(maxRead <= chunkSize);
        assert.deepEqual(await dst.read(0, size), await origRead(0, size));
        // Nothing zero was written: every written 4 KiB granule holds a non-zero byte.
        const content = await origRead(0, size);
        let nonZeroGranuleBytes = 0;
        for (let g = 0; g < size; g += 4096) if (content.subarray(g, Math.min(size, g + 4096)).some((x) => x !== 0)) nonZeroGranuleBytes += Math.min(4096, size - g);
        assert.equal(st.written, nonZeroGranuleBytes);
      },
    ),
    { seed: fcSeed(), numRuns: 40 },
  );
});

test('copyDevice: a failing write is reported after in-flight chunks settle', async () => {
  const src = new MemoryDevice(32 * MiB);
  await src.write(0, Buffer.alloc(32 * MiB, 1));
  const dst = new MemoryDevice(32 * MiB);
  let calls = 0;
  dst.write = async () => {
    calls++;
    if (calls === 2) throw new Error('disk full');
  };
  await assert.rejects(copyDevice(src, dst, { chunkSize: MiB, concurrency: 3 }), /disk full/);
  assert.ok(calls < 32, 'stops launching chunks after a failure');
});

test('compareDevices: equal, first difference, hole vs data, size mismatch (property)', async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.integer({ min: 1, max: 4 * MiB }),
      fc.array(fc.tuple(fc.nat(4 * MiB), fc.integer({ min: 1, max: 200_000 }), fc.integer({ min: 0, max: 2 })), { maxLength: 4 }),
      fc.array(fc.tuple(fc.nat(4 * MiB), fc.integer({ min: 1, max: 200_000 }), fc.integer({ min: 0, max: 2 })), { maxLength: 4 }),
      fc.integer({ min: -3, max: 3 }),
      async (size, wa, wb, sizeDelta) => {
        const sizeB = Math.max(1, size + sizeDelta * 4096);
        const a = new MemoryDevice(size);
        const b = new MemoryDevice(sizeB);
        await fill(a, wa);
        await fill(b, wa.filter(([o]) => o < sizeB));
        await fill(b, wb);
        const ca = await a.read(0, size);
        const cb = await b.read(0, sizeB);
        const common = Math.min(size, sizeB);
        let expect = -1;
        for (let i = 0; i < common; i++) if (ca[i] !== cb[i]) { expect = i; break; }
        if (expect < 0 && size !== sizeB) expect = common;
        const r = await compareDevices(a, b, { chunkSize: 256 * 1024, readAhead: 2 });
        assert.equal(r.equal, expect < 0);
        assert.equal(r.firstDifference, expect < 0 ? undefined : expect);
      },
    ),
    { seed: fcSeed(), numRuns: 40 },
  );
});

test('compareDevices: hole vs hole over a 64 GiB device is not read', async () => {
  const size = 64 * 1024 ** 3;
  const a = new MemoryDevice(size);
  const b = new MemoryDevice(size);
  await a.write(size - 4096, Buffer.alloc(4096, 9));
  await b.write(size - 4096, Buffer.alloc(4096, 9));
  await b.write(size - 100, Buffer.from([1]));
  let readBytes = 0;
  for (const d of [a, b]) {
    const r = d.read.bind(d);
    d.read = async (o, l) => { readBytes += l; return r(o, l); };
  }
  const t0 = Date.now();
  const res = await compareDevices(a, b);
  assert.deepEqual(res, { equal: false, firstDifference: size - 100, sizeA: size, sizeB: size });
  assert.ok(readBytes <= 2 * 64 * 1024, `read ${readBytes} bytes`);
  assert.ok(Date.now() - t0 < 20_000);
});
