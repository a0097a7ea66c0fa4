/**
 * A backup into a repository on a full filesystem (a real 8 MiB tmpfs): a typed error (E_NO_SPACE, exit
 * 8, "repository X is out of space; free space or prune"), no visible snapshot, no lock, no temp file,
 * and the repository verifies afterwards; after prune frees the failed run's packs a smaller backup works.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, open, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { LocalBackend } from '../../src/backend/LocalBackend.js';
import { NoSpaceError } from '../../src/backend/errors.js';
import { MemoryDevice } from '../../src/blockdev/MemoryDevice.js';
import { prune } from '../../src/repo/prune.js';
import { restoreDevice } from '../../src/repo/restoreDevice.js';
import { runBackup } from '../../src/repo/runBackup.js';
import { verifyRepository } from '../../src/repo/verifyRepository.js';
import { tempDir } from '../helpers/tools.js';
import { cli } from '../backup/helpers.js';
import { deviceHash, initRepo, objectNames } from './helpers.js';

const MiB = 1 << 20;

/** Mount an 8 MiB tmpfs (root needed: fails the test under CI, skips otherwise). */
async function tmpfs(t: TestContext): Promise<string | null> {
  const mnt = await mkdtemp(join(tmpdir(), 'tidemark-full-'));
  const m = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=8m', 'tmpfs', mnt]);
  t.after(async () => {
    if (m.status === 0) spawnSync('umount', [mnt]);
    await rm(mnt, { recursive: true, force: true });
  });
  if (m.status !== 0) {
    if (process.env.CI === 'true') assert.fail(`cannot mount a tmpfs (root needed): ${m.stderr}`);
    t.skip('cannot mount tmpfs (not root)');
    return null;
  }
  return mnt;
}

test('library: a backup that fills the repository fails with NoSpaceError, leaves no snapshot, verifies; prune recovers', async (t) => {
  const mnt = await tmpfs(t);
  if (!mnt) return;
  const backend = new LocalBackend(join(mnt, 'repo'));
  // 1 MiB packs so that several packs are stored (and indexed) before the filesystem fills.
  const repo = await initRepo(backend, { chunkSize: 32768, packSize: MiB });
  const small = new MemoryDevice(4 * MiB);
  await small.write(0, randomBytes(MiB));
  const s1 = await runBackup(repo, { source: { id: 'small', name: 'small' }, disks: [{ name: 'disk0', device: small }] });

  const big = new MemoryDevice(32 * MiB);
  await big.write(0, randomBytes(16 * MiB)); // incompressible: cannot fit in the ~7 MiB left
  const err = await runBackup(repo, { source: { id: 'big', name: 'big' }, disks: [{ name: 'disk0', device: big }] }).then(
    () => null,
    (e: unknown) => e,
  );
  assert.ok(err instanceof NoSpaceError, `expected NoSpaceError, got ${String(err)}`);
  assert.equal(err.code, 'E_NO_SPACE');
  assert.equal(err.exitCode, 8);
  assert.match(err.message, new RegExp(`^repository ${join(mnt, 'repo')} is out of space; free space or prune`));

  assert.deepEqual([...(await objectNames(repo, 'snapshots'))], [s1.id], 'no snapshot of the failed run');
  assert.deepEqual(await readdir(join(mnt, 'repo', 'locks')), [], 'lock released');
  assert.deepEqual(await readdir(join(mnt, 'repo', 'tmp')), [], 'no partial object left');
  assert.ok((await objectNames(repo, 'chunks')).size > 32 + 32, 'the failed run stored (indexed) some packs before the disk filled');
  const report = await verifyRepository(repo, { readData: true });
  assert.equal(report.ok, true, JSON.stringify(report.problems));

  // prune (no grace: nothing runs concurrently) removes the failed run's packs; s1 is intact.
  const pr = await prune(repo, { graceMs: 0 });
  assert.ok(pr.removedChunks > 32 && pr.bytesFreed > 2 * MiB, JSON.stringify(pr));
  assert.equal((await objectNames(repo, 'chunks')).size, 32);
  const back = new MemoryDevice(4 * MiB);
  await restoreDevice(repo, s1.disks[0], back);
  assert.equal(await deviceHash(back), await deviceHash(small));
  // Space is back: a backup that fits succeeds.
  const mid = new MemoryDevice(8 * MiB);
  await mid.write(0, randomBytes(3 * MiB));
  const s2 = await runBackup(repo, { source: { id: 'mid', name: 'mid' }, disks: [{ name: 'disk0', device: mid }] });
  const out = new MemoryDevice(8 * MiB);
  await restoreDevice(repo, s2.disks[0], out);
  assert.equal(await deviceHash(out), await deviceHash(mid));
  assert.equal((await verifyRepository(repo, { readData: true })).ok, true);
});

test('CLI: `tidemark backup` into a full repository exits 8 naming the repository; nothing visible; verify passes', async (t) => {
  const mnt = await tmpfs(t);
  if (!mnt) return;
  const dir = await tempDir(t);
  const disk = join(dir, 'disk.raw');
  const fh = await open(disk, 'w');
  await fh.truncate(64 * MiB);
  await fh.write(randomBytes(20 * MiB), 0, 20 * MiB, 0);
  await fh.close();
  const home = mnt; // the default repository: <home>/repo, on the 8 MiB tmpfs
  const r = cli(home, ['backup', disk]);
  assert.equal(r.status, 8, r.stderr);
  assert.match(r.stderr, new RegExp(`repository ${join(home, 'repo')} is out of space; free space or prune`));
  const snaps = cli(home, ['snapshots', '--json']);
  assert.equal(snaps.status, 0, snaps.stderr);
  assert.deepEqual(JSON.parse(snaps.stdout), []);
  const v = cli(home, ['repo', 'verify', join(home, 'repo'), '--read-data']);
  assert.equal(v.status, 0, v.stdout + v.stderr);
  assert.deepEqual(await readdir(join(home, 'repo', 'tmp')).catch(() => []), []);
});
