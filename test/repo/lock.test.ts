import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { hostname } from 'node:os';
import { test } from 'node:test';
import { MemoryBackend } from '../../src/backend/MemoryBackend.js';
import { RepositoryLockedError } from '../../src/repo/errors.js';
import { isStale, listLocks, RepoLock, removeStaleLocks } from '../../src/repo/RepoLock.js';
import { initRepo } from './helpers.js';

test('shared locks coexist; exclusive excludes both ways; release removes the object', async () => {
  const backend = new MemoryBackend();
  const repo = await initRepo(backend, { passphrase: 'pw' });
  const a = await RepoLock.acquire(repo, { exclusive: false, refreshMs: 0 });
  const b = await RepoLock.acquire(repo, { exclusive: false, refreshMs: 0 });
  assert.equal((await listLocks(repo)).length, 2);
  await assert.rejects(RepoLock.acquire(repo, { exclusive: true }), (e) => e instanceof RepositoryLockedError && e.message.includes(`pid ${process.pid} on ${hostname()}`));
  assert.equal((await listLocks(repo)).length, 2, 'a refused lock leaves nothing behind');
  await a.release();
  await b.release();
  await a.release(); // idempotent
  const x = await RepoLock.acquire(repo, { exclusive: true, refreshMs: 0 });
  await assert.rejects(RepoLock.acquire(repo, { exclusive: false }), RepositoryLockedError);
  await x.release();
  assert.equal((await listLocks(repo)).length, 0);
});

test('refresh replaces the lock object with a newer one', async () => {
  const repo = await initRepo(new MemoryBackend());
  let now = Date.parse('2030-01-01T00:00:00Z');
  const l = await RepoLock.acquire(repo, { exclusive: true, refreshMs: 0, now: () => now });
  const first = l.objectName;
  now += 60_000;
  await l.refresh();
  const locks = await listLocks(repo);
  assert.equal(locks.length, 1);
  assert.notEqual(locks[0].name, first);
  assert.equal(locks[0].info?.time, new Date(now).toISOString());
  await l.release();
});

test('stale locks (old, or a dead process on this host) are ignored and can be removed', async () => {
  const repo = await initRepo(new MemoryBackend());
  // A lock from a process that has exited.
  const dead = spawnSync(process.execPath, ['-e', '0']).pid!;
  await repo.putObject('locks', Buffer.from(JSON.stringify({ time: new Date().toISOString(), exclusive: true, host: hostname(), pid: dead, user: 'x', nonce: '1' })));
  // An old lock from another host.
  await repo.putObject('locks', Buffer.from(JSON.stringify({ time: new Date(Date.now() - 31 * 60_000).toISOString(), exclusive: true, host: 'elsewhere', pid: 1, user: 'x', nonce: '2' })));
  // A fresh lock from another host: live.
  await repo.putObject('locks', Buffer.from(JSON.stringify({ time: new Date().toISOString(), exclusive: false, host: 'elsewhere', pid: 1, user: 'x', nonce: '3' })));
  const locks = await listLocks(repo);
  assert.deepEqual(locks.map((l) => isStale(l, Date.now())).sort(), [false, true, true]);
  const shared = await RepoLock.acquire(repo, { exclusive: false, refreshMs: 0 }); // stale exclusive locks do not block
  await assert.rejects(RepoLock.acquire(repo, { exclusive: true }), /elsewhere/, 'the live shared lock blocks an exclusive one');
  await shared.release();
  assert.equal(await removeStaleLocks(repo), 2);
  assert.equal((await listLocks(repo)).length, 1);
});
