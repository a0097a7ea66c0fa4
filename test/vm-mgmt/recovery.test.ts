import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import fc from 'fast-check';
import { fcSeed, tempDir } from '../helpers/tools.js';
import { hashDisk, MAIN, ok, writeDisk } from './harness.js';

const MiB = 2 ** 20;
const STEPS = ['checkpoint', 'disk0', 'disk1', 'manifest', 'refpoint'];

/** Start `tidemark export` pausing after each step; SIGKILL it once it reports `step`. Calls `whilePaused` first. */
function killExportAt(home: string, vm: string, dir: string, since: string, step: string, whilePaused: (pid: number) => Promise<void>): Promise<void> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [MAIN, 'export', vm, dir, '--since', since, '--home', home], {
      env: { ...process.env, TIDEMARK_DEBUG_STEPS: '60000', TIDEMARK_DEBUG_PAUSE_AT: step },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let err = '';
    let killed = false;
    p.stderr.setEncoding('utf8').on('data', (s: string) => {
      err += s;
      if (!killed && err.includes(`tidemark-step ${step}\n`)) {
        killed = true;
        whilePaused(p.pid!).then(() => p.kill('SIGKILL'), (e) => {
          p.kill('SIGKILL');
          reject(e);
        });
      }
    });
    p.on('exit', (code, signal) => {
      if (signal === 'SIGKILL') resolve();
      else reject(new Error(`export exited ${code} before step ${step}: ${err}`));
    });
  });
}

test('SIGKILL of an export at a random step: the next command recovers and the next differential is correct', async (t) => {
  const home = await tempDir(t);
  const out = await tempDir(t, 'tidemark-exp-');
  const m = ok(home, ['vm', 'create', 'k', '--disk', '16M', '--disk', '8M']);
  const [d0, d1] = m.disks.map((d: any) => d.path as string);
  await writeDisk(d0, [[0, randomBytes(MiB)]]);
  let base = ok(home, ['export', 'k', join(out, 'full')])[0].manifest.refpoint.id as string;

  // Two distinct steps, drawn from the fast-check seed (FC_SEED overrides; printed below).
  const steps = fc.sample(fc.uniqueArray(fc.constantFrom(...STEPS), { minLength: 2, maxLength: 2 }), { seed: fcSeed(), numRuns: 1 })[0]!;
  t.diagnostic(`kill steps: ${steps.join(', ')} (seed ${fcSeed()})`);
  for (const [i, step] of steps.entries()) {
    await writeDisk(d0, [[(2 + i) * MiB + 100, randomBytes(3000)]]);
    await writeDisk(d1, [[(1 + i) * MiB, randomBytes(512)]]);
    await killExportAt(home, 'k', join(out, `killed${i}`), base, step, async (pid) => {
      const held = ok(home, ['vm', 'show', 'k']);
      assert.equal(held.status.state, 'held');
      assert.equal(held.status.holder.pid, pid);
      assert.equal(held.status.holder.command, 'tidemark export');
      assert.ok(Date.parse(held.status.holder.since) <= Date.now());
    });

    // The next command finds the dead holder's checkpoint and merges it back.
    const shown = ok(home, ['vm', 'show', 'k']);
    assert.equal(shown.status.state, 'off');
    assert.deepEqual(shown.checkpoints, []);
    assert.deepEqual(shown.disks.map((d: any) => d.path), [d0, d1]);
    assert.deepEqual((await readdir(m.dir)).filter((f) => f.endsWith('.avhdx')), [], 'no leftover .avhdx');
    await writeDisk(d0, [[8 * MiB, randomBytes(4096)]]); // no stale lock: the disk can be written

    // A reference point survives only if the killed export recorded it (after its manifest was durable).
    const refs = ok(home, ['refpoint', 'list', 'k']);
    const newest = refs[refs.length - 1];
    if (step === 'refpoint') assert.equal(newest.exportDir, join(out, `killed${i}`));
    else assert.equal(newest.id, base);
    base = newest.id;

    const e = ok(home, ['export', 'k', join(out, `after${i}`), '--since', base])[0];
    assert.deepEqual(e.manifest.disks.map((d: any) => d.mode), ['differential', 'differential']);
    assert.deepEqual(e.manifest.disks.map((d: any) => d.sha256), [await hashDisk(d0), await hashDisk(d1)]);
    base = e.manifest.refpoint.id;
  }
});
