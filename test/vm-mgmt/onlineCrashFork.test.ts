import { test } from 'node:test';
import assert from 'node:assert/strict';
import { tempDir } from '../helpers/tools.js';
import { requireVm } from '../vm/guest.js';
import { assertRecovered, background, killRunnerAt, lastWrite, start, waitWrites, WRITER } from './onlineKit.js';
import { createCheckpoint } from '../../src/checkpoint/checkpoints.js';
import { createMachine } from '../../src/vm/machines.js';

const MiB = 2 ** 20;

test('online: a runner SIGKILLed mid-fork, the guest already writing the unrecorded child, is recovered: writes merged back, no .avhdx, no stale lock', async (t) => {
  if (!(await requireVm(t))) return;
  const home = await tempDir(t);
  const m = await createMachine(home, 'g', { disks: [{ size: 16 * MiB }], memoryMiB: 256, network: false });
  const base = m.disks[0]!.path;
  t.after(() => {
    delete process.env.TIDEMARK_DEBUG_RUNNER_PAUSE_AT;
  });
  // Killed after the fork resumed the guest on the child, before the CLI recorded the checkpoint.
  process.env.TIDEMARK_DEBUG_RUNNER_PAUSE_AT = 'fork-resumed';
  await start(t, home, 'g', WRITER);
  await waitWrites(m.dir, 3);
  const create = background(home, ['checkpoint', 'create', 'g']);
  const n = await killRunnerAt(m.dir, 'fork-resumed', async () => {
    await waitWrites(m.dir, (await lastWrite(m.dir)) + 3); // these land in the unrecorded child only
  });
  const r = await create;
  assert.notEqual(r.status, 0, `the checkpoint was not made: ${r.stderr}`);
  assert.match(r.stderr, /went away during the checkpoint/);
  await assertRecovered(home, m.dir, base, n);
});
