import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import fc from 'fast-check';
import { fcSeed, tempDir } from '../helpers/tools.js';
import { hashDisk, MAIN, writeDisk } from './harness.js';
import { createMachine, showMachine } from '../../src/vm/machines.js';
import { applyCheckpoint, createCheckpoint, listCheckpoints } from '../../src/checkpoint/checkpoints.js';

const MiB = 2 ** 20;
const STEPS = ['apply-children', 'apply-commit', 'apply-deleted'];
const exists = (p: string) => stat(p).then(() => true, () => false);

/** Run `tidemark checkpoint apply` pausing at `step`, SIGKILL it there. */
function killApplyAt(home: string, vm: string, cp: string, step: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [MAIN, 'checkpoint', 'apply', vm, cp, '--home', home], {
      env: { ...process.env, TIDEMARK_DEBUG_STEPS: '60000', TIDEMARK_DEBUG_PAUSE_AT: step },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let err = '';
    p.stderr.setEncoding('utf8').on('data', (s: string) => {
      err += s;
      if (err.includes(`tidemark-step ${step}\n`)) p.kill('SIGKILL');
    });
    p.on('exit', (code, signal) => (signal === 'SIGKILL' ? resolve() : reject(new Error(`apply exited ${code} before step ${step}: ${err}`))));
  });
}

test('SIGKILL of checkpoint apply at each step (seeded order): old or new state, never a missing file; recovery deletes the orphans', async (t) => {
  const home = await tempDir(t);
  const order = fc.sample(fc.shuffledSubarray(STEPS, { minLength: STEPS.length, maxLength: STEPS.length }), { seed: fcSeed(), numRuns: 1 })[0]!;
  t.diagnostic(`kill steps: ${order.join(', ')} (seed ${fcSeed()})`);
  for (const [round, step] of order.entries()) {
    const name = `a${round}`;
    const m = await createMachine(home, name, { disks: [{ size: 8 * MiB }, { size: 4 * MiB }] });
    const [d0, d1] = m.disks.map((d) => d.path) as [string, string];
    await writeDisk(d0, [[0, randomBytes(MiB)]]);
    await writeDisk(d1, [[MiB, randomBytes(4096)]]);
    const atC1 = [await hashDisk(d0), await hashDisk(d1)];
    const [c1] = await createCheckpoint(home, name, { name: 'c1' });
    const cur = async () => (await showMachine(home, name)).disks.map((d) => d.path);
    await writeDisk((await cur())[0]!, [[2 * MiB, randomBytes(8192)]]);
    await createCheckpoint(home, name, { name: 'c2' });
    await writeDisk((await cur())[1]!, [[0, randomBytes(4096)]]);
    const latest = await Promise.all((await cur()).map(hashDisk));
    assert.notDeepEqual(latest, atC1);

    await killApplyAt(home, name, 'c1', step);

    // The next command recovers: the state is the old one (killed before the commit) or the new one.
    const cps = await listCheckpoints(home, name);
    const shown = await showMachine(home, name);
    const hashes = await Promise.all(shown.disks.map((d) => hashDisk(d.path)));
    if (step === 'apply-children') {
      assert.deepEqual(cps.map((c) => c.name), ['c1', 'c2']);
      assert.deepEqual(hashes, latest, 'killed before the commit: nothing discarded');
    } else {
      assert.deepEqual(cps.map((c) => c.name), ['c1']);
      assert.deepEqual(hashes, atC1, 'killed after the commit: the checkpoint is applied');
      assert.notDeepEqual(cps[0]!.disks.map((d) => d.child), c1!.disks.map((d) => d.child), 'fresh children under new names');
    }
    // Every file the inventory references exists, and no other checkpoint disk is left in the folder.
    const referenced = new Set([...shown.disks.map((d) => d.path), ...cps.flatMap((c) => c.disks.flatMap((d) => [d.parent, d.child]))]);
    for (const p of referenced) assert.ok(await exists(p), `${p} exists`);
    const avhdx = (await readdir(m.dir)).filter((f) => f.endsWith('.avhdx')).map((f) => join(m.dir, f));
    assert.deepEqual(avhdx.filter((p) => !referenced.has(p)), [], 'no orphan children after recovery');

    // The machine goes on: apply again completes; its disks are writable.
    await applyCheckpoint(home, name, 'c1');
    const after = await showMachine(home, name);
    assert.deepEqual(await Promise.all(after.disks.map((d) => hashDisk(d.path))), atC1);
    await writeDisk(after.disks[0]!.path, [[3 * MiB, randomBytes(512)]]);
    assert.deepEqual((await readdir(m.dir)).filter((f) => f.endsWith('.avhdx')).length, 2, 'one child per disk');
  }
});
