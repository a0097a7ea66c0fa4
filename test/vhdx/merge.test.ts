import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { access, readFile } from 'node:fs/promises';
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
  let killedMidMerge = 0;
  // Kill before the journal exists, then at growing delays after it appears (mid-copy, mid-flush, mid-delete).
  for (const delay of [-1, 0, 2, 5, 10, 20, 40, 80]) {
    if (!(await exists(top)) && !(await exists(mergeJournalPath(top)))) break;
    const journalText = () => readFile(mergeJournalPath(top), 'utf8').catch(() => '');
    const before = await journalText();
    const child = spawn(process.execPath, [mergeWorker, top], { stdio: 'ignore' });
    const exited = new Promise((r) => child.on('exit', r));
    if (delay < 0) await new Promise((r) => setTimeout(r, 30));
    else {
      const t0 = Date.now();
      // Wait until this run has written its journal (a new accepted GUID), i.e. it is about to write the parent.
      while ((await journalText()) === before && child.exitCode === null && Date.now() - t0 < 20000) await new Promise((r) => setTimeout(r, 1));
      await new Promise((r) => setTimeout(r, delay));
    }
    const journalBefore = await exists(mergeJournalPath(top));
    if (child.kill('SIGKILL') && journalBefore) killedMidMerge++;
    await exited;
    // Whatever state the kill left: the chain is either intact (top reads as before) or mid is mid-merge.
    if (await exists(top)) {
      const journal = await exists(mergeJournalPath(top));
      if (process.env.VHDX_DEBUG) console.error('delay', delay, 'journal', journal);
      // Either the parent was not written yet (the chain reads exactly as before), or it was, and the
      // child is refused with a pointer to the pending merge (or the parent's log needs replaying).
      const opened = await VhdxDevice.open(top, { readOnly: true }).then((d) => d, (e: unknown) => e);
      if (process.env.VHDX_DEBUG) console.error('opened', opened instanceof VhdxDevice ? 'ok' : String(opened).slice(0, 80));
      if (opened instanceof VhdxDevice) {
        assert.ok((await opened.read(0, expectedTop.length)).equals(expectedTop), 'chain untouched');
        await opened.close();
      } else {
        assert.ok(journal, 'the chain is only ever broken while a merge journal exists');
        assert.ok(opened instanceof VhdxParentMismatchError ? opened.data.mergePending === true : /replay|log/i.test(String(opened)), String(opened));
      }
    }
  }
  assert.ok(killedMidMerge > 0, 'at least one merge was killed after it started writing the parent');
  void expectedMid;
  // Finish: re-run the merge (it resumes) and check every byte.
  if ((await exists(top)) || (await exists(mergeJournalPath(top)))) await mergeVhdx(top);
  assert.equal(await exists(top), false);
  assert.equal(await exists(mergeJournalPath(top)), false);
  const m = await VhdxDevice.open(mid, { readOnly: true });
  assert.ok((await m.read(0, expectedTop.length)).equals(expectedTop));
  await m.close();
  assert.equal((await checkVhdx(mid)).ok, true);
});
