import { test } from 'node:test';
import assert from 'node:assert/strict';
import { stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import fc from 'fast-check';
import { childOwnRanges, mergeDisk } from '../../src/disk/mergeDisk.js';
import { enableTracking } from '../../src/rct/enableTracking.js';
import { openRctHandle } from '../../src/rct/openRctHandle.js';
import { readRct } from '../../src/rct/ChangeTracker.js';
import type { Range } from '../../src/rct/Range.js';
import { mergeJournalPath } from '../../src/vhdx/mergeVhdx.js';
import { VhdxDevice } from '../../src/vhdx/VhdxDevice.js';
import { fcSeed, tempDir } from '../helpers/tools.js';
import { BS, KiB, MiB, assertCovers, changes, cli, ok, readAll, seal, startCli, tidemarkWrite, verdictNow } from './integrationKit.js';
import { blocksOf } from './rctTestKit.js';

/**
 * `tidemark disk merge <child>` into a parent with change tracking enabled, through the real CLI: the
 * child's own ranges are recorded in the parent's tracking before the merge writes, the parent's new
 * identity is recorded after, so older IDs stay valid and cover every byte whose content changed — also
 * when the merge is killed midway and resumed.
 */

const blocks = (ranges: Range[]) => [...blocksOf(ranges, BS)].sort((x, y) => x - y);

test('merge of a differencing child into a tracked parent: changes since an older ID cover every changed byte', async (t) => {
  const dir = await tempDir(t, 'tidemark-rctint-');
  const parent = join(dir, 'parent.vhdx');
  const child = join(dir, 'child.vhdx');
  await ok('disk', 'create', parent, '--size', '12M', '--block-size', '1M');
  await ok('rct', 'enable', parent, '--block-size', '64K');
  await tidemarkWrite(parent, [[0, 12 * MiB]], 0x11);
  const id1 = await seal(parent);
  await tidemarkWrite(parent, [[10 * MiB + 512 * KiB, 4096]], 0x22);
  const id2 = await seal(parent);

  await ok('disk', 'create', child, '--parent', parent);
  const c = await VhdxDevice.open(child);
  await c.write(2 * MiB, Buffer.alloc(MiB, 0x33)); // a whole block
  await c.write(5 * MiB + 512, Buffer.alloc(1024, 0x44)); // two sectors: a partially present block
  await c.write(7 * MiB + 300 * KiB, Buffer.alloc(200 * KiB, 0x55));
  await c.write(8 * MiB + 700 * KiB, Buffer.alloc(5000, 0x11)); // same bytes as the parent: no content change
  await c.zero(9 * MiB, MiB); // hides the parent's data
  await c.trim(11 * MiB, 64 * KiB);
  await c.close();

  const own = await childOwnRanges(child);
  assert.ok(own.length >= 4, `the child holds its own ranges: ${JSON.stringify(own)}`);
  const before = await readAll(parent);
  const viaChild = await readAll(child);
  const res = JSON.parse(await ok('disk', 'merge', child, '--json'));
  await assert.rejects(stat(child), 'the child is gone');
  const after = await readAll(parent);
  assert.ok(after.equals(viaChild), 'the merged parent reads as the child did');
  assert.ok(!after.equals(before));
  assert.deepEqual(res.tracking.marked, own, 'the merge marked exactly the child\'s own ranges');

  const since1 = await changes(parent, id1);
  const since2 = await changes(parent, id2);
  assertCovers(since2, before, after, 'changes since an ID sealed before the merge');
  assertCovers(since1, before, after, 'changes since an older ID');
  assert.deepEqual(blocks(since2), blocks(own), 'exactly the blocks the merge rewrote');
  assert.deepEqual(blocks(since1), [...new Set([...blocks(own), (10 * MiB + 512 * KiB) / BS])].sort((x, y) => x - y));
  assert.equal(await verdictNow(parent), 'clean', 'the parent\'s new DataWriteGuid was recorded');
  assert.deepEqual(await changes(parent, id2), since2, 'older IDs stay valid after a tracked open');
});

test('merge into an untracked parent still works and reports no tracking', async (t) => {
  const dir = await tempDir(t, 'tidemark-rctint-');
  const parent = join(dir, 'parent.vhdx');
  const child = join(dir, 'child.vhdx');
  await ok('disk', 'create', parent, '--size', '4M', '--block-size', '1M');
  await ok('disk', 'create', child, '--parent', parent);
  const c = await VhdxDevice.open(child);
  await c.write(MiB, Buffer.alloc(4096, 7));
  await c.close();
  const res = JSON.parse(await ok('disk', 'merge', child, '--json'));
  assert.equal(res.tracking, undefined);
  assert.equal((await readAll(parent))[MiB], 7);
});

test('merge killed midway and resumed: older IDs stay valid and still cover every changed byte', async (t) => {
  const dir = await tempDir(t, 'tidemark-rctint-');
  const parent = join(dir, 'parent.vhdx');
  const child = join(dir, 'child.vhdx');
  await ok('disk', 'create', parent, '--size', '48M', '--block-size', '1M');
  await ok('rct', 'enable', parent, '--block-size', '64K');
  await tidemarkWrite(parent, [[0, MiB], [40 * MiB, 2 * MiB]], 0x11);
  const id1 = await seal(parent);

  await ok('disk', 'create', child, '--parent', parent);
  const c = await VhdxDevice.open(child);
  for (let m = 0; m < 40; m += 2) await c.write(m * MiB, Buffer.alloc(MiB, 0x30 + m)); // 20 whole blocks
  await c.write(41 * MiB + 4096, Buffer.alloc(512, 0x77));
  await c.close();
  const own = await childOwnRanges(child);
  const before = await readAll(parent);
  const expected = await readAll(child);

  // Kill the merge as soon as its journal exists (the parent is about to change, or is changing).
  const journal = mergeJournalPath(child);
  const proc = startCli('disk', 'merge', child);
  const exited = new Promise<void>((r) => proc.on('exit', () => r()));
  let seen = false;
  const t0 = Date.now();
  while (!seen) {
    seen = await stat(journal).then(() => true, () => false);
    if (!seen && proc.exitCode !== null) break;
    if (!seen) await new Promise((r) => setTimeout(r, 2));
  }
  t.diagnostic(`journal seen after ${Date.now() - t0} ms`);
  proc.kill('SIGKILL');
  await exited;
  assert.ok(seen, 'the merge started');
  if (await stat(child).then(() => true, () => false)) {
    // Killed mid-merge: the marks were durable before the parent changed, vouched for by the journal.
    const st = await readRct(parent);
    assert.equal(st!.clean, false, 'the tracked operation was in progress');
    assert.ok(st!.identities.includes(`journal:${resolve(journal)}`), `the journal vouches for the parent: ${st!.identities}`);
    const ids = st!.ids.map((x) => x.pages.length);
    assert.ok(ids.some((n) => n > 0), 'the child\'s ranges were recorded before the merge wrote');
  } else {
    t.diagnostic('the merge finished before the kill landed; the resume below only cleans up');
  }

  const t1 = Date.now();
  const resumed = JSON.parse(await ok('disk', 'merge', child, '--json'));
  assert.equal(resumed.tracking.tracked, true);
  assert.equal(resumed.tracking.restarted, undefined, 'the interrupted merge was recognised by its journal, tracking not restarted');
  t.diagnostic(`resume took ${Date.now() - t1} ms`);
  await assert.rejects(stat(child));
  const after = await readAll(parent);
  assert.ok(after.equals(expected), 'the resumed merge completed');
  const since1 = await changes(parent, id1);
  assertCovers(since1, before, after, 'changes since an ID sealed before the interrupted merge');
  for (const b of blocks(since1)) assert.ok(blocks(own).includes(b), `block ${b} reported but the child never held it`);
  assert.equal(await verdictNow(parent), 'clean');
});

test('property: after merging a random child into a tracked parent, changes since an older ID cover every changed byte and only the child\'s blocks', async (t) => {
  const dir = await tempDir(t, 'tidemark-rctint-');
  const size = 6 * MiB;
  const opArb = fc.record({
    kind: fc.constantFrom('write', 'write', 'zero', 'trim'),
    offset: fc.integer({ min: 0, max: size - 1 }),
    length: fc.integer({ min: 1, max: 1536 * KiB }),
    fill: fc.integer({ min: 1, max: 255 }),
  });
  let run = 0;
  await fc.assert(
    fc.asyncProperty(fc.array(opArb, { minLength: 1, maxLength: 8 }), async (ops) => {
      const parent = join(dir, `p${run}.vhdx`);
      const child = join(dir, `c${run++}.vhdx`);
      await (await VhdxDevice.create(parent, { size, blockSize: MiB })).close();
      await enableTracking(parent);
      await tidemarkWrite(parent, [[MiB, 3 * MiB]], 0x11);
      const h = await openRctHandle(parent, { mutate: true });
      const id = await h.seal();
      await h.close();
      await (await VhdxDevice.create(child, { size, parent })).close();
      const c = await VhdxDevice.open(child);
      for (const op of ops) {
        const len = Math.min(op.length, size - op.offset);
        if (op.kind === 'write') await c.write(op.offset, Buffer.alloc(len, op.fill));
        else if (op.kind === 'zero') await c.zero(op.offset, len);
        else await c.trim(op.offset, len);
      }
      await c.close();
      const own = await childOwnRanges(child);
      const before = await readAll(parent);
      const expected = await readAll(child);
      const r = await mergeDisk(child);
      assert.deepEqual(r.tracking?.marked, own);
      const after = await readAll(parent);
      assert.ok(after.equals(expected));
      const q = await openRctHandle(parent);
      const since = await q.changes(id);
      await q.close();
      assertCovers(since, before, after, 'changes since the ID sealed before the merge');
      assert.deepEqual(blocks(since), blocks(own));
    }),
    { numRuns: 15, seed: fcSeed() },
  );
});
