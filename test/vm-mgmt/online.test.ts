import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { tempDir } from '../helpers/tools.js';
import { requireVm } from '../vm/guest.js';
import { hashDisk } from './harness.js';
import { assertHoldsWrites, avhdxIn, blockNumbers, lastWrite, ok, start, waitState, waitWrites, WRITER } from './onlineKit.js';
import { readFile } from 'node:fs/promises';
import { parseResults } from '../vm/guest.js';
import { createMachine, showMachine } from '../../src/vm/machines.js';
import { stopMachine } from '../../src/vm/runMachine.js';
import { listRefpoints } from '../../src/checkpoint/refpoints.js';

const MiB = 2 ** 20;
import { exportMachine } from '../../src/export/exportMachine.js';
import { importExport } from '../../src/export/importExport.js';
import { readRunnerJournal } from '../../src/vm/runnerJournal.js';

test('online: backup checkpoint + full/differential/differential/synthetic exports of a guest that keeps writing, each equal to its frozen image', async (t) => {
  if (!(await requireVm(t))) return;
  const home = await tempDir(t);
  const out = await tempDir(t, 'tidemark-exp-');
  const m = await createMachine(home, 'g', { disks: [{ size: 32 * MiB }], memoryMiB: 256, network: false });
  const base = m.disks[0]!.path;
  assert.equal((await start(t, home, 'g', WRITER)).status.state, 'running');
  const atCheckpoint = await waitWrites(m.dir, 3);

  // 1. A backup checkpoint made while the guest writes; the export adopts it. The frozen image is
  //    hashed while frozen (the guest keeps writing its child meanwhile) and must equal the export.
  const cp = ok(home, ['checkpoint', 'create', 'g', '--type', 'backup']);
  assert.equal(cp[0].type, 'backup');
  assert.equal((await showMachine(home, 'g')).status.state, 'running', 'the machine keeps running across the fork');
  const frozenHash: string[] = [];
  const wroteAtFork: number[] = [];
  const exportOnce = async (name: string, opts: { since?: string; merge?: boolean }) => {
    const before = await lastWrite(m.dir);
    const r = await exportMachine(home, 'g', join(out, name), {
      ...opts,
      onFrozen: async (fz) => {
        assert.equal(fz[0]!.frozen, base, 'the frozen image is the base disk');
        assert.notEqual(fz[0]!.current, base, 'the guest writes a child meanwhile');
        const h1 = await hashDisk(fz[0]!.frozen);
        // Writes during the export go to the child: the frozen image does not move.
        await waitWrites(m.dir, (await lastWrite(m.dir)) + 2);
        assert.equal(await hashDisk(fz[0]!.frozen), h1, 'the frozen image does not change while the guest writes');
        frozenHash.push(h1);
      },
    });
    wroteAtFork.push(opts.since ? before : atCheckpoint); // e1 reads the checkpoint made above
    assert.equal(r.manifest.disks[0]!.sha256, frozenHash[frozenHash.length - 1], `${name}: the export holds exactly the frozen image`);
    // Merged back online: the machine runs on its base disk again, no child left, journal agrees.
    const v = await showMachine(home, 'g');
    assert.equal(v.status.state, 'running');
    assert.equal(v.disks[0]!.path, base);
    assert.deepEqual(v.checkpoints, []);
    assert.deepEqual(await avhdxIn(m.dir), []);
    assert.equal((await readRunnerJournal(m.dir))?.disks[0]?.path, base);
    await waitWrites(m.dir, (await lastWrite(m.dir)) + 1); // more writes after the merge
    return r;
  };
  const e1 = await exportOnce('e1', {});
  assert.equal(e1.manifest.kind, 'full');
  assert.equal((await listRefpoints(home, 'g')).length, 1);

  const e2 = await exportOnce('e2', { since: e1.dir });
  const e3 = await exportOnce('e3', { since: e2.dir });
  const e4 = await exportOnce('e4', { since: e3.dir, merge: true });
  assert.equal(e2.manifest.kind, 'differential');
  assert.equal(e2.manifest.disks[0]!.mode, 'differential', JSON.stringify(e2.manifest.warnings));
  assert.equal(e3.manifest.disks[0]!.mode, 'differential', JSON.stringify(e3.manifest.warnings));
  assert.equal(e4.manifest.kind, 'synthetic-full');
  for (const e of [e2, e3]) {
    // Only what the guest wrote since the previous fork (a few KiB blocks), not the whole disk.
    assert.ok(e.manifest.disks[0]!.copied > 0 && e.manifest.disks[0]!.copied < 8 * 2 ** 20, `copied ${e.manifest.disks[0]!.copied}`);
  }

  const nAfter = await lastWrite(m.dir);
  assert.equal((await stopMachine(home, 'g')).status.state, 'off');
  assertHoldsWrites(await blockNumbers(base), nAfter, 'the base disk after stop');
  assert.equal(await readRunnerJournal(m.dir), undefined, 'a clean stop leaves no journal');

  // 4. Every export imports as a new machine whose disk is exactly the image frozen at its fork.
  for (const [i, e] of [e1, e2, e3, e4].entries()) {
    const v = await importExport(home, e.dir, { copy: true, newId: true, name: `imp${i + 1}` });
    assert.equal(await hashDisk(v.disks[0]!.path), frozenHash[i], `import of export ${i + 1}`);
    assertHoldsWrites(await blockNumbers(v.disks[0]!.path), wroteAtFork[i]!, `import of export ${i + 1}`);
  }

  // 5. Boot every import: the guest reads its whole disk through Tidemark's NBD server (for imp2/imp3 a
  //    relinked .avhdx chain over the base export) and must see exactly the image frozen at that fork.
  for (let i = 0; i < 4; i++) {
    const name = `imp${i + 1}`;
    const v = await start(t, home, name, 'result sha "$(sha /dev/vda)"\nresult seen "$(dd if=/dev/vda bs=4096 skip=20 count=1 2>/dev/null | head -c 14)"');
    await waitState(home, name, 'off', 120_000);
    const res = parseResults(await readFile(join(v.dir, 'console.log'), 'utf8'));
    assert.equal(res.sha, frozenHash[i], `${name}: the booted guest reads the image frozen at fork ${i + 1}`);
    assert.match(res.seen ?? '', /^block \d{8}$/, `${name}: the guest sees its own writes`);
  }
});
