import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { open, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { tempDir } from '../helpers/tools.js';
import { cli, cliJson, rng, sha256File, trackedWrites, TRACKING_BLOCK, type BackupJson } from './helpers.js';

const MiB = 1 << 20;

test('full, then incrementals reading only the changed blocks; every snapshot restores bit-exact', async (t) => {
  const dir = await tempDir(t);
  const home = join(dir, 'home');
  const disk = join(dir, 'disk.raw');
  const size = 24 * MiB;
  // A sparse disk with 3 MiB of data at 4 MiB, written before tracking exists.
  const fh = await open(disk, 'w');
  await fh.truncate(size);
  await fh.write(randomBytes(3 * MiB), 0, 3 * MiB, 4 * MiB);
  await fh.close();

  const full = cliJson<BackupJson>(home, ['backup', disk]);
  assert.equal(full.mode, 'full');
  assert.equal(full.bytesRead, 3 * MiB, 'a full backup reads the allocated data only (holes skipped)');
  assert.equal(full.trackingEnabled, true);
  assert.ok(full.bytesStored >= 3 * MiB * 0.99, 'random data is stored');
  const hashes = new Map<string, string>([[full.snapshot, await sha256File(disk)]]);

  const next = rng(7);
  let parent = full.snapshot;
  for (let round = 0; round < 3; round++) {
    const blocks = await trackedWrites(disk, size, 5 + round, next);
    const inc = cliJson<BackupJson>(home, ['backup', disk]);
    assert.equal(inc.mode, 'incremental', `round ${round}: ${inc.reason ?? ''}`);
    assert.equal(inc.parent, parent);
    // RCT reports exactly the blocks written (clean close; tracking enabled by the first backup at the
    // chunk size, 32 KiB); the backup reads exactly those.
    assert.equal(inc.bytesRead, blocks.size * TRACKING_BLOCK, `round ${round}: bytes read`);
    hashes.set(inc.snapshot, await sha256File(disk));
    parent = inc.snapshot;
  }

  // Nothing changed: an incremental reads nothing and stores only metadata.
  const same = cliJson<BackupJson>(home, ['backup', disk]);
  assert.equal(same.mode, 'incremental');
  assert.equal(same.bytesRead, 0);
  assert.equal(same.chunksNew, 0);
  hashes.set(same.snapshot, await sha256File(disk));

  const list = cliJson<Array<{ id: string; parent?: string }>>(home, ['snapshots']);
  assert.deepEqual(new Set(list.map((s) => s.id)), new Set(hashes.keys()));

  for (const [id, hash] of hashes) {
    const out = join(dir, `r-${id.slice(0, 8)}.raw`);
    const r = cliJson<{ path: string; size: number }>(home, ['restore', id.slice(0, 10), '--to', out]);
    assert.equal(r.size, size);
    assert.equal(await sha256File(out), hash, `snapshot ${id} restores bit-exact`);
  }
  // Restore as VHDX, then compare through Tidemark's own reader.
  const vhdx = join(dir, 'first.vhdx');
  cliJson(home, ['restore', full.snapshot, '--to', vhdx]);
  const cmp = cli(home, ['disk', 'compare', vhdx, join(dir, `r-${full.snapshot.slice(0, 8)}.raw`)]);
  assert.equal(cmp.status, 0, cmp.stdout + cmp.stderr);

  // An existing target is never clobbered without --force; with --force it is replaced whole.
  const existing = join(dir, 'existing.raw');
  await writeFile(existing, 'keep me');
  const refused = cli(home, ['restore', full.snapshot, '--to', existing]);
  assert.equal(refused.status, 2);
  assert.match(refused.stderr, /already exists/);
  assert.equal((await sha256File(existing)).length, 64);
  cliJson(home, ['restore', full.snapshot, '--to', existing, '--force']);
  assert.equal(await sha256File(existing), hashes.get(full.snapshot));

  // diff between the first and last snapshot covers exactly the chunks whose content changed.
  const d = cliJson<{ changedBytes: number; ranges: Array<{ offset: number; length: number }> }>(home, ['snapshots', 'diff', full.snapshot, same.snapshot]);
  assert.ok(d.changedBytes > 0);
  const a = await open(join(dir, `r-${full.snapshot.slice(0, 8)}.raw`), 'r');
  const b = await open(disk, 'r');
  try {
    const inRanges = (off: number) => d.ranges.some((r) => off >= r.offset && off < r.offset + r.length);
    for (let off = 0; off < size; off += 32768) {
      const [x, y] = [Buffer.alloc(32768), Buffer.alloc(32768)];
      await a.read(x, 0, 32768, off);
      await b.read(y, 0, 32768, off);
      assert.equal(inRanges(off), !x.equals(y), `chunk at ${off}`);
    }
  } finally {
    await a.close();
    await b.close();
  }
  const identical = cliJson<{ changedBytes: number }>(home, ['snapshots', 'diff', parent, same.snapshot]);
  assert.equal(identical.changedBytes, 0);

  const show = cliJson<{ id: string; disks: Array<{ rctId?: string }> }>(home, ['snapshots', 'show', same.snapshot.slice(0, 8)]);
  assert.equal(show.id, same.snapshot);
  assert.match(show.disks[0]!.rctId ?? '', /^rct:/);

  const v = cli(home, ['repo', 'verify', join(home, 'repo'), '--read-data']);
  assert.equal(v.status, 0, v.stdout + v.stderr);
});

test('backup of a missing disk and restore of an unknown snapshot fail clearly', async (t) => {
  const dir = await tempDir(t);
  const home = join(dir, 'home');
  const r = cli(home, ['backup', join(dir, 'nope.raw')]);
  assert.equal(r.status, 3);
  assert.match(r.stderr, /nope\.raw/);
  const disk = join(dir, 'd.raw');
  await writeFile(disk, randomBytes(64 * 1024));
  cliJson(home, ['backup', disk]);
  const u = cli(home, ['restore', 'abcdef12', '--to', join(dir, 'x.raw')]);
  assert.equal(u.status, 3);
  assert.match(u.stderr, /snapshot abcdef12 not found/);
  const both = cli(home, ['restore', 'abcdef12']);
  assert.equal(both.status, 2);
});

test('--workers: chunks hashed and compressed on worker threads give the same restore points as inline; bad values are usage errors', async (t) => {
  const dir = await tempDir(t);
  const disk = join(dir, 'disk.raw');
  const size = 16 * MiB;
  const fh = await open(disk, 'w');
  await fh.truncate(size);
  await fh.write(randomBytes(2 * MiB), 0, 2 * MiB, 0);
  await fh.write(Buffer.alloc(2 * MiB, 'compressible text '), 0, 2 * MiB, 6 * MiB);
  await fh.close();
  const pooled = join(dir, 'pooled');
  const inline = join(dir, 'inline');
  const a = cliJson<BackupJson>(pooled, ['backup', disk, '--workers', '2']);
  const b = cliJson<BackupJson>(inline, ['backup', disk, '--workers', '0']);
  assert.equal(a.chunksNew, b.chunksNew);
  assert.equal(a.bytesStored, b.bytesStored, 'the same blobs, byte for byte (compression is deterministic)');
  const blocks = await trackedWrites(disk, size, 5, rng(21));
  const inc = cliJson<BackupJson>(pooled, ['backup', disk, '--workers', '2']);
  assert.equal(inc.mode, 'incremental');
  assert.equal(inc.bytesRead, blocks.size * TRACKING_BLOCK);
  const out = join(dir, 'r.raw');
  cliJson(pooled, ['restore', inc.snapshot, '--to', out]);
  assert.equal(await sha256File(out), await sha256File(disk));
  const bad = cli(inline, ['backup', disk, '--workers', '-1']);
  assert.equal(bad.status, 2, bad.stderr);
  assert.match(bad.stderr, /--workers -1: give a whole number/);
});

test('defaultCodecWorkers: none on 1-2 cores, one per extra core up to 4', async () => {
  const { defaultCodecWorkers } = await import('../../src/repo/CodecPool.js');
  assert.deepEqual([1, 2, 3, 4, 8, 64].map((c) => defaultCodecWorkers(c)), [0, 0, 2, 3, 4, 4]);
});
