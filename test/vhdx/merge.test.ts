import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { access } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { VhdxDevice } from '../../src/vhdx/VhdxDevice.js';
import { checkVhdx } from '../../src/vhdx/checkVhdx.js';
import { VhdxParentMismatchError } from '../../src/vhdx/errors.js';
import { mergeJournalPath, mergeVhdx } from '../../src/vhdx/mergeVhdx.js';
import { requireTools, run, tempDir } from '../helpers/tools.js';
import { pattern } from './helpers.js';

const MiB = 1024 * 1024;
const mergeWorker = fileURLToPath(new URL('./fixtures/mergeWorker.js', import.meta.url));
const exists = (p: string) => access(p).then(() => true, () => false);

/** base (dynamic) <- mid (diff) <- top (diff), with full blocks, partial sectors, zeroed blocks. Returns the expected top content. */
async function chain(dir: string, size = 12 * MiB): Promise<{ base: string; mid: string; top: string; expectedTop: Buffer; expectedMid: Buffer }> {
  const base = join(dir, 'base.vhdx');
  const mid = join(dir, 'mid.avhdx');
  const top = join(dir, 'top.avhdx');
  const shadow = pattern(size, 1);
  const b = await VhdxDevice.create(base, { size, blockSize: MiB });
  await b.write(0, shadow);
  await b.close();
  const m = await VhdxDevice.create(mid, { size: 0, parent: base });
  const w1 = pattern(3 * MiB, 2);
  await m.write(2 * MiB + 999, w1);
  w1.copy(shadow, 2 * MiB + 999);
  await m.close();
  const expectedMid = Buffer.from(shadow);
  const t = await VhdxDevice.create(top, { size: 0, parent: mid });
  const w2 = pattern(MiB, 3);
  await t.write(MiB, w2); // a whole block
  w2.copy(shadow, MiB);
  const w3 = pattern(777, 4);
  await t.write(7 * MiB + 5, w3); // partial sectors
  w3.copy(shadow, 7 * MiB + 5);
  await t.zero(9 * MiB, MiB); // ZERO block hides the parent
  shadow.fill(0, 9 * MiB, 10 * MiB);
  await t.write(11 * MiB + 100, pattern(10, 5));
  pattern(10, 5).copy(shadow, 11 * MiB + 100);
  await t.close();
  return { base, mid, top, expectedTop: shadow, expectedMid };
}

test('merge copies the child into its parent, deletes the child, and makes other children of the parent stale', async (t) => {
  const dir = await tempDir(t, 'vhdx-merge-');
  const { mid, top, base, expectedTop } = await chain(dir);
  // A sibling of top: it must be refused after the merge changes mid.
  const sib = join(dir, 'sibling.avhdx');
  await (await VhdxDevice.create(sib, { size: 0, parent: mid })).close();
  const midId = (await VhdxDevice.open(mid, { readOnly: true }).then(async (d) => { const i = d.info().dataWriteGuid; await d.close(); return i; }));
  await mergeVhdx(top);
  assert.equal(await exists(top), false, 'child removed');
  assert.equal(await exists(mergeJournalPath(top)), false, 'journal removed');
  const m = await VhdxDevice.open(mid, { readOnly: true });
  assert.ok((await m.read(0, expectedTop.length)).equals(expectedTop));
  assert.notEqual(m.info().dataWriteGuid, midId);
  assert.deepEqual(m.parentChain(), [mid, base]);
  await m.close();
  assert.equal((await checkVhdx(mid)).ok, true);
  await assert.rejects(VhdxDevice.open(sib), VhdxParentMismatchError);
  // Merging mid into the dynamic base: qemu agrees on the result.
  await mergeVhdx(mid);
  const b = await VhdxDevice.open(base, { readOnly: true });
  assert.ok((await b.read(0, expectedTop.length)).equals(expectedTop));
  await b.close();
  if (requireTools(t, 'qemu-img')) {
    assert.equal(run('qemu-img', ['check', '-f', 'vhdx', base], { allowFail: true }).status, 0);
    run('qemu-img', ['convert', '-f', 'vhdx', '-O', 'raw', base, join(dir, 'b.raw')]);
    const raw = await import('node:fs/promises').then((f) => f.readFile(join(dir, 'b.raw')));
    assert.ok(raw.equals(expectedTop));
  }
});

test('merge interrupted by SIGKILL at random points resumes and loses nothing', async (t) => {
  const dir = await tempDir(t, 'vhdx-merge-');
  const { mid, top, expectedTop, expectedMid } = await chain(dir, 24 * MiB);
  // Make top big enough that the merge takes a while: many full blocks.
  const tdev = await VhdxDevice.open(top);
  const bulk = pattern(10 * MiB, 8);
  await tdev.write(12 * MiB, bulk);
  bulk.copy(expectedTop, 12 * MiB);
  await tdev.close();
  let killed = 0;
  for (const delay of [5, 40, 90, 150, 250]) {
    if (!(await exists(top))) break;
    const child = spawn(process.execPath, [mergeWorker, top], { stdio: 'ignore' });
    await new Promise((r) => setTimeout(r, delay));
    if (child.kill('SIGKILL')) killed++;
    await new Promise((r) => child.on('exit', r));
    // Whatever state the kill left: the chain is either intact (top reads as before) or mid is mid-merge.
    if (await exists(top)) {
      const journal = await exists(mergeJournalPath(top));
      if (process.env.VHDX_DEBUG) console.error('delay', delay, 'journal', journal);
      if (!journal) {
        const d = await VhdxDevice.open(top, { readOnly: true });
        assert.ok((await d.read(0, expectedTop.length)).equals(expectedTop), 'no journal: the chain is untouched');
        await d.close();
      } else {
        await assert.rejects(VhdxDevice.open(top, { readOnly: true }), (e: unknown) => e instanceof VhdxParentMismatchError ? e.data.mergePending === true : /dirty|replay|log/i.test(String(e)));
      }
    }
  }
  assert.ok(killed > 0, 'at least one merge was killed mid-way');
  void expectedMid;
  // Finish: re-run the merge (it resumes) and check every byte.
  if (await exists(top)) await mergeVhdx(top);
  assert.equal(await exists(top), false);
  assert.equal(await exists(mergeJournalPath(top)), false);
  const m = await VhdxDevice.open(mid, { readOnly: true });
  assert.ok((await m.read(0, expectedTop.length)).equals(expectedTop));
  await m.close();
  assert.equal((await checkVhdx(mid)).ok, true);
});
