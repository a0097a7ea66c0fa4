import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import fc from 'fast-check';
import { LocalBackend } from '../../src/backend/LocalBackend.js';
import { MemoryBackend } from '../../src/backend/MemoryBackend.js';
import { MemoryDevice } from '../../src/blockdev/MemoryDevice.js';
import { applyForgetPolicy, isoWeek, type PolicySnapshot } from '../../src/repo/forgetPolicy.js';
import { listSnapshots } from '../../src/repo/Manifest.js';
import { forget, prune } from '../../src/repo/prune.js';
import { RepoLock } from '../../src/repo/RepoLock.js';
import { RepositoryLockedError } from '../../src/repo/errors.js';
import { restoreDevice } from '../../src/repo/restoreDevice.js';
import { runBackup } from '../../src/repo/runBackup.js';
import { verifyRepository } from '../../src/repo/verifyRepository.js';
import { fcSeed, tempDir } from '../helpers/tools.js';
import { deviceHash, initRepo, objectNames } from './helpers.js';

const snap = (id: string, time: string, host = 'h'): PolicySnapshot => ({ id, time, host, source: { id: 'vm' } });
const ids = (xs: Array<{ id: string }>) => xs.map((x) => x.id).sort();

test('forget policy: keep-last, daily, weekly, monthly, yearly on a known calendar', () => {
  const s = [
    snap('a', '2024-01-01T10:00:00Z'),
    snap('b', '2024-01-01T18:00:00Z'),
    snap('c', '2024-01-02T09:00:00Z'),
    snap('d', '2024-01-08T09:00:00Z'),
    snap('e', '2024-02-15T09:00:00Z'),
    snap('f', '2025-03-01T09:00:00Z'),
    snap('g', '2025-03-01T21:00:00Z'),
  ];
  assert.deepEqual(ids(applyForgetPolicy(s, { last: 2 }).keep.map((k) => k.snapshot)), ['f', 'g']);
  assert.deepEqual(ids(applyForgetPolicy(s, { daily: 3 }).keep.map((k) => k.snapshot)), ['d', 'e', 'g']);
  assert.deepEqual(ids(applyForgetPolicy(s, { hourly: 2 }).keep.map((k) => k.snapshot)), ['f', 'g']);
  assert.deepEqual(ids(applyForgetPolicy(s, { weekly: 10 }).keep.map((k) => k.snapshot)), ['c', 'd', 'e', 'g'], 'a (Mon 2024-01-01) shares ISO week 2024-W01 with c');
  assert.deepEqual(ids(applyForgetPolicy(s, { monthly: 2 }).keep.map((k) => k.snapshot)), ['e', 'g']);
  assert.deepEqual(ids(applyForgetPolicy(s, { yearly: 5 }).keep.map((k) => k.snapshot)), ['e', 'g'], 'the newest of each year');
  const both = applyForgetPolicy(s, { last: 1, yearly: 5 });
  assert.deepEqual(both.keep.find((k) => k.snapshot.id === 'g')?.reasons, ['last', 'yearly']);
  assert.deepEqual(ids(both.remove), ['a', 'b', 'c', 'd', 'f']);
  assert.equal(applyForgetPolicy(s, {}).remove.length, 0, 'an empty policy removes nothing');
  assert.throws(() => applyForgetPolicy(s, { last: -1 }), RangeError);
});

test('forget policy groups by host + source: each group keeps its own', () => {
  const s = [snap('a1', '2024-01-01T00:00:00Z', 'a'), snap('a2', '2024-01-02T00:00:00Z', 'a'), snap('b1', '2024-01-01T00:00:00Z', 'b')];
  assert.deepEqual(ids(applyForgetPolicy(s, { last: 1 }).keep.map((k) => k.snapshot)), ['a2', 'b1']);
});

test('ISO weeks across year boundaries', () => {
  assert.equal(isoWeek(new Date('2021-01-03T12:00:00Z')), '2020-W53');
  assert.equal(isoWeek(new Date('2024-12-30T00:00:00Z')), '2025-W01');
  assert.equal(isoWeek(new Date('2024-06-15T00:00:00Z')), '2024-W24');
});

test('forget policy invariants (property): keep and remove partition the input; keep-last N keeps the N newest', () => {
  fc.assert(
    fc.property(fc.array(fc.integer({ min: 0, max: 4e11 }), { maxLength: 60 }), fc.record({ last: fc.nat(5), daily: fc.nat(5), weekly: fc.nat(3), monthly: fc.nat(3) }), (times, policy) => {
      const s = times.map((t, i) => snap(`s${i}`, new Date(1.6e12 + t).toISOString()));
      const d = applyForgetPolicy(s, policy);
      assert.deepEqual([...ids(d.keep.map((k) => k.snapshot)), ...ids(d.remove)].sort(), ids(s));
      const newest = [...s].sort((a, b) => Date.parse(b.time) - Date.parse(a.time) || b.id.localeCompare(a.id)).slice(0, policy.last);
      const kept = new Set(d.keep.map((k) => k.snapshot.id));
      for (const n of newest) assert.ok(kept.has(n.id));
      const anyRule = Object.values(policy).some((n) => n > 0);
      if (anyRule && s.length > 0) assert.ok(d.keep.length >= 1);
    }),
    { seed: fcSeed(), numRuns: 200 },
  );
});

test('forget + prune: removes what only forgotten snapshots used, keeps the rest restorable, respects the grace period', async (t) => {
  const backend = new LocalBackend(await tempDir(t));
  const repo = await initRepo(backend, { chunkSize: 8192, fanout: 8 });
  const dev = new MemoryDevice(2 * 1024 * 1024);
  await dev.write(0, randomBytes(256 * 1024));
  const s1 = await runBackup(repo, { source: { id: 'vm', name: 'vm' }, disks: [{ name: 'disk0', device: dev }] });
  await dev.write(0, randomBytes(64 * 1024)); // s1-only chunks are now the old first 64 KiB
  const s2 = await runBackup(repo, { source: { id: 'vm', name: 'vm' }, parent: s1.id, disks: [{ name: 'disk0', device: dev, previous: s1.disks[0], changedRanges: [{ offset: 0, length: 64 * 1024 }] }] });
  const h2 = await deviceHash(dev);
  const chunksBefore = (await objectNames(repo, 'chunks')).size;

  const f = await forget(repo, { last: 1 });
  assert.deepEqual(f.removed.map((s) => s.id), [s1.id]);
  assert.deepEqual((await listSnapshots(repo)).map((s) => s.id), [s2.id]);

  // Within the grace period nothing is deleted.
  const young = await prune(repo);
  assert.equal(young.removedChunks, 0);
  assert.ok(young.keptYoung >= 8);
  // Later: the 8 chunks and the pages only s1 used go.
  const later = await prune(repo, { now: Date.now() + 3 * 3600_000 });
  assert.equal(later.removedChunks, 8);
  assert.ok(later.removedPages >= 1);
  assert.equal((await objectNames(repo, 'chunks')).size, chunksBefore - 8);
  const report = await verifyRepository(repo, { readData: true });
  assert.equal(report.ok, true, JSON.stringify(report.problems));
  const target = new MemoryDevice(dev.size);
  await restoreDevice(repo, s2.disks[0], target);
  assert.equal(await deviceHash(target), h2);
  // Nothing left to prune.
  const again = await prune(repo, { now: Date.now() + 3 * 3600_000 });
  assert.equal(again.removedChunks + again.removedPages, 0);
});

test('prune refuses to run while a backup holds a shared lock; backups refuse while prune holds it', async () => {
  const repo = await initRepo(new MemoryBackend());
  const shared = await RepoLock.acquire(repo, { exclusive: false });
  await assert.rejects(prune(repo), (e) => e instanceof RepositoryLockedError && e.exitCode === 5);
  const shared2 = await RepoLock.acquire(repo, { exclusive: false });
  await shared.release();
  await shared2.release();
  const excl = await RepoLock.acquire(repo, { exclusive: true });
  await assert.rejects(runBackup(repo, { source: { id: 'x', name: 'x' }, disks: [{ name: 'd', device: new MemoryDevice(65536) }] }), RepositoryLockedError);
  await excl.release();
  await runBackup(repo, { source: { id: 'x', name: 'x' }, disks: [{ name: 'd', device: new MemoryDevice(65536) }] });
});

test('an incremental whose parent was forgotten (and maybe pruned) is refused: no dangling references', async () => {
  const { ParentMissingError } = await import('../../src/repo/errors.js');
  const repo = await initRepo(new MemoryBackend(), { chunkSize: 8192, fanout: 8 });
  const dev = new MemoryDevice(1024 * 1024);
  await dev.write(0, randomBytes(100_000));
  const s1 = await runBackup(repo, { source: { id: 'vm', name: 'vm' }, disks: [{ name: 'disk0', device: dev }] });
  await repo.backend.remove('snapshots', s1.id);
  await prune(repo, { graceMs: 0 });
  await dev.write(0, randomBytes(10));
  const incremental = { name: 'disk0', device: dev, previous: s1.disks[0], changedRanges: [{ offset: 0, length: 10 }] };
  await assert.rejects(runBackup(repo, { source: { id: 'vm', name: 'vm' }, parent: s1.id, disks: [incremental] }), (e) => e instanceof ParentMissingError && e.exitCode === 6);
  await assert.rejects(runBackup(repo, { source: { id: 'vm', name: 'vm' }, disks: [incremental] }), /needs the parent snapshot/);
  assert.equal((await listSnapshots(repo)).length, 0);
  // A full backup (no changed ranges) is the way out.
  const s2 = await runBackup(repo, { source: { id: 'vm', name: 'vm' }, disks: [{ name: 'disk0', device: dev }] });
  assert.equal((await verifyRepository(repo, { readData: true })).ok, true);
  const target = new MemoryDevice(dev.size);
  await restoreDevice(repo, s2.disks[0], target);
  assert.deepEqual(await target.read(0, 200_000), await dev.read(0, 200_000));
});
