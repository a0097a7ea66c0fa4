import assert from 'node:assert/strict';
import { rename } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import fc from 'fast-check';
import { VhdxDevice } from '../../src/vhdx/VhdxDevice.js';
import { checkVhdx } from '../../src/vhdx/checkVhdx.js';
import { VhdxParentMismatchError, VhdxParentMissingError } from '../../src/vhdx/errors.js';
import { NotFoundError } from '../../src/errors.js';
import { fcSeed, tempDir } from '../helpers/tools.js';
import { pattern, sha256 } from './helpers.js';

const MiB = 1024 * 1024;

test('a chain of depth 4 reads through every level, per sector; zero and trim in a child hide the parent', async (t) => {
  for (const lss of [512, 4096] as const) {
    const dir = await tempDir(t, 'vhdx-diff-');
    const size = 6 * MiB;
    const shadow = Buffer.alloc(size);
    const base = await VhdxDevice.create(join(dir, 'base.vhdx'), { size, blockSize: MiB, logicalSectorSize: lss });
    const p0 = pattern(size, 1);
    await base.write(0, p0);
    p0.copy(shadow);
    await base.close();
    let parentPath = join(dir, 'base.vhdx');
    const paths = [parentPath];
    for (let level = 1; level <= 3; level++) {
      const path = join(dir, `c${level}.avhdx`);
      const dev = await VhdxDevice.create(path, { size: 0, parent: parentPath });
      assert.equal(dev.size, size);
      assert.equal(dev.logicalSectorSize, lss);
      const w = pattern(1000 + level, 10 + level);
      const off = level * 700_000 + 3;
      await dev.write(off, w);
      w.copy(shadow, off);
      // An unaligned zero within a block (partial: sectors become present and zero) ...
      await dev.zero(level * MiB + 1234, 5000);
      shadow.fill(0, level * MiB + 1234, level * MiB + 1234 + 5000);
      // ... and a whole-block zero / trim (the block state hides the parent).
      if (level === 2) { await dev.zero(4 * MiB, MiB); shadow.fill(0, 4 * MiB, 5 * MiB); }
      if (level === 3) { await dev.trim(5 * MiB, MiB); shadow.fill(0, 5 * MiB, 6 * MiB); }
      assert.ok((await dev.read(0, size)).equals(shadow), `level ${level} content (lss ${lss})`);
      await dev.close();
      paths.unshift(path);
      parentPath = path;
    }
    const hashes = await Promise.all(paths.slice(1).map(sha256));
    const top = await VhdxDevice.open(paths[0]!);
    assert.deepEqual(top.parentChain(), paths);
    assert.equal(top.info().type, 'differencing');
    assert.equal(top.info().parent!.resolvedPath, paths[1]);
    assert.ok((await top.read(0, size)).equals(shadow));
    // Extents through the chain agree with content: data where anyone wrote, zero where the child zeroed.
    const ext = await top.extents(0, size);
    assert.equal(ext.reduce((s, e) => s + e.length, 0), size);
    for (const e of ext) if (e.type !== 'data') assert.ok(shadow.subarray(e.offset, e.offset + e.length).every((x) => x === 0));
    assert.ok(ext.some((e) => e.type === 'zero' && e.offset === 4 * MiB), 'the zeroed block of c2 shows as zero');
    await top.write(0, Buffer.alloc(10, 9));
    await top.close();
    assert.deepEqual(await Promise.all(paths.slice(1).map(sha256)), hashes, 'parents are opened read-only and never modified');
    assert.equal((await checkVhdx(paths[0]!)).ok, true);
  }
});

test('random operations on a child match a shadow of parent + child', async (t) => {
  const dir = await tempDir(t, 'vhdx-diff-');
  const size = 4 * MiB + 4096;
  const base = await VhdxDevice.create(join(dir, 'base.vhdx'), { size, blockSize: MiB });
  const p = pattern(size, 3);
  await base.write(0, p);
  await base.close();
  let n = 0;
  const op = fc.record({ kind: fc.constantFrom('write', 'zero', 'trim'), off: fc.integer({ min: 0, max: size - 1 }), len: fc.integer({ min: 1, max: 1_500_000 }) }, { noNullPrototype: true });
  await fc.assert(fc.asyncProperty(fc.array(op, { minLength: 1, maxLength: 8 }), async (ops) => {
    const path = join(dir, `child${n++}.avhdx`);
    const dev = await VhdxDevice.create(path, { size: 0, parent: join(dir, 'base.vhdx') });
    const shadow = Buffer.from(p);
    try {
      for (const o of ops) {
        const len = Math.min(o.len, size - o.off);
        if (o.kind === 'write') { const d = pattern(len, o.off); await dev.write(o.off, d); d.copy(shadow, o.off); }
        else if (o.kind === 'zero') { await dev.zero(o.off, len); shadow.fill(0, o.off, o.off + len); }
        else { await dev.trim(o.off, len); shadow.fill(0, o.off, o.off + len); }
      }
      assert.ok((await dev.read(0, size)).equals(shadow));
    } finally {
      await dev.close();
    }
    const again = await VhdxDevice.open(path, { readOnly: true });
    try {
      assert.ok((await again.read(0, size)).equals(shadow), 'after close and reopen');
    } finally {
      await again.close();
    }
  }), { seed: fcSeed(), numRuns: 12 });
});

test('a missing parent is a typed error naming the paths tried; the relative path still works after moving the chain', async (t) => {
  const dir = await tempDir(t, 'vhdx-diff-');
  const base = await VhdxDevice.create(join(dir, 'base.vhdx'), { size: 2 * MiB, blockSize: MiB });
  await base.write(0, Buffer.alloc(100, 5));
  await base.close();
  await (await VhdxDevice.create(join(dir, 'child.avhdx'), { size: 0, parent: join(dir, 'base.vhdx') })).close();
  await rename(join(dir, 'base.vhdx'), join(dir, 'moved.vhdx'));
  await assert.rejects(VhdxDevice.open(join(dir, 'child.avhdx')), (e: unknown) =>
    e instanceof VhdxParentMissingError && e.message.includes(join(dir, 'base.vhdx')) && e.code === 'E_VHDX_PARENT_MISSING');
  const report = await checkVhdx(join(dir, 'child.avhdx'));
  assert.equal(report.ok, false);
  assert.match(report.problems[0]!.message, /parent not found/);
  // Move the whole chain to another directory: relative_path finds the parent.
  const dir2 = await tempDir(t, 'vhdx-diff-');
  await rename(join(dir, 'moved.vhdx'), join(dir2, 'base.vhdx'));
  await rename(join(dir, 'child.avhdx'), join(dir2, 'child.avhdx'));
  const dev = await VhdxDevice.open(join(dir2, 'child.avhdx'), { readOnly: true });
  assert.equal(dev.info().parent!.resolvedPath, join(dir2, 'base.vhdx'));
  assert.equal(dev.info().parent!.relativePath, '.\\base.vhdx');
  assert.equal((await dev.read(0, 1))[0], 5);
  await dev.close();
});

test('a parent modified after the child was made (tampered chain) is detected', async (t) => {
  const dir = await tempDir(t, 'vhdx-diff-');
  const base = await VhdxDevice.create(join(dir, 'base.vhdx'), { size: 2 * MiB, blockSize: MiB });
  await base.close();
  const baseId = base.info().diskId;
  const child = await VhdxDevice.create(join(dir, 'child.avhdx'), { size: 0, parent: join(dir, 'base.vhdx') });
  const linkage = child.info().parent!.linkage;
  assert.equal(child.info().diskId, baseId, 'a fork copies the virtual disk id');
  await child.close();
  // Opening the parent read-write without writing keeps the chain valid.
  await (await VhdxDevice.open(join(dir, 'base.vhdx'))).close();
  await (await VhdxDevice.open(join(dir, 'child.avhdx'))).close();
  const b = await VhdxDevice.open(join(dir, 'base.vhdx'));
  await b.write(0, Buffer.from('changed'));
  await b.close();
  await assert.rejects(VhdxDevice.open(join(dir, 'child.avhdx'), { readOnly: true }), (e: unknown) =>
    e instanceof VhdxParentMismatchError && e.message.includes(linkage) && e.data.mergePending === false);
  const report = await checkVhdx(join(dir, 'child.avhdx'));
  assert.equal(report.ok, false);
  assert.match(report.problems.map((p) => p.message).join('\n'), /modified after this disk was created/);
});

test('create refuses an existing path, a fixed differencing disk, and bad geometry', async (t) => {
  const dir = await tempDir(t, 'vhdx-diff-');
  const p = join(dir, 'a.vhdx');
  await (await VhdxDevice.create(p, { size: MiB })).close();
  await assert.rejects(VhdxDevice.create(p, { size: MiB }), /already exists/);
  await assert.rejects(VhdxDevice.create(join(dir, 'b.vhdx'), { size: 0, parent: p, type: 'fixed' }), /cannot be fixed/);
  await assert.rejects(VhdxDevice.create(join(dir, 'c.vhdx'), { size: MiB, blockSize: 3 * MiB }), /power of two/);
  await assert.rejects(VhdxDevice.create(join(dir, 'd.vhdx'), { size: 1000 }), /multiple of the logical sector size/);
  await assert.rejects(VhdxDevice.create(join(dir, 'e.vhdx'), { size: 65 * 2 ** 40 }), /64 TiB/);
  // The largest disk the format allows (sparse).
  const max = await VhdxDevice.create(join(dir, 'max.vhdx'), { size: 64 * 2 ** 40, blockSize: 256 * MiB });
  await max.write(64 * 2 ** 40 - 3, Buffer.from('end'));
  await max.close();
  const maxRo = await VhdxDevice.open(join(dir, 'max.vhdx'), { readOnly: true });
  assert.equal((await maxRo.read(64 * 2 ** 40 - 3, 3)).toString(), 'end');
  await maxRo.close();
  await assert.rejects(VhdxDevice.create(join(dir, 'f.vhdx'), { size: 0, parent: join(dir, 'nope.vhdx') }), (e: unknown) => e instanceof NotFoundError && /nope\.vhdx/.test(e.message));
  await assert.rejects(VhdxDevice.open(join(dir, 'nope.vhdx')), NotFoundError);
});
