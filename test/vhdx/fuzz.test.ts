/**
 * Mutation fuzzing: flip bytes in (or truncate) every structure of valid files — headers, region tables,
 * metadata, BAT, log — then open read-only, read, check, and open read-write. Every failure must be a
 * typed TidemarkError; nothing may hang or crash; read-only opens and checkVhdx never modify the file.
 */
import assert from 'node:assert/strict';
import { copyFile, open, truncate } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import fc from 'fast-check';
import { TidemarkError } from '../../src/errors.js';
import { VhdxDevice } from '../../src/vhdx/VhdxDevice.js';
import { checkVhdx } from '../../src/vhdx/checkVhdx.js';
import { CorruptError } from '../../src/vhdx/errors.js';
import { MiB } from '../../src/vhdx/format/constants.js';
import { fcSeed, tempDir } from '../helpers/tools.js';
import { pattern, sha256 } from './helpers.js';

/** Named byte ranges of our layout (log @1 MiB, metadata @2 MiB, BAT @3 MiB). */
const STRUCTURES: Record<string, [number, number]> = {
  'file identifier': [0, 520],
  'header 1': [64 * 1024, 64 * 1024 + 80],
  'header 2': [128 * 1024, 128 * 1024 + 80],
  'region tables': [192 * 1024, 192 * 1024 + 80],
  'region table 2': [256 * 1024, 256 * 1024 + 80],
  'log': [MiB, MiB + 3 * 4096],
  'metadata table': [2 * MiB, 2 * MiB + 32 + 6 * 32],
  'metadata items': [2 * MiB + 65536, 2 * MiB + 65536 + 200],
  'BAT': [3 * MiB, 3 * MiB + 64],
};

async function expectTyped(p: Promise<unknown>): Promise<unknown> {
  try {
    return await p;
  } catch (e) {
    assert.ok(e instanceof TidemarkError, `untyped error: ${(e as Error)?.stack ?? String(e)}`);
    return e;
  }
}

async function exercise(path: string, rw: boolean): Promise<void> {
  const before = await sha256(path);
  const dev = await expectTyped(VhdxDevice.open(path, { readOnly: true }));
  if (dev instanceof VhdxDevice) {
    // Bounded reads: a flipped size byte may legitimately describe a (sparse) multi-GiB disk.
    const n = Math.min(dev.size, 6 * MiB);
    await expectTyped(dev.read(0, n));
    await expectTyped(dev.read(dev.size - n, n));
    await expectTyped(dev.extents(0, dev.size));
    dev.info();
    await dev.close();
  }
  const report = await checkVhdx(path);
  assert.equal(typeof report.ok, 'boolean');
  if (!(dev instanceof VhdxDevice) && dev instanceof CorruptError) assert.equal(report.ok, false, `check must flag what open refused: ${String(dev)}`);
  for (const p of report.problems) assert.ok(p.structure && p.message);
  assert.equal(await sha256(path), before, 'read-only open and check never modify the file');
  if (!rw) return;
  const w = await expectTyped(VhdxDevice.open(path));
  if (w instanceof VhdxDevice) {
    await expectTyped(w.write(Math.min(12345, w.size - 100), pattern(100, 1)));
    await expectTyped(w.read(0, Math.min(w.size, 4 * MiB)));
    await expectTyped(w.close());
  }
}

async function makeBases(dir: string): Promise<Record<string, string>> {
  const dyn = join(dir, 'dynamic.vhdx');
  const d = await VhdxDevice.create(dyn, { size: 4 * MiB, blockSize: MiB });
  await d.write(100, pattern(2 * MiB, 1));
  await d.close();
  const child = join(dir, 'child.avhdx');
  const c = await VhdxDevice.create(child, { size: 0, parent: dyn });
  await c.write(MiB + 7, pattern(5000, 2));
  await c.close();
  // A file with a dirty log: written and flushed, then its handle dropped without close (a crash).
  const dirty = join(dir, 'dirty.vhdx');
  const x = await VhdxDevice.create(dirty, { size: 4 * MiB, blockSize: MiB });
  await x.write(3 * MiB, pattern(4096, 3));
  await x.flush();
  // Simulate the crash: close the file handle behind the device's back.
  await (x as unknown as { fh: { close(): Promise<void> } }).fh.close();
  return { dynamic: dyn, child, dirty };
}

test('byte flips in every structure give typed errors, never crash or hang, and read-only never writes', async (t) => {
  const dir = await tempDir(t, 'vhdx-fuzz-');
  const bases = await makeBases(dir);
  let n = 0;
  await fc.assert(fc.asyncProperty(
    fc.constantFrom(...Object.keys(bases)),
    fc.constantFrom(...Object.keys(STRUCTURES)),
    fc.array(fc.tuple(fc.nat(), fc.integer({ min: 1, max: 255 })), { minLength: 1, maxLength: 4 }),
    fc.integer({ min: 0, max: 3 }).map((k) => k === 0),
    async (baseName, structure, flips, rw) => {
      const path = join(dir, `m${n++}.${baseName === 'child' ? 'avhdx' : 'vhdx'}`);
      await copyFile(bases[baseName]!, path);
      const [start, end] = STRUCTURES[structure]!;
      const fh = await open(path, 'r+');
      for (const [at, x] of flips) {
        const pos = start + (at % (end - start));
        const b = Buffer.alloc(1);
        await fh.read(b, 0, 1, pos);
        b[0]! ^= x;
        await fh.write(b, 0, 1, pos);
      }
      await fh.close();
      await exercise(path, rw);
    },
  ), { seed: fcSeed(), numRuns: 70 });
});

test('truncated files give typed errors and read-only never writes', async (t) => {
  const dir = await tempDir(t, 'vhdx-fuzz-');
  const bases = await makeBases(dir);
  let n = 0;
  await fc.assert(fc.asyncProperty(fc.constantFrom(...Object.keys(bases)), fc.double({ min: 0, max: 1, noNaN: true }), async (baseName, frac) => {
    const path = join(dir, `t${n++}.vhdx`);
    await copyFile(bases[baseName]!, path);
    const { size } = await (await import('node:fs/promises')).stat(path);
    await truncate(path, Math.floor(size * frac));
    await exercise(path, false);
    const dev = await VhdxDevice.open(path, { readOnly: true }).catch((e: unknown) => e);
    if (dev instanceof VhdxDevice) await dev.close();
    else if (frac < 0.99 && Math.floor(size * frac) < 4 * MiB) assert.ok(dev instanceof TidemarkError);
  }), { seed: fcSeed(), numRuns: 20 });
});

test('specific corruptions name the structure: BAT entry past end of file, both headers bad, bad region table copy', async (t) => {
  const dir = await tempDir(t, 'vhdx-fuzz-');
  const { dynamic } = await makeBases(dir);
  const p1 = join(dir, 'bat.vhdx');
  await copyFile(dynamic, p1);
  const fh = await open(p1, 'r+');
  const e = Buffer.alloc(8);
  e.writeBigUInt64LE((4000n << 20n) | 6n);
  await fh.write(e, 0, 8, 3 * MiB + 8 * 2); // payload block 2
  await fh.close();
  await assert.rejects(VhdxDevice.open(p1, { readOnly: true }), (err: unknown) => err instanceof CorruptError && /bat\.vhdx: BAT entry 2: offset points past end of file/.test(err.message));
  const r1 = await checkVhdx(p1);
  assert.equal(r1.ok, false);
  assert.equal(r1.problems[0]!.structure, 'BAT entry 2');

  const p2 = join(dir, 'hdr.vhdx');
  await copyFile(dynamic, p2);
  const fh2 = await open(p2, 'r+');
  await fh2.write(Buffer.from('XXXX'), 0, 4, 64 * 1024);
  await fh2.close();
  const ok = await VhdxDevice.open(p2, { readOnly: true }); // one bad slot: falls back to the other
  assert.ok((await ok.read(100, 10)).equals(pattern(2 * MiB, 1).subarray(0, 10)));
  await ok.close();
  const fh3 = await open(p2, 'r+');
  await fh3.write(Buffer.from('XXXX'), 0, 4, 128 * 1024);
  await fh3.close();
  await assert.rejects(VhdxDevice.open(p2, { readOnly: true }), /both header slots are invalid/);

  const p3 = join(dir, 'rt.vhdx');
  await copyFile(dynamic, p3);
  const fh4 = await open(p3, 'r+');
  await fh4.write(Buffer.from([0xff]), 0, 1, 192 * 1024 + 20);
  await fh4.close();
  const dev = await VhdxDevice.open(p3, { readOnly: true }); // second copy used
  await dev.close();
  const r3 = await checkVhdx(p3);
  assert.equal(r3.ok, false);
  assert.match(r3.problems[0]!.message, /region table 1: checksum mismatch/);
});

test('a partially present block without a sector bitmap block is refused (never a crash on write)', async (t) => {
  const dir = await tempDir(t, 'vhdx-fuzz-');
  const { child } = await makeBases(dir);
  const fh = await open(child, 'r+');
  // Child BAT at 3 MiB: payload block 1 is PARTIALLY_PRESENT; clear its chunk's bitmap entry (index 4096).
  await fh.write(Buffer.alloc(8), 0, 8, 3 * MiB + 4096 * 8);
  await fh.close();
  await assert.rejects(VhdxDevice.open(child), (e: unknown) => e instanceof CorruptError && /BAT entry 1: partially present block whose chunk has no sector bitmap/.test(e.message));
});
