import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { open, readdir } from 'node:fs/promises';
import { LocalBackend } from '../../src/backend/LocalBackend.js';
import { ObjectKind } from '../../src/repo/constants.js';
import { PackStore } from '../../src/repo/PackStore.js';
import { join } from 'node:path';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { tempDir } from '../helpers/tools.js';
import { cli, cliJson, cliSpawn, sha256File, type BackupJson } from './helpers.js';

const MiB = 1 << 20;

/** Chunks durably stored and indexed (pack index objects; the repository is unencrypted). */
async function countChunks(repo: string): Promise<number> {
  const store = new PackStore(new LocalBackend(repo), null);
  await store.ensureLoaded();
  let n = 0;
  for (const entries of store.indexedPacks.values()) n += entries.filter((e) => e.kind === ObjectKind.chunk).length;
  return n;
}

test('a backup killed midway leaves no snapshot; verify passes; the next backup is correct', async (t) => {
  const dir = await tempDir(t);
  const home = join(dir, 'home');
  const repo = join(home, 'repo');
  const disk = join(dir, 'disk.raw');
  // 64 MiB of data = 2048 chunks = 4 packs of 16 MiB: the kill comes after the first pack is indexed.
  const size = 96 * MiB;
  const fh = await open(disk, 'w');
  await fh.truncate(size);
  for (let off = 0; off < 64 * MiB; off += 4 * MiB) await fh.write(randomBytes(4 * MiB), 0, 4 * MiB, off);
  await fh.close();

  const p = cliSpawn(home, ['backup', disk]);
  const exited = new Promise<number | null>((r) => p.once('exit', (c) => r(c)));
  // Wait until the backup has stored (packed and indexed) some chunks, but not all 2048, then kill it.
  const t0 = Date.now();
  while ((await countChunks(repo)) < 20) {
    if (Date.now() - t0 > 20_000) throw new Error('backup stored no chunks within 20 s');
    await sleep(20);
  }
  p.kill('SIGKILL');
  await exited;
  const stored = await countChunks(repo);
  assert.ok(stored < 2048, `killed midway (${stored} chunks stored)`);

  assert.deepEqual(cliJson<unknown[]>(home, ['snapshots']), [], 'no snapshot is visible');
  const v = cli(home, ['repo', 'verify', repo]);
  assert.equal(v.status, 0, v.stdout + v.stderr);

  const b = cliJson<BackupJson>(home, ['backup', disk]);
  assert.equal(b.mode, 'full');
  assert.equal(b.bytesRead, 64 * MiB);
  assert.ok(b.chunksNew <= 2048 - stored, 'chunks stored before the kill are reused');
  const out = join(dir, 'r.raw');
  cliJson(home, ['restore', b.snapshot, '--to', out]);
  assert.equal(await sha256File(out), await sha256File(disk));
  assert.equal(cli(home, ['repo', 'verify', repo, '--read-data']).status, 0);
});

test('SIGTERM mid-backup stops cleanly: exit 130, no snapshot, no lock, the new RCT ID dropped', async (t) => {
  const dir = await tempDir(t);
  const home = join(dir, 'home');
  const repo = join(home, 'repo');
  const disk = join(dir, 'disk.raw');
  const fh = await open(disk, 'w');
  await fh.truncate(160 * MiB);
  for (let off = 0; off < 128 * MiB; off += 4 * MiB) await fh.write(randomBytes(4 * MiB), 0, 4 * MiB, off); // long enough to be interrupted
  await fh.close();
  const p = cliSpawn(home, ['backup', disk]);
  let stderr = '';
  p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((r) => p.once('exit', (c) => r(c)));
  const t0 = Date.now();
  while ((await countChunks(repo)) < 20) {
    if (Date.now() - t0 > 20_000) throw new Error('backup stored no chunks within 20 s');
    await sleep(20);
  }
  p.kill('SIGTERM');
  assert.equal(await exited, 130, stderr);
  assert.match(stderr, /backup interrupted; nothing was committed/);
  assert.deepEqual(cliJson<unknown[]>(home, ['snapshots']), []);
  assert.deepEqual(await readdir(join(repo, 'locks')).catch(() => []), [], 'the repository lock is released');
  const st = cliJson<{ liveIds: unknown[] }>(home, ['rct', 'status', disk]);
  assert.deepEqual(st.liveIds, [], 'the ID sealed for the aborted backup was dropped');
  const b = cliJson<BackupJson>(home, ['backup', disk]);
  assert.equal(b.mode, 'full');
  const out = join(dir, 'r.raw');
  cliJson(home, ['restore', b.snapshot, '--to', out]);
  assert.equal(await sha256File(out), await sha256File(disk));
});
