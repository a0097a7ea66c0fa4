import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { open, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { tempDir } from '../helpers/tools.js';
import { cli, cliJson, cliSpawn, rng, sha256File, trackedWrites, TRACKING_BLOCK, type BackupJson } from './helpers.js';

const MiB = 1 << 20;

async function makeDisk(path: string, size: number, dataAt: number, dataLen: number): Promise<void> {
  const fh = await open(path, 'w');
  await fh.truncate(size);
  await fh.write(randomBytes(dataLen), 0, dataLen, dataAt);
  await fh.close();
}

test('tracking invalidated by an outside write or removed: full-scan with the right content, then incremental again', async (t) => {
  const dir = await tempDir(t);
  const home = join(dir, 'home');
  const disk = join(dir, 'disk.raw');
  const size = 16 * MiB;
  await makeDisk(disk, size, 1 * MiB, 2 * MiB);
  const full = cliJson<BackupJson>(home, ['backup', disk]);
  assert.equal(full.mode, 'full');

  // A write behind Tidemark's back: the stat fingerprint changes, tracking restarts.
  const fh = await open(disk, 'r+');
  await fh.write(randomBytes(70_000), 0, 70_000, 9 * MiB + 123);
  await fh.close();
  const scan = cliJson<BackupJson>(home, ['backup', disk]);
  assert.equal(scan.mode, 'full-scan');
  assert.match(scan.reason ?? '', /modified outside Tidemark/);
  assert.equal(scan.parent, full.snapshot);
  assert.ok(scan.bytesRead >= 2 * MiB + 70_000, 'a full scan reads everything allocated');
  assert.ok(scan.chunksNew <= 4 && scan.chunksNew >= 3, `only the new chunks are stored (${scan.chunksNew})`);
  const h1 = await sha256File(disk);
  const out1 = join(dir, 'r1.raw');
  cliJson(home, ['restore', scan.snapshot, '--to', out1]);
  assert.equal(await sha256File(out1), h1);

  // Tracking is valid again from the full-scan's ID on.
  const blocks = await trackedWrites(disk, size, 3, rng(3));
  const inc = cliJson<BackupJson>(home, ['backup', disk]);
  assert.equal(inc.mode, 'incremental');
  assert.equal(inc.bytesRead, blocks.size * TRACKING_BLOCK);

  // Tracking files removed: the next backup re-enables tracking and full-scans.
  await rm(`${disk}.rct`);
  await rm(`${disk}.mrt`, { force: true });
  const again = cliJson<BackupJson>(home, ['backup', disk]);
  assert.equal(again.mode, 'full-scan');
  assert.equal(again.trackingEnabled, true);
  assert.equal(again.chunksNew, 0, 'nothing changed: nothing new stored');
  const out2 = join(dir, 'r2.raw');
  cliJson(home, ['restore', again.snapshot, '--to', out2]);
  assert.equal(await sha256File(out2), await sha256File(disk));
  assert.equal(cli(home, ['repo', 'verify', join(home, 'repo')]).status, 0);
});

test('restore --in-place: via change tracking since the latest snapshot, else by comparing content', async (t) => {
  const dir = await tempDir(t);
  const home = join(dir, 'home');
  const disk = join(dir, 'disk.raw');
  const size = 16 * MiB;
  await makeDisk(disk, size, 0, 3 * MiB);
  const first = cliJson<BackupJson>(home, ['backup', disk]);
  const h0 = await sha256File(disk);
  const blocks = await trackedWrites(disk, size, 4, rng(11));
  assert.notEqual(await sha256File(disk), h0);

  // The latest snapshot's RCT ID is live: only the changed blocks are rewritten, nothing is read.
  const rb = cliJson<{ method: string; bytesRead: number; bytesWritten: number; chunksWritten: number }>(home, ['restore', first.snapshot, '--in-place', disk]);
  assert.equal(rb.method, 'rct');
  assert.equal(rb.bytesRead, 0);
  assert.ok(rb.bytesWritten <= blocks.size * TRACKING_BLOCK);
  assert.equal(await sha256File(disk), h0, 'the disk is back to the snapshot');

  // The rollback's writes were tracked: the next backup is incremental and matches the snapshot's index.
  const after = cliJson<BackupJson>(home, ['backup', disk]);
  assert.equal(after.mode, 'incremental');
  assert.equal(after.chunksNew, 0);
  const diff = cliJson<{ changedBytes: number }>(home, ['snapshots', 'diff', first.snapshot, after.snapshot]);
  assert.equal(diff.changedBytes, 0);

  // An older snapshot's ID was dropped: compare content instead.
  await trackedWrites(disk, size, 3, rng(12));
  const fh = await open(disk, 'r+');
  await fh.write(randomBytes(5000), 0, 5000, 12 * MiB); // outside write too
  await fh.close();
  const rb2 = cliJson<{ method: string; reason?: string; bytesRead: number; chunksWritten: number }>(home, ['restore', first.snapshot, '--in-place', disk]);
  assert.equal(rb2.method, 'compare');
  assert.ok(rb2.reason);
  assert.equal(rb2.bytesRead, size);
  assert.ok(rb2.chunksWritten > 0 && rb2.chunksWritten < 64);
  assert.equal(await sha256File(disk), h0);

  // Wrong size: refused, disk untouched.
  const small = join(dir, 'small.raw');
  await makeDisk(small, 1 * MiB, 0, 4096);
  const hs = await sha256File(small);
  const bad = cli(home, ['restore', first.snapshot, '--in-place', small]);
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /restore to a new file with --to/);
  assert.equal(await sha256File(small), hs);
});

test('a disk served by tidemark serve is refused as in use, untouched', async (t) => {
  const dir = await tempDir(t);
  const home = join(dir, 'home');
  const disk = join(dir, 'disk.raw');
  await makeDisk(disk, 4 * MiB, 0, 64 * 1024);
  assert.equal(cli(home, ['rct', 'enable', disk]).status, 0);
  const server = cliSpawn(home, ['serve', disk, '--socket', join(dir, 'nbd.sock')]);
  t.after(() => {
    server.kill('SIGKILL');
  });
  await new Promise<void>((resolve, reject) => {
    let err = '';
    server.stderr.on('data', (d: Buffer) => {
      err += d.toString();
      if (err.includes('listening')) resolve();
    });
    server.once('exit', (c) => reject(new Error(`serve exited ${c}: ${err}`)));
  });
  const r = cli(home, ['backup', disk]);
  assert.equal(r.status, 5);
  assert.match(r.stderr, /in use/);
  assert.equal(cliJson<unknown[]>(home, ['snapshots', '--repo', join(home, 'repo')]).length, 0);
});
