import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { tempDir } from '../helpers/tools.js';
import { cli, cliJson, rng, trackedWrites, TRACKING_BLOCK, type BackupJson } from './helpers.js';

const MiB = 1 << 20;

test('a VHDX disk: full, incremental through tracking, restore compares equal; top-level verify/forget/prune', async (t) => {
  const dir = await tempDir(t);
  const home = join(dir, 'home');
  const disk = join(dir, 'disk.vhdx');
  const size = 64 * MiB;
  assert.equal(cli(home, ['disk', 'create', disk, '--size', '64M']).status, 0);
  await trackedWrites(disk, size, 6, rng(5)); // no tracking yet: plain writes through Tidemark
  const full = cliJson<BackupJson>(home, ['backup', disk]);
  assert.equal(full.mode, 'full');
  const r1 = join(dir, 'r1.raw');
  cliJson(home, ['restore', full.snapshot, '--to', r1]);
  assert.equal(cli(home, ['disk', 'compare', r1, disk]).status, 0);

  const blocks = await trackedWrites(disk, size, 4, rng(6));
  const inc = cliJson<BackupJson>(home, ['backup', disk]);
  assert.equal(inc.mode, 'incremental', inc.reason);
  assert.equal(inc.bytesRead, blocks.size * TRACKING_BLOCK);
  const r2 = join(dir, 'r2.vhdx');
  cliJson(home, ['restore', inc.snapshot, '--to', r2]);
  assert.equal(cli(home, ['disk', 'compare', r2, disk]).status, 0);
  assert.equal(cli(home, ['disk', 'compare', r1, disk]).status, 1, 'the first restore point differs from the disk now');

  // Top-level aliases of the repo commands work on the default repository ($TIDEMARK_HOME/repo).
  assert.equal(cli(home, ['verify', '--read-data']).status, 0);
  const f = cliJson<{ removed: Array<{ id: string }> }>(home, ['forget', '--keep-last', '1']);
  assert.deepEqual(f.removed.map((x) => x.id), [full.snapshot]);
  const p = cliJson<{ snapshots: number }>(home, ['prune']);
  assert.equal(p.snapshots, 1);
  assert.equal(cliJson<unknown[]>(home, ['snapshots']).length, 1);
  const st = cliJson<{ snapshots: number; sources: number; chunks: number; chunkBytes: number; logicalBytes: number }>(home, ['stats']);
  assert.equal(st.snapshots, 1);
  assert.equal(st.sources, 1);
  assert.equal(st.logicalBytes, size);
  assert.ok(st.chunks > 0 && st.chunkBytes > 0);
  assert.deepEqual(cliJson(home, ['repo', 'stats', join(home, 'repo')]), st);
});
