import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { tempDir } from '../helpers/tools.js';
import { writeDisk } from '../vm-mgmt/harness.js';
import { cliJson } from './helpers.js';
import { openRepositoryAt } from '../../src/repo/openRepositoryAt.js';
import { backupVm, BLOCK, machineHashes, MiB, ok, restoreAndCheck, snapshotHashes } from './machineKit.js';

test('machine backup falls back per disk: tracking deleted -> full-scan, new disk -> full, resized -> full-scan, base snapshot gone -> full-scan; each point restores bit-exact', async (t) => {
  const home = await tempDir(t);
  const repo = join(home, 'backups');
  const m = ok(home, ['vm', 'create', 'f', '--disk', '8M', '--disk', '8M']);
  const paths: string[] = m.disks.map((d: { path: string }) => d.path);
  await writeDisk(paths[0]!, [[0, randomBytes(MiB)]]);
  await writeDisk(paths[1]!, [[2 * MiB, randomBytes(MiB)]]);
  const points: Array<{ snapshot: string; hashes: Map<number, string> }> = [];
  const full = backupVm(home, repo, 'f');
  points.push({ snapshot: full.snapshot, hashes: await machineHashes(paths) });

  // 1. disk1's tracking files are deleted after a write: its changes since the reference point are
  //    unknown. disk1 alone is read in full (deduplicated: only the changed chunks are new); disk0 stays
  //    incremental.
  await writeDisk(paths[0]!, [[4 * MiB, randomBytes(5000)]]);
  await writeDisk(paths[1]!, [[6 * MiB + 7, randomBytes(40_000)]]);
  for (const ext of ['.rct', '.mrt']) await rm(paths[1]! + ext, { force: true });
  const lost = backupVm(home, repo, 'f');
  assert.deepEqual(lost.disks.map((d) => d.mode), ['incremental', 'full-scan']);
  assert.equal(lost.disks[0]!.bytesRead, BLOCK);
  assert.match(lost.disks[1]!.reason!, /change tracking of disk slot 1 cannot vouch/);
  assert.equal(lost.disks[1]!.bytesRead, 8 * MiB);
  // The write covered 40 000 bytes from 6 MiB + 7: two 32 KiB chunks changed, the rest deduplicated.
  assert.equal(lost.disks[1]!.chunksNew, 2);
  assert.ok(lost.warnings.some((w) => /tracking was not enabled/.test(w)), lost.warnings.join('; '));
  points.push({ snapshot: lost.snapshot, hashes: await machineHashes(paths) });

  // Tracking was re-enabled by that backup: the next one is incremental again on both disks.
  await writeDisk(paths[1]!, [[0, randomBytes(100)]]);
  const again = backupVm(home, repo, 'f');
  assert.deepEqual(again.disks.map((d) => [d.mode, d.bytesRead]), [['incremental', 0], ['incremental', BLOCK]]);
  points.push({ snapshot: again.snapshot, hashes: await machineHashes(paths) });

  // 2. A disk added to the machine: that disk is full (with the reason), the others incremental.
  const added = ok(home, ['vm', 'set', 'f', '--add-disk', '4M']);
  paths.push(added.disks[2].path);
  await writeDisk(paths[2]!, [[MiB, randomBytes(70_000)]]);
  await writeDisk(paths[0]!, [[7 * MiB, randomBytes(10)]]);
  const grown = backupVm(home, repo, 'f');
  assert.deepEqual(grown.disks.map((d) => [d.slot, d.mode]), [[0, 'incremental'], [1, 'incremental'], [2, 'full']]);
  assert.match(grown.disks[2]!.reason!, /disk slot 2 is new since snapshot/);
  assert.deepEqual(grown.disks.map((d) => d.bytesRead).slice(0, 2), [BLOCK, 0]);
  points.push({ snapshot: grown.snapshot, hashes: await machineHashes(paths) });

  // 3. A resized disk: full-scan of that disk only, with the reason; the restore has the new size.
  ok(home, ['vm', 'set', 'f', '--resize-disk', '0=12M']);
  await writeDisk(paths[0]!, [[11 * MiB, randomBytes(MiB)]]);
  const resized = backupVm(home, repo, 'f');
  assert.deepEqual(resized.disks.map((d) => d.mode), ['full-scan', 'incremental', 'incremental']);
  assert.match(resized.disks[0]!.reason!, /resized \(8388608 -> 12582912 bytes\)/);
  assert.equal(resized.disks[0]!.size, 12 * MiB);
  points.push({ snapshot: resized.snapshot, hashes: await machineHashes(paths) });

  // 4. The reference point's snapshot is removed from the repository (forgotten): every disk full-scans
  //    (the tree is rebuilt from the newest remaining snapshot's geometry), none is incremental.
  const r = await openRepositoryAt(repo);
  try {
    await r.backend.remove('snapshots', resized.snapshot);
  } finally {
    await r.close();
  }
  await writeDisk(paths[2]!, [[0, randomBytes(10)]]);
  const orphan = backupVm(home, repo, 'f');
  assert.deepEqual(orphan.disks.map((d) => d.mode), ['full-scan', 'full-scan', 'full-scan']);
  assert.match(orphan.disks[0]!.reason!, new RegExp(`snapshot ${resized.snapshot.slice(0, 12)} of the reference point is gone`));
  assert.equal(orphan.parent, grown.snapshot);
  points.pop();
  points.push({ snapshot: orphan.snapshot, hashes: await machineHashes(paths) });

  // Every point's content (read in-process through the repository); the last one restored as a machine.
  for (const p of points) assert.deepEqual(await snapshotHashes(repo, p.snapshot), p.hashes, p.snapshot);
  await restoreAndCheck(home, repo, orphan.snapshot, 'last', points[points.length - 1]!.hashes, { cpus: m.config.cpus, memoryMiB: m.config.memoryMiB });
  // Everything the snapshots reference exists and reads back verified.
  const v = cliJson<{ ok: boolean }>(home, ['repo', 'verify', repo, '--read-data']);
  assert.equal(v.ok, true);
});
