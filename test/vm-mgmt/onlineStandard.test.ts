import { test } from 'node:test';
import assert from 'node:assert/strict';
import { tempDir } from '../helpers/tools.js';
import { requireVm } from '../vm/guest.js';
import { cli, hashDisk } from './harness.js';
import { assertHoldsWrites, avhdxIn, blockNumbers, lastWrite, ok, slotOf, start, waitWrites, WRITER } from './onlineKit.js';
import { createGroup, createMachine, showMachine } from '../../src/vm/machines.js';
import { stopMachine } from '../../src/vm/runMachine.js';
import { applyCheckpoint, createCheckpoint, removeCheckpoint } from '../../src/checkpoint/checkpoints.js';
import { VmBusyError } from '../../src/vm/errors.js';

const MiB = 2 ** 20;
import { openRctHandle } from '../../src/rct/openRctHandle.js';

test('online: standard checkpoints of a running guest (group fork, a chain of two, removed online) keep every acknowledged write', async (t) => {
  if (!(await requireVm(t))) return;
  const home = await tempDir(t);
  const a = await createMachine(home, 'a', { disks: [{ size: 16 * MiB }], memoryMiB: 256, network: false });
  const b = await createMachine(home, 'b', { disks: [{ size: 16 * MiB }], memoryMiB: 256, network: false });
  await createGroup(home, 'grp', ['a', 'b']);
  const base = a.disks[0]!.path;
  assert.equal((await start(t, home, 'a', WRITER)).status.state, 'running');
  await waitWrites(a.dir, 3);
  // An RCT ID sealed through the runner's control socket before the checkpoints.
  const h0 = await openRctHandle(base, { mutate: true });
  const id0 = await h0.seal();
  await h0.close();
  const n0 = await lastWrite(a.dir);

  // A group checkpoint: the running member is paused, both are forked, then it resumes.
  const g = ok(home, ['checkpoint', 'create', 'grp']);
  assert.deepEqual(g.map((c: { machine: string }) => c.machine).sort(), ['a', 'b']);
  const cpA = g.find((c: { machine: string }) => c.machine === 'a');
  const va = await showMachine(home, 'a');
  assert.equal(va.status.state, 'running');
  assert.equal(va.disks[0]!.path, cpA.disks[0].child, 'the running machine writes the new child');
  const hBase = await hashDisk(base);
  await waitWrites(a.dir, (await lastWrite(a.dir)) + 3);
  assert.equal(await hashDisk(base), hBase, 'the checkpoint image stays frozen while the guest writes');

  // A second checkpoint over the first (a chain), while running.
  const c2 = (await createCheckpoint(home, 'a', { name: 'second' }))[0]!;
  assert.equal(c2.disks[0].parent, cpA.disks[0].child);
  await waitWrites(a.dir, (await lastWrite(a.dir)) + 2);

  // What cannot change while running is refused (exit 5); the machine is untouched.
  assert.equal(cli(home, ['vm', 'set', 'a', '--cpus', '2']).status, 5);
  await assert.rejects(applyCheckpoint(home, 'a', cpA.id), VmBusyError);

  // Remove both, newest first, online: merged back while the guest keeps writing.
  for (const id of [c2.id, cpA.id]) {
    await removeCheckpoint(home, 'a', id);
    await waitWrites(a.dir, (await lastWrite(a.dir)) + 2);
  }
  const v = await showMachine(home, 'a');
  assert.equal(v.status.state, 'running');
  assert.equal(v.disks[0]!.path, base);
  assert.deepEqual(v.checkpoints, []);
  assert.deepEqual(await avhdxIn(a.dir), []);

  const n = await lastWrite(a.dir);
  assert.equal((await stopMachine(home, 'a')).status.state, 'off');
  assertHoldsWrites(await blockNumbers(base), n, 'the base disk after the online merges');
  // The merges went through change tracking: the ID sealed before is still valid, and its changes
  // cover every block the guest wrote into the children since.
  const h = await openRctHandle(base);
  const ranges = await h.changes(id0);
  await h.close();
  for (let i = n0 + 2; i <= n; i++) {
    const off = slotOf(i) * 4096;
    assert.ok(ranges.some((r) => r.offset <= off && off + 4096 <= r.offset + r.length), `write ${i} (offset ${off}) is in the changes since the ID sealed before the checkpoints`);
  }

  // The offline member's checkpoint is removed offline as before.
  await removeCheckpoint(home, 'b', g.find((c: { machine: string }) => c.machine === 'b').id);
  assert.deepEqual(await avhdxIn(b.dir), []);
});
