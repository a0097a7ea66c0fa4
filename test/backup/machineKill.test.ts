import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import fc from 'fast-check';
import { fcSeed, tempDir } from '../helpers/tools.js';
import { writeDisk } from '../vm-mgmt/harness.js';
import { cliJson } from './helpers.js';
import { backupVm, BLOCK, interruptBackupAt, machineHashes, MiB, ok, snapshotHashes, snapshotIds } from './machineKit.js';

const STEPS = ['checkpoint', 'disk0', 'disk1', 'manifest', 'refpoint'];

/** The machine's reference points, by seq (read from the inventory file; no recovery runs). */
async function refpointsOf(home: string): Promise<Array<{ seq: number; repo: { snapshot: string } }>> {
  const inv = JSON.parse(await readFile(join(home, 'inventory.json'), 'utf8'));
  return [...inv.machines[0].refpoints].sort((a, b) => a.seq - b.seq);
}

test('SIGKILL of a machine backup at a random step: the next command recovers, no snapshot before the manifest, the next backup is incremental and correct', async (t) => {
  const home = await tempDir(t);
  const repo = join(home, 'backups');
  const m = ok(home, ['vm', 'create', 'k', '--disk', '8M', '--disk', '4M']);
  const paths: string[] = m.disks.map((d: { path: string }) => d.path);
  await writeDisk(paths[0]!, [[0, randomBytes(MiB)]]);
  let base = backupVm(home, repo, 'k').snapshot;

  // Two distinct steps, drawn from the fast-check seed (FC_SEED overrides).
  const steps = fc.sample(fc.uniqueArray(fc.constantFrom(...STEPS), { minLength: 2, maxLength: 2 }), { seed: fcSeed(), numRuns: 1 })[0]!;
  t.diagnostic(`kill steps: ${steps.join(', ')} (seed ${fcSeed()})`);
  for (const [i, step] of steps.entries()) {
    await writeDisk(paths[0]!, [[(2 + i) * MiB + 100, randomBytes(3000)]]);
    await writeDisk(paths[1]!, [[(1 + i) * MiB, randomBytes(512)]]);
    const before = await snapshotIds(repo);
    const r = await interruptBackupAt(home, repo, 'k', step, 'SIGKILL', 60_000, async (pid) => {
      const held = ok(home, ['vm', 'show', 'k']);
      assert.equal(held.status.state, 'held');
      assert.equal(held.status.holder.pid, pid);
      assert.equal(held.status.holder.command, 'tidemark backup');
    });
    assert.equal(r.signal, 'SIGKILL');
    const pointHashes = await machineHashes(paths);

    // The next command merges the dead holder's checkpoint back.
    const shown = ok(home, ['vm', 'show', 'k']);
    assert.equal(shown.status.state, 'off');
    assert.deepEqual(shown.checkpoints, []);
    assert.deepEqual(shown.disks.map((d: { path: string }) => d.path), paths);
    assert.deepEqual((await readdir(m.dir)).filter((f) => f.endsWith('.avhdx')), [], 'no leftover .avhdx');

    // No restore point before the manifest step; after it, one complete restore point.
    const after = await snapshotIds(repo);
    const killedSnap = after.find((s) => !before.includes(s));
    if (step === 'manifest' || step === 'refpoint') assert.ok(killedSnap, `a snapshot once the manifest was stored (${step})`);
    else assert.deepEqual(after, before, `no snapshot visible when killed at ${step}`);

    // The reference point survives only if the killed backup recorded it (then beside the previous one
    // until the next backup drops that).
    const refs = await refpointsOf(home);
    assert.equal(refs.length, step === 'refpoint' ? 2 : 1);
    assert.equal(refs[refs.length - 1]!.repo.snapshot, step === 'refpoint' ? killedSnap : base);

    // The next backup builds on that reference point: incremental, and correct.
    await writeDisk(paths[0]!, [[7 * MiB, randomBytes(4096)]]);
    const next = backupVm(home, repo, 'k');
    assert.equal(next.parent, step === 'refpoint' ? killedSnap : base);
    assert.deepEqual(next.disks.map((d) => d.mode), ['incremental', 'incremental']);
    // Changes since the reference point: killed at 'refpoint', only the last write is new.
    assert.equal(next.disks[0]!.bytesRead, (step === 'refpoint' ? 1 : 2) * BLOCK);
    // Content checked in-process through the repository (restore --vm itself is tested in machine.test.ts).
    const now = await machineHashes(paths);
    assert.deepEqual(await snapshotHashes(repo, next.snapshot), now);
    if (killedSnap) {
      // A snapshot stored by the killed backup is a complete restore point: the disks as of its
      // checkpoint, i.e. now minus the last write to disk0 (which touched disk0 only).
      const killed = await snapshotHashes(repo, killedSnap);
      assert.equal(killed.get(1), now.get(1));
      assert.equal(killed.get(0), pointHashes.get(0));
    }
    assert.deepEqual((await refpointsOf(home)).map((x) => x.repo.snapshot), [next.snapshot]);
    base = next.snapshot;
  }
  const v = cliJson<{ ok: boolean }>(home, ['repo', 'verify', repo]);
  assert.equal(v.ok, true);
});
