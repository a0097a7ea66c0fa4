import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { fcSeed, tempDir } from '../helpers/tools.js';
import { writeDisk } from '../vm-mgmt/harness.js';
import { openRctHandle } from '../../src/rct/openRctHandle.js';
import { manifestProblem } from '../../src/repo/Manifest.js';
import { rng } from './helpers.js';
import { backupVm, BLOCK, blocksOf, cli, machineHashes, MiB, ok, restoreAndCheck } from './machineKit.js';

/** Random writes of 1 B..100 KB at random offsets of a disk of `size` bytes. */
function randomWrites(size: number, count: number, next: () => number): Array<[number, Buffer]> {
  const out: Array<[number, Buffer]> = [];
  for (let i = 0; i < count; i++) {
    const len = 1 + Math.floor(next() * 100_000);
    out.push([Math.floor(next() * (size - len)), randomBytes(len)]);
  }
  return out;
}

test('machine backup: full, then incrementals reading only the changed blocks; every point restores as a new machine bit-exact', async (t) => {
  const home = await tempDir(t);
  const repo = join(home, 'backups');
  const seed = fcSeed();
  t.diagnostic(`seed ${seed}`);
  const next = rng(seed);
  const m = ok(home, ['vm', 'create', 'web', '--disk', '16M', '--disk', '8M', '--cpus', '2', '--memory', '256']);
  const sizes = [16 * MiB, 8 * MiB];
  const paths: string[] = m.disks.map((d: { path: string }) => d.path);
  await writeDisk(paths[0], [[0, randomBytes(2 * MiB)], [9 * MiB + 123, randomBytes(300_000)]]);
  await writeDisk(paths[1], [[5 * MiB, randomBytes(MiB)]]);

  const points: Array<{ snapshot: string; hashes: Map<number, string> }> = [];
  const full = backupVm(home, repo, 'web');
  assert.deepEqual(full.machine, { id: m.id, name: 'web' });
  assert.deepEqual(full.disks.map((d) => [d.slot, d.name, d.mode, d.size]), [[0, 'disk0', 'full', sizes[0]], [1, 'disk1', 'full', sizes[1]]]);
  assert.equal(full.parent, undefined);
  // A full reads what is allocated (here one 32 MiB VHDX block per disk, so all of both disks).
  assert.equal(full.bytesRead, sizes[0]! + sizes[1]!);
  assert.equal(full.bytesRead, full.disks[0]!.bytesRead + full.disks[1]!.bytesRead);
  assert.ok(full.bytesStored > 0 && full.dedupRatio !== null);
  points.push({ snapshot: full.snapshot, hashes: await machineHashes(paths) });

  let parent = full.snapshot;
  for (let round = 0; round < 2; round++) {
    // Round 1 leaves disk1 alone: its incremental must read nothing.
    const w0 = randomWrites(sizes[0]!, 2 + Math.floor(next() * 5), next);
    const w1 = round === 1 ? [] : randomWrites(sizes[1]!, 1 + Math.floor(next() * 3), next);
    await writeDisk(paths[0], w0);
    if (w1.length) await writeDisk(paths[1], w1);
    const r = backupVm(home, repo, 'web');
    assert.equal(r.parent, parent);
    assert.deepEqual(r.disks.map((d) => d.mode), ['incremental', 'incremental']);
    assert.deepEqual(r.disks.map((d) => d.reason), [undefined, undefined]);
    // Exactly the changed 64 KiB blocks are read (chunks are 32 KiB: the covering chunks are the blocks).
    assert.equal(r.disks[0]!.bytesRead, blocksOf(w0).size * BLOCK, `round ${round} disk0`);
    assert.equal(r.disks[1]!.bytesRead, blocksOf(w1).size * BLOCK, `round ${round} disk1`);
    assert.ok(r.bytesRead < 2 * MiB);
    points.push({ snapshot: r.snapshot, hashes: await machineHashes(paths) });
    parent = r.snapshot;
  }

  // One reference point per machine x repository, naming the newest snapshot; the disks are back on
  // their own files (the backup checkpoint was merged back) and no child is left.
  const refs = ok(home, ['refpoint', 'list', 'web']);
  assert.equal(refs.length, 1);
  assert.equal(refs[0].repo.snapshot, parent);
  const shown = ok(home, ['vm', 'show', 'web']);
  assert.deepEqual(shown.disks.map((d: { path: string }) => d.path), paths);
  assert.deepEqual(shown.checkpoints, []);
  assert.deepEqual((await readdir(m.dir)).filter((f) => f.endsWith('.avhdx')), []);
  // Older RCT IDs were dropped with their reference points: one live ID per disk.
  for (const p of paths) {
    const h = await openRctHandle(p);
    try {
      assert.equal((await h.status()).liveIds?.length, 1, p);
    } finally {
      await h.close();
    }
  }

  // The snapshot records the machine: ID, name, configuration, disks by slot.
  const s = ok(home, ['snapshots', 'show', parent, '--repo', repo]);
  assert.equal(s.source.id, `vm:${m.id}`);
  assert.deepEqual({ id: s.machine.id, name: s.machine.name, cpus: s.machine.config.cpus, mem: s.machine.config.memoryMiB }, { id: m.id, name: 'web', cpus: 2, mem: 256 });
  assert.deepEqual(s.disks.map((d: { slot: number; name: string }) => [d.slot, d.name]), [[0, 'disk0'], [1, 'disk1']]);
  const list = cli(home, ['snapshots', '--repo', repo], { json: false });
  assert.equal(list.status, 0);
  assert.equal(list.stdout.trim().split('\n').length, 3);
  assert.match(list.stdout, /machine web\s+disk0:16\.0 MiB disk1:8\.00 MiB/);

  // Keep writing after the last backup: restores must return the snapshot's content, not the disk's.
  await writeDisk(paths[0], [[MiB, randomBytes(4096)]]);
  for (const [i, p] of points.entries()) await restoreAndCheck(home, repo, p.snapshot, `copy${i}`, p.hashes, { cpus: 2, memoryMiB: 256 });

  // Same ID: refused while the original is registered (naming --new-id); restored once it is gone.
  const clash = cli(home, ['restore', parent, '--vm', '--repo', repo]);
  assert.equal(clash.status, 2);
  assert.match(clash.stderr, /already registered.*--new-id/);
  ok(home, ['vm', 'remove', 'web']);
  const back = ok(home, ['restore', parent.slice(0, 10), '--vm', '--repo', repo]);
  assert.equal(back.machine.id, m.id);
  assert.equal(back.machine.name, 'web');
  for (const d of back.disks) {
    // Sparse: zero chunks are not written, so the file's allocation stays far below the virtual size.
    const st = await stat(d.path);
    assert.ok(st.blocks * 512 < d.size / 2, `${d.path} is sparse (${st.blocks * 512} bytes allocated of ${d.size})`);
  }
  assert.deepEqual(await machineHashes(back.disks.map((d: { path: string }) => d.path)), points[points.length - 1]!.hashes);
  // The restored machine has change tracking: its next backup (no reference point yet) full-scans
  // against the snapshot of the same ID and stores nothing new.
  const again = backupVm(home, repo, 'web');
  assert.deepEqual(again.disks.map((d) => d.mode), ['full-scan', 'full-scan']);
  assert.match(again.disks[0]!.reason!, /no reference point/);
  assert.equal(again.disks.reduce((a, d) => a + d.chunksNew, 0), 0);
});

test('manifest: machine and slot fields are validated (additive: a disk manifest is unchanged)', () => {
  const disk = { name: 'disk0', size: 65536, chunkSize: 32768, fanout: 512, indexRoot: '0'.repeat(64) };
  const base = { version: 1, time: new Date(0).toISOString(), host: 'h', source: { id: 'vm:x', name: 'web', kind: 'machine' }, disks: [{ ...disk, slot: 0 }, { ...disk, name: 'disk3', slot: 3 }] };
  const machine = { id: 'x', name: 'web', config: { schema: 1, cpus: 1, memoryMiB: 512, disks: [], network: [], notes: '' } };
  assert.equal(manifestProblem({ ...base, machine }), null);
  assert.equal(manifestProblem({ ...base, disks: [disk] }), null, 'a disk snapshot needs neither');
  assert.equal(manifestProblem({ ...base, machine, disks: [disk] }), 'a machine snapshot disk has no slot');
  assert.equal(manifestProblem({ ...base, disks: [{ ...disk, slot: 1 }, { ...disk, slot: 1 }] }), 'a disk slot is used twice');
  assert.equal(manifestProblem({ ...base, disks: [{ ...disk, slot: 64 }] }), 'disk disk0: bad slot');
  assert.equal(manifestProblem({ ...base, disks: [{ ...disk, slot: 1.5 }] }), 'disk disk0: bad slot');
  assert.equal(manifestProblem({ ...base, machine: { ...machine, id: '' } }), 'bad machine');
  assert.equal(manifestProblem({ ...base, machine: { ...machine, name: 7 } }), 'bad machine');
  assert.equal(manifestProblem({ ...base, machine: { ...machine, config: [] } }), 'bad machine config');
  assert.equal(manifestProblem({ ...base, machine: { ...machine, config: null } }), 'bad machine config');
});
