import { test } from 'node:test';
import assert from 'node:assert/strict';
import { tempDir } from '../helpers/tools.js';
import { requireVm } from '../vm/guest.js';
import { assertRecovered, background, killRunnerAt, lastWrite, start, waitWrites, WRITER } from './onlineKit.js';
import { createCheckpoint } from '../../src/checkpoint/checkpoints.js';
import { createMachine } from '../../src/vm/machines.js';

const MiB = 2 ** 20;

test('online: a runner SIGKILLed while merging a checkpoint back is recovered by the waiting remove: merge finished offline, writes kept, no .avhdx, no stale lock', async (t) => {
  if (!(await requireVm(t))) return;
  const home = await tempDir(t);
  const m = await createMachine(home, 'g', { disks: [{ size: 16 * MiB }], memoryMiB: 256, network: false });
  const base = m.disks[0]!.path;
  t.after(() => {
    delete process.env.TIDEMARK_DEBUG_RUNNER_PAUSE_AT;
  });
  // Killed while merging a standard checkpoint back (the guest paused, the parent half written).
  process.env.TIDEMARK_DEBUG_RUNNER_PAUSE_AT = 'merge-copied';
  await start(t, home, 'g', WRITER);
  await waitWrites(m.dir, 2);
  const cp = (await createCheckpoint(home, 'g'))[0]!;
  await waitWrites(m.dir, (await lastWrite(m.dir)) + 3); // into the child
  const remove = background(home, ['checkpoint', 'remove', 'g', cp.id]);
  const n = await killRunnerAt(m.dir, 'merge-copied');
  const r = await remove;
  assert.equal(r.status, 0, `the remove finishes the merge offline: ${r.stderr}`);
  await assertRecovered(home, m.dir, base, n);
});
