import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { tempDir } from '../helpers/tools.js';
import { requireVm } from '../vm/guest.js';
import { MAIN } from './harness.js';
import { assertHoldsWrites, avhdxIn, blockNumbers, lastWrite, start, waitWrites, WRITER } from './onlineKit.js';
import { DiskLock } from '../../src/blockdev/DiskLock.js';
import { createCheckpoint } from '../../src/checkpoint/checkpoints.js';
import { createMachine, showMachine } from '../../src/vm/machines.js';
import { stopMachine } from '../../src/vm/runMachine.js';
import { readRunnerJournal } from '../../src/vm/runnerJournal.js';

const MiB = 2 ** 20;

/** Run the CLI in the background; resolves with its exit status and stderr. */
function background(home: string, args: string[]): Promise<{ status: number | null; stderr: string }> {
  return new Promise((resolve) => {
    const c = spawn(process.execPath, [MAIN, ...args, '--home', home], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    c.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    c.on('close', (status) => resolve({ status, stderr }));
  });
}

async function waitLog(path: string, text: string, ms = 60_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await readFile(path, 'utf8').catch(() => '')).includes(text)) {
    if (Date.now() > deadline) throw new Error(`${path} never showed "${text}": ${await readFile(path, 'utf8').catch(() => '')}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The runner is SIGKILLed at `step`; returns the highest write the guest reported before the kill. */
async function killRunnerAt(home: string, dir: string, step: string, during: () => Promise<void> = async () => undefined): Promise<number> {
  await waitLog(join(dir, 'runner.log'), `tidemark-runner-step ${step}`);
  await during();
  const n = await lastWrite(dir);
  const rt = (await showMachine(home, 'g')).status.runtime!;
  process.kill(rt.pid, 'SIGKILL');
  return n;
}

async function assertRecovered(home: string, dir: string, base: string, n: number): Promise<void> {
  const v = await showMachine(home, 'g');
  assert.equal(v.status.state, 'off', 'the machine is off (runner dead, its QEMU killed by recovery)');
  assert.equal(v.disks[0]!.path, base, 'back on the base disk');
  assert.deepEqual(v.checkpoints, []);
  assert.deepEqual(await avhdxIn(dir), [], 'no checkpoint disk left');
  assert.equal(await readRunnerJournal(dir), undefined, 'the journal is gone once reconciled');
  const lock = await DiskLock.acquire(base, { exclusive: true, holder: 'test' }); // no stale lock
  await lock.release();
  assertHoldsWrites(await blockNumbers(base), n, 'the base disk after recovery');
}

test('online: a runner SIGKILLed mid-fork (guest already writing the child) or mid-merge is recovered: writes kept, no .avhdx, no stale lock', async (t) => {
  if (!(await requireVm(t))) return;
  const home = await tempDir(t);
  const m = await createMachine(home, 'g', { disks: [{ size: 16 * MiB }], memoryMiB: 256, network: false });
  const base = m.disks[0]!.path;
  t.after(() => {
    delete process.env.TIDEMARK_DEBUG_RUNNER_PAUSE_AT;
    return stopMachine(home, 'g', { force: true }).catch(() => undefined);
  });

  // 1. Killed after the fork resumed the guest on the child, before the CLI recorded the checkpoint.
  process.env.TIDEMARK_DEBUG_RUNNER_PAUSE_AT = 'fork-resumed';
  await start(home, 'g', WRITER);
  await waitWrites(m.dir, 3);
  const create = background(home, ['checkpoint', 'create', 'g']);
  const n1 = await killRunnerAt(home, m.dir, 'fork-resumed', async () => {
    await waitWrites(m.dir, (await lastWrite(m.dir)) + 3); // these land in the unrecorded child only
  });
  const r1 = await create;
  assert.notEqual(r1.status, 0, 'the checkpoint was not made');
  assert.match(r1.stderr, /went away during the checkpoint/);
  await assertRecovered(home, m.dir, base, n1);

  // 2. Killed while merging a standard checkpoint back (the guest paused, the parent half written).
  process.env.TIDEMARK_DEBUG_RUNNER_PAUSE_AT = 'merge-copied';
  await start(home, 'g', WRITER);
  await waitWrites(m.dir, (await lastWrite(m.dir)) + 2);
  const cp = (await createCheckpoint(home, 'g'))[0]!;
  await waitWrites(m.dir, (await lastWrite(m.dir)) + 3); // into the child
  const remove = background(home, ['checkpoint', 'remove', 'g', cp.id]);
  const n2 = await killRunnerAt(home, m.dir, 'merge-copied');
  const r2 = await remove;
  assert.equal(r2.status, 0, `the remove finishes the merge offline: ${r2.stderr}`);
  await assertRecovered(home, m.dir, base, n2);
});
