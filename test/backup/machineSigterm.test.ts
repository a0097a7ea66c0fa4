import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { tempDir } from '../helpers/tools.js';
import { writeDisk } from '../vm-mgmt/harness.js';
import { backupVm, BLOCK, interruptBackupAt, machineHashes, MiB, ok, restoreAndCheck, snapshotIds } from './machineKit.js';

test('SIGTERM during a machine backup: exit 130, no snapshot, the checkpoint merged back at once, the next backup correct', async (t) => {
  const home = await tempDir(t);
  const repo = join(home, 'backups');
  const m = ok(home, ['vm', 'create', 's', '--disk', '4M']);
  const paths: string[] = m.disks.map((d: { path: string }) => d.path);
  await writeDisk(paths[0]!, [[0, randomBytes(MiB)]]);
  const base = backupVm(home, repo, 's').snapshot;
  await writeDisk(paths[0]!, [[2 * MiB, randomBytes(10)]]);
  const r = await interruptBackupAt(home, repo, 's', 'checkpoint', 'SIGTERM', 1500, async () => undefined);
  assert.equal(r.code, 130, r.stderr);
  assert.match(r.stderr, /backup interrupted/);
  assert.deepEqual(await snapshotIds(repo), [base]);
  // Merged back by the process itself (not by recovery): no checkpoint, no child, the old reference point.
  const inv = JSON.parse(await readFile(join(home, 'inventory.json'), 'utf8'));
  assert.deepEqual(inv.machines[0].checkpoints, []);
  assert.equal(inv.machines[0].refpoints.length, 1);
  assert.equal(inv.machines[0].refpoints[0].repo.snapshot, base);
  assert.deepEqual((await readdir(m.dir)).filter((f) => f.endsWith('.avhdx')), []);
  const next = backupVm(home, repo, 's');
  assert.equal(next.parent, base);
  assert.deepEqual(next.disks.map((d) => [d.mode, d.bytesRead]), [['incremental', BLOCK]]);
  await restoreAndCheck(home, repo, next.snapshot, 'r', await machineHashes(paths), { cpus: m.config.cpus, memoryMiB: m.config.memoryMiB });
});
