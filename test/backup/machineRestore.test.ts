import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { tempDir } from '../helpers/tools.js';
import { backupVm, cli, ok } from './machineKit.js';

test('restore --vm errors: a disk snapshot, --to a non-empty folder, a taken name; nothing is left behind', async (t) => {
  const home = await tempDir(t);
  const repo = join(home, 'backups');
  ok(home, ['vm', 'create', 'a', '--disk', '4M']);
  ok(home, ['vm', 'create', 'b', '--disk', '4M']);
  const snap = backupVm(home, repo, 'a').snapshot;
  const raw = join(home, 'x.raw');
  await writeFile(raw, randomBytes(64 * 1024));
  const diskSnap = ok(home, ['backup', raw, '--repo', repo]).snapshot;

  const notVm = cli(home, ['restore', diskSnap, '--vm', '--repo', repo]);
  assert.equal(notVm.status, 2);
  assert.match(notVm.stderr, /disk snapshot.*not a machine/);
  const taken = cli(home, ['restore', snap, '--vm', '--new-id', '--name', 'b', '--repo', repo]);
  assert.equal(taken.status, 2);
  assert.match(taken.stderr, /"b" already exists.*--name/);
  const full = join(home, 'full');
  await writeFile(join(home, 'placeholder'), '');
  const busy = cli(home, ['restore', snap, '--vm', '--new-id', '--name', 'c', '--to', home, '--repo', repo]);
  assert.equal(busy.status, 2);
  assert.match(busy.stderr, /not empty/);
  // --to an empty folder: the machine lives there.
  const c = ok(home, ['restore', snap, '--vm', '--new-id', '--name', 'c', '--to', full, '--repo', repo]);
  assert.equal(c.machine.dir, full);
  assert.deepEqual((await readdir(full)).filter((f) => f.endsWith('.vhdx')), ['disk0.vhdx']);
  assert.deepEqual(ok(home, ['vm', 'list']).map((m: { name: string }) => m.name).sort(), ['a', 'b', 'c']);
  // A disk backup still works beside machines, and --new-id/--name need --vm.
  assert.equal(cli(home, ['restore', snap, '--to', join(home, 'y.raw'), '--new-id', '--repo', repo]).status, 2);
  // Neither a file nor a machine.
  const none = cli(home, ['backup', 'nosuch', '--repo', repo]);
  assert.equal(none.status, 3);
  assert.match(none.stderr, /disk file or machine "nosuch" not found/);
});
