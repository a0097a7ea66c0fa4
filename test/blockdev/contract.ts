/**
 * The BlockDevice contract suite (see src/blockdev/BlockDevice.ts). Every BlockDevice implementation
 * runs it from its own test file:
 *
 *   import { runContract } from '../blockdev/contract.js';
 *   runContract('RawFileDevice', async (t, size) => {
 *     const dir = await tempDir(t);
 *     const path = join(dir, 'disk.img');
 *     const device = await RawFileDevice.create(path, size);
 *     return { device, reopen: () => RawFileDevice.open(path) };
 *   });
 *
 * runContract(name, factory, opts?) registers node:test tests (call it at a test file's top level):
 * - factory(t, size) makes a fresh device of exactly `size` bytes, reading as zeros when writable, for
 *   the test `t` (use t for temp dirs). It may be called several times per test. It may return
 *   `reopen` (open the same storage again after `device.close()`; enables the persistence test) and
 *   `cleanup` (called after the device is closed).
 * - opts.sizes: device sizes for the sized tests, each >= 1 MiB (default [1 MiB, 1 MiB + 12 KiB]; choose
 *   sizes your format accepts).
 * - opts.readOnly: the factory returns read-only devices (content arbitrary); only read-side and
 *   refusal tests run.
 * - opts.largeSize: size for the sparse > 2 TiB test (default 3 TiB; 0 skips it).
 * - opts.runs: fast-check runs of the random-operations property (default 15; each makes a device).
 *
 * What it checks: random write/zero/trim/read/extents sequences against a shadow buffer (fast-check,
 * seed fcSeed()); unaligned I/O; zero (noHole, fast) and trim read back as zeros and leave neighbours
 * alone; extents cover a range exactly, in order, merged, and 'hole'/'zero' runs read as zeros;
 * OutOfRangeError, ReadOnlyError, ClosedError and idempotent close; `readInto` (when the device has it)
 * fills exactly its target window with `read`'s bytes through a dirty buffer, zeros included; concurrent overlapping writes each
 * land whole; flush+close+reopen keeps data; offsets past 2 TiB on a sparse device.
 */
import assert from 'node:assert/strict';
import { test, type TestContext } from 'node:test';
import fc from 'fast-check';
import type { BlockDevice, Extent } from '../../src/blockdev/BlockDevice.js';
import { ClosedError, NotSupportedError, OutOfRangeError, ReadOnlyError, UsageError } from '../../src/errors.js';
import { fcSeed } from '../helpers/tools.js';
import { alignedSharedBuffer } from '../../src/util/alignedSharedBuffer.js';

export interface ContractSubject {
  device: BlockDevice;
  reopen?: () => Promise<BlockDevice>;
  cleanup?: () => Promise<void>;
}

export type ContractFactory = (t: TestContext, size: number) => Promise<ContractSubject>;

export interface ContractOptions {
  sizes?: number[];
  readOnly?: boolean;
  largeSize?: number;
  /** fast-check runs of the shadow-buffer property (default 15; each makes a fresh device). */
  runs?: number;
}

const KiB = 1024;
const MiB = 1024 * KiB;
const TiB = 1024 * 1024 * MiB;

export function runContract(name: string, factory: ContractFactory, opts: ContractOptions = {}): void {
  const sizes = opts.sizes ?? [MiB, MiB + 12 * KiB];
  const largeSize = opts.largeSize ?? 3 * TiB;
  const title = (what: string, size?: number) => `${name} contract: ${what}${size === undefined ? '' : ` (size ${size})`}`;

  /** Make a device, run `body`, always close and clean up. */
  async function withDevice(t: TestContext, size: number, body: (s: ContractSubject) => Promise<void>): Promise<void> {
    const subject = await factory(t, size);
    try {
      assert.equal(subject.device.size, size, 'factory returned a device of the requested size');
      await body(subject);
    } finally {
      await subject.device.close();
      await subject.cleanup?.();
    }
  }

  for (const size of sizes) {
    test(title('reads return exactly the requested bytes; extents cover exactly and agree with content', size), async (t) => {
      await withDevice(t, size, async ({ device }) => {
        assert.equal(device.capabilities.readOnly, !!opts.readOnly);
        assert.ok([512, 4096].includes(device.logicalSectorSize), 'logical sector size is 512 or 4096');
        assert.equal((await device.read(0, 0)).length, 0);
        assert.equal((await device.read(size, 0)).length, 0);
        for (const [off, len] of [[0, size], [1, 1000], [size - 777, 777], [4095, 8194]] as const) {
          const data = await device.read(off, len);
          assert.equal(data.length, len);
          await checkExtents(device, off, len);
        }
      });
    });

    test(title('out-of-range requests reject with OutOfRangeError', size), async (t) => {
      await withDevice(t, size, async ({ device }) => {
        const bad: Array<[number, number]> = [[size, 1], [size - 1, 2], [-1, 1], [0, size + 1], [0.5, 1], [0, -1], [Number.NaN, 1], [2 ** 53, 1]];
        for (const [off, len] of bad) {
          await assert.rejects(device.read(off, len), OutOfRangeError, `read(${off}, ${len})`);
          await assert.rejects(device.extents(off, len), OutOfRangeError, `extents(${off}, ${len})`);
          if (!opts.readOnly) {
            if (len >= 0) await assert.rejects(device.write(off, Buffer.alloc(len)), OutOfRangeError, `write(${off}, ${len})`);
            await assert.rejects(device.zero(off, len), OutOfRangeError, `zero(${off}, ${len})`);
            await assert.rejects(device.trim(off, len), OutOfRangeError, `trim(${off}, ${len})`);
          }
        }
        if (!opts.readOnly) await assert.rejects(device.write(size - 3, Buffer.alloc(4)), OutOfRangeError);
      });
    });

    test(title('calls after close reject with ClosedError; close is idempotent', size), async (t) => {
      const subject = await factory(t, size);
      const { device } = subject;
      await device.close();
      await device.close();
      await assert.rejects(device.read(0, 1), ClosedError);
      await assert.rejects(device.write(0, Buffer.alloc(1)), ClosedError);
      await assert.rejects(device.zero(0, 1), ClosedError);
      await assert.rejects(device.trim(0, 1), ClosedError);
      await assert.rejects(device.flush(), ClosedError);
      await assert.rejects(device.extents(0, 1), ClosedError);
      await Promise.all([device.close(), device.close()]);
      await subject.cleanup?.();
    });

    test(title('readInto (when offered) fills exactly its window with read()\'s bytes, zeros included', size), async (t) => {
      await withDevice(t, size, async ({ device }) => {
        if (!device.readInto) {
          t.skip('device has no readInto');
          return;
        }
        if (!opts.readOnly) {
          // Data, a zeroed run and a trimmed run, with never-written space around them.
          await device.write(4096 + 3, pattern(200 * KiB, 11));
          await device.zero(64 * KiB + 1, 70 * KiB);
          await device.trim(128 * KiB, 64 * KiB);
          await device.write(size - 5000, pattern(3000, 12));
        }
        const guard = 16;
        for (const [off, len] of [[0, size], [0, 0], [1, 1000], [4095, 8194], [60 * KiB, 200 * KiB], [300 * KiB, 256 * KiB], [size - 6000, 6000], [size - 1, 1]] as const) {
          const want = await device.read(off, len);
          // A dirty target (as a recycled buffer is): every byte of the window must be written.
          const target = Buffer.alloc(len + 2 * guard, 0xa5);
          await device.readInto(target, guard, off, len);
          assertSame(target.subarray(guard, guard + len), want, `readInto(${off}, ${len})`);
          assert.ok(target.subarray(0, guard).every((b) => b === 0xa5) && target.subarray(guard + len).every((b) => b === 0xa5), `readInto(${off}, ${len}) wrote outside its window`);
        }
        const plain = new Uint8Array(8192).fill(0xff);
        await device.readInto(plain, 0, 4096, 8192);
        assertSame(Buffer.from(plain), await device.read(4096, 8192), 'readInto a plain Uint8Array');
        for (const [off, len] of [[size, 1], [size - 1, 2], [-1, 1], [0.5, 1], [Number.NaN, 1]] as const) {
          await assert.rejects(device.readInto(Buffer.alloc(4), 0, off, len), OutOfRangeError, `readInto(${off}, ${len})`);
        }
        await assert.rejects(device.readInto(Buffer.alloc(10), 5, 0, 6), UsageError, 'target window past the end of the target');
        await assert.rejects(device.readInto(Buffer.alloc(10), -1, 0, 1), UsageError, 'negative target offset');
        await device.close();
        await assert.rejects(device.readInto(Buffer.alloc(1), 0, 0, 1), ClosedError, 'readInto after close');
      });
    });

    test(title('writev (when offered) writes its buffers back to back, exactly like one write of them', size), async (t) => {
      await withDevice(t, size, async ({ device }) => {
        if (!device.writev) {
          t.skip('device has no writev');
          return;
        }
        if (opts.readOnly) {
          await assert.rejects(device.writev(0, [Buffer.alloc(1)]), ReadOnlyError);
          return;
        }
        const model = Buffer.alloc(size);
        // Aligned whole pages from aligned shared memory (restore's O_DIRECT path), unaligned ragged
        // pieces, empty pieces, a single buffer, and a run ending at the device's end.
        const shared = alignedSharedBuffer(64 * KiB);
        shared.set(pattern(64 * KiB, 21));
        const cases: Array<[number, Uint8Array[]]> = [
          [0, [shared.subarray(0, 8 * KiB), shared.subarray(16 * KiB, 32 * KiB)]],
          [4096 * 5, [shared.subarray(0, 4096)]],
          [12345, [pattern(1, 22), pattern(0, 23), pattern(5000, 24), shared.subarray(3, 700)]],
          [size - 3000, [pattern(1000, 25), pattern(2000, 26)]],
        ];
        for (const [off, bufs] of cases) {
          await device.writev(off, bufs);
          let o = off;
          for (const b of bufs) {
            model.set(b, o);
            o += b.length;
          }
        }
        assertSame(await device.read(0, size), model, 'content after writev');
        await assert.rejects(device.writev(size - 10, [Buffer.alloc(6), Buffer.alloc(6)]), OutOfRangeError, 'writev past the end');
        assertSame(await device.read(0, size), model, 'a refused writev changes nothing');
      });
    });

    if (opts.readOnly) {
      test(title('a read-only device refuses changes with ReadOnlyError and keeps its content', size), async (t) => {
        await withDevice(t, size, async ({ device }) => {
          const before = await device.read(0, size);
          await assert.rejects(device.write(0, Buffer.alloc(512, 1)), ReadOnlyError);
          await assert.rejects(device.write(size - 1, Buffer.alloc(1, 1), { fua: true }), ReadOnlyError);
          await assert.rejects(device.zero(0, 512), ReadOnlyError);
          await assert.rejects(device.zero(0, 512, { noHole: true, fast: true }), ReadOnlyError);
          await assert.rejects(device.trim(0, size), ReadOnlyError);
          assert.ok((await device.read(0, size)).equals(before), 'content unchanged');
        });
      });
      continue;
    }

    test(title('random writes, zeros, trims, reads and extents match a shadow buffer', size), async (t) => {
      const maxLen = 3 * 64 * KiB + 3;
      const range = fc.integer({ min: 0, max: size }).chain((off) => fc.record({ off: fc.constant(off), len: fc.integer({ min: 0, max: Math.min(maxLen, size - off) }) }));
      const op = fc.oneof(
        { weight: 5, arbitrary: fc.record({ kind: fc.constant('write' as const), r: range, seed: fc.integer({ min: 1, max: 0x7fffffff }), fua: fc.boolean() }) },
        { weight: 2, arbitrary: fc.record({ kind: fc.constant('zero' as const), r: range, noHole: fc.boolean(), fast: fc.boolean() }) },
        { weight: 2, arbitrary: fc.record({ kind: fc.constant('trim' as const), r: range }) },
        { weight: 3, arbitrary: fc.record({ kind: fc.constant('read' as const), r: range }) },
        { weight: 2, arbitrary: fc.record({ kind: fc.constant('extents' as const), r: range }) },
        { weight: 1, arbitrary: fc.record({ kind: fc.constant('flush' as const) }) },
      );
      await fc.assert(
        fc.asyncProperty(fc.array(op, { minLength: 1, maxLength: 20 }), async (ops) => {
          await withDevice(t, size, async ({ device }) => {
            const shadow = Buffer.alloc(size);
            for (const o of ops) {
              switch (o.kind) {
                case 'write': {
                  const data = pattern(o.r.len, o.seed);
                  await device.write(o.r.off, data, { fua: o.fua });
                  data.copy(shadow, o.r.off);
                  break;
                }
                case 'zero': {
                  try {
                    await device.zero(o.r.off, o.r.len, { noHole: o.noHole, fast: o.fast });
                    shadow.fill(0, o.r.off, o.r.off + o.r.len);
                  } catch (err) {
                    if (!(o.fast && err instanceof NotSupportedError)) throw err;
                    await adoptAfterRefusedZero(device, shadow, o.r.off, o.r.len);
                  }
                  break;
                }
                case 'trim':
                  await device.trim(o.r.off, o.r.len);
                  shadow.fill(0, o.r.off, o.r.off + o.r.len);
                  break;
                case 'read':
                  assertSame(await device.read(o.r.off, o.r.len), shadow.subarray(o.r.off, o.r.off + o.r.len), `read(${o.r.off}, ${o.r.len})`);
                  break;
                case 'extents':
                  await checkExtents(device, o.r.off, o.r.len, shadow);
                  break;
                case 'flush':
                  await device.flush();
                  break;
              }
            }
            assertSame(await device.read(0, size), shadow, 'whole device at the end');
            await checkExtents(device, 0, size, shadow);
          });
        }),
        { seed: fcSeed(), numRuns: opts.runs ?? 15 },
      );
    });

    test(title('unaligned reads and writes touch exactly their bytes', size), async (t) => {
      await withDevice(t, size, async ({ device }) => {
        const shadow = Buffer.alloc(size);
        const writes: Array<[number, number]> = [[1, 1], [511, 513], [4095, 4097], [4096 * 3 - 7, 14], [64 * KiB - 1, 2], [size - 3, 3], [size - 1000, 999]];
        let seed = 7;
        for (const [off, len] of writes) {
          const data = pattern(len, seed++);
          await device.write(off, data);
          data.copy(shadow, off);
        }
        for (const [off, len] of [[0, 3], [510, 516], [4094, 4100], [4096 * 3 - 8, 16], [0, 96 * KiB], [size - 2000, 2000], [size - 1, 1]] as const) {
          assertSame(await device.read(off, len), shadow.subarray(off, off + len), `read(${off}, ${len})`);
        }
        assertSame(await device.read(0, size), shadow, 'whole device');
      });
    });

    test(title('zero (plain, noHole, fast) and trim read back as zeros and spare their neighbours', size), async (t) => {
      await withDevice(t, size, async ({ device }) => {
        const shadow = pattern(size, 99);
        await device.write(0, shadow);
        const cases: Array<[number, number, 'zero' | 'noHole' | 'trim' | 'fast' | 'fastNoHole']> = [
          [1000, 5000, 'zero'],
          [64 * KiB, 128 * KiB, 'zero'],
          [8192 + 17, 4096 * 5, 'noHole'],
          [256 * KiB, 64 * KiB, 'noHole'],
          [300 * KiB + 3, 100 * KiB, 'trim'],
          [512 * KiB, 128 * KiB, 'trim'],
          [700 * KiB, 64 * KiB, 'fast'],
          [800 * KiB + 1, 70 * KiB, 'fastNoHole'],
          [size - 4097, 4097, 'zero'],
        ];
        for (const [off, len, how] of cases) {
          try {
            if (how === 'trim') await device.trim(off, len);
            else await device.zero(off, len, { noHole: how === 'noHole' || how === 'fastNoHole', fast: how === 'fast' || how === 'fastNoHole' });
            shadow.fill(0, off, off + len);
          } catch (err) {
            if (!(how.startsWith('fast') && err instanceof NotSupportedError)) throw err;
            await adoptAfterRefusedZero(device, shadow, off, len);
          }
          if (how === 'fast' && device.capabilities.fastZero) assert.ok((await device.read(off, len)).every((b) => b === 0), 'a device with fastZero zeroes fast');
          assertSame(await device.read(Math.max(0, off - 4096), Math.min(size, off + len + 4096) - Math.max(0, off - 4096)), shadow.subarray(Math.max(0, off - 4096), Math.min(size, off + len + 4096)), `${how}(${off}, ${len}) and neighbours`);
        }
        assertSame(await device.read(0, size), shadow, 'whole device');
        await checkExtents(device, 0, size, shadow);
        if (!device.capabilities.fastZero) await assert.rejects(device.zero(0, 4096, { fast: true }), NotSupportedError, 'fast zero without capability is refused');
      });
    });

    test(title('concurrent overlapping writes each land whole', size), async (t) => {
      await withDevice(t, size, async ({ device }) => {
        const bs = 64 * KiB;
        const writes: Array<[number, Buffer]> = [
          [100, Buffer.alloc(2 * bs, 0xa1)],
          [bs - 300, Buffer.alloc(bs + 600, 0xb2)],
          [bs + 7, Buffer.alloc(bs, 0xc3)],
          [2 * bs - 1, Buffer.alloc(bs / 2, 0xe5)],
        ];
        for (let round = 0; round < 3; round++) {
          const base = round * 4 * bs;
          if (base + 4 * bs > size) break;
          await Promise.all(writes.map(([off, data]) => device.write(base + off, data)));
          const got = await device.read(base, 4 * bs);
          const ok = permutations(writes.length).some((order) => {
            const expect = Buffer.alloc(4 * bs);
            for (const i of order) writes[i]![1].copy(expect, writes[i]![0]);
            return expect.equals(got);
          });
          assert.ok(ok, `round ${round}: the result is the writes applied whole in some order`);
        }
        // The same range written concurrently with different bytes ends as exactly one of them.
        const fills = [1, 2, 3, 4, 5];
        await Promise.all(fills.map((f) => device.write(4095, Buffer.alloc(3 * 4096 + 2, f))));
        const got = await device.read(4095, 3 * 4096 + 2);
        assert.ok(fills.some((f) => got.every((b) => b === f)), 'one write wins whole');
      });
    });

    test(title('data survives flush, close and reopen', size), async (t) => {
      const subject = await factory(t, size);
      if (!subject.reopen) {
        await subject.device.close();
        await subject.cleanup?.();
        t.skip('factory gives no reopen');
        return;
      }
      const shadow = Buffer.alloc(size);
      let reopened: BlockDevice | undefined;
      try {
        let seed = 1234;
        for (const [off, len] of [[0, 4096], [5000, 70000], [size - 513, 513], [Math.floor(size / 2) - 1, 3]] as const) {
          const data = pattern(len, seed++);
          await subject.device.write(off, data);
          data.copy(shadow, off);
        }
        await subject.device.zero(5000 + 1000, 64 * KiB);
        shadow.fill(0, 6000, 6000 + 64 * KiB);
        await subject.device.write(size - 2, Buffer.from([0xfe, 0xef]), { fua: true });
        shadow[size - 2] = 0xfe;
        shadow[size - 1] = 0xef;
        await subject.device.flush();
        await subject.device.close();
        reopened = await subject.reopen();
        assert.equal(reopened.size, size);
        assertSame(await reopened.read(0, size), shadow, 'content after reopen');
        await checkExtents(reopened, 0, size, shadow);
      } finally {
        await subject.device.close();
        await reopened?.close();
        await subject.cleanup?.();
      }
    });
  }

  if (largeSize > 0) {
    test(title('offsets beyond 2 TiB on a sparse device', largeSize), async (t) => {
      await withDevice(t, largeSize, async ({ device }) => {
        const two = 2 * TiB;
        assert.equal((await device.read(largeSize - 4096, 4096)).length, 4096);
        await checkExtents(device, two - MiB, 2 * MiB);
        if (opts.readOnly) return;
        const places: Array<[number, Buffer]> = [
          [two - 1000, pattern(3000, 5)], // straddles 2^41
          [largeSize - 4096 - 100, pattern(4096, 6)], // near the end, unaligned
          [largeSize - 1, Buffer.from([0x5a])], // the very last byte
          [two + 5 * MiB + 3, pattern(512, 7)], // past 2 TiB, unaligned
          [2 ** 32 - 7, pattern(14, 8)], // straddles 4 GiB (32-bit byte offsets)
        ];
        for (const [off, data] of places) await device.write(off, data);
        for (const [off, data] of places) assertSame(await device.read(off, data.length), data, `read back at ${off}`);
        assertSame(await device.read(two - 2000, 1000), Buffer.alloc(1000), 'untouched bytes before 2 TiB read zero');
        const window = await device.read(two - MiB, 2 * MiB);
        await checkExtents(device, two - MiB, 2 * MiB, window, two - MiB);
        const ext = await device.extents(two - MiB, 2 * MiB);
        assert.ok(ext.some((e) => e.type === 'data' && e.offset <= two && e.offset + e.length > two), 'written bytes lie in a data extent');
        await device.zero(two - 1000, 3000);
        assertSame(await device.read(two - 1000, 3000), Buffer.alloc(3000), 'zeroed past 2 TiB');
        await device.flush();
      });
    });
  }
}

/** Deterministic pseudo-random bytes (xorshift) so failures repeat and need no stored data. */
export function pattern(length: number, seed: number): Buffer {
  const out = Buffer.allocUnsafe(length);
  let x = seed | 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

/**
 * Check the extents contract over [offset, offset+length): exact cover, order, merging, and that
 * 'hole'/'zero' runs read as zeros (from `content` when given — indexed from `contentBase` — else by reading).
 */
export async function checkExtents(device: BlockDevice, offset: number, length: number, content?: Buffer, contentBase = 0): Promise<Extent[]> {
  const list = await device.extents(offset, length);
  let pos = offset;
  for (let i = 0; i < list.length; i++) {
    const e = list[i]!;
    assert.equal(e.offset, pos, `extent ${i} starts where the previous ended`);
    assert.ok(Number.isSafeInteger(e.length) && e.length > 0, `extent ${i} has a positive length`);
    assert.ok(['data', 'zero', 'hole'].includes(e.type), `extent ${i} type ${e.type}`);
    if (i > 0) assert.notEqual(list[i - 1]!.type, e.type, `extents ${i - 1} and ${i} are merged`);
    if (e.type !== 'data') {
      const bytes = content ? content.subarray(e.offset - contentBase, e.offset - contentBase + e.length) : await device.read(e.offset, e.length);
      assert.ok(bytes.every((b) => b === 0), `${e.type} extent [${e.offset}, +${e.length}) reads as zeros`);
    }
    pos += e.length;
  }
  assert.equal(pos, offset + length, 'extents cover the range exactly');
  return list;
}

/** After a refused fast zero each byte of the range is either as before or zero; adopt what the device has. */
async function adoptAfterRefusedZero(device: BlockDevice, shadow: Buffer, off: number, len: number): Promise<void> {
  const now = await device.read(off, len);
  for (let i = 0; i < len; i++) assert.ok(now[i] === shadow[off + i] || now[i] === 0, `byte ${off + i} after a refused fast zero is old or zero`);
  now.copy(shadow, off);
}

function assertSame(got: Buffer, want: Buffer, what: string): void {
  if (got.equals(want)) return;
  let i = 0;
  while (i < got.length && got[i] === want[i]) i++;
  assert.fail(`${what}: lengths ${got.length}/${want.length}, first difference at +${i}: got ${got[i]}, want ${want[i]}`);
}

function permutations(n: number): number[][] {
  if (n === 0) return [[]];
  return permutations(n - 1).flatMap((p) => Array.from({ length: n }, (_, i) => [...p.slice(0, i), n - 1, ...p.slice(i)]));
}
