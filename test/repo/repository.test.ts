import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { test } from 'node:test';
import { LocalBackend } from '../../src/backend/LocalBackend.js';
import { MemoryBackend } from '../../src/backend/MemoryBackend.js';
import { ZERO_DIGEST } from '../../src/repo/constants.js';
import { CorruptObjectError, PassphraseMismatchError, RepositoryExistsError, RepositoryNotFoundError, UnsupportedRepositoryError, WrongPassphraseError } from '../../src/repo/errors.js';
import { Repository } from '../../src/repo/Repository.js';
import { tempDir } from '../helpers/tools.js';
import { FAST_SCRYPT, flipBlobByte, initRepo, objectNames } from './helpers.js';

test('init/open an unencrypted repository; chunks dedup; zero chunks are not stored', async (t) => {
  const backend = new LocalBackend(await tempDir(t));
  const repo = await initRepo(backend);
  assert.equal(repo.encrypted, false);
  const data = randomBytes(32 * 1024);
  const d1 = await repo.putChunk(data);
  assert.equal(d1, createHash('sha256').update(data).digest('hex'));
  assert.equal(await repo.putChunk(Buffer.from(data)), d1);
  assert.equal(await repo.putChunk(Buffer.alloc(32 * 1024)), ZERO_DIGEST);
  assert.equal(repo.stats.chunksWritten, 1);
  assert.equal(repo.stats.chunksDeduplicated, 1);
  assert.deepEqual([...(await objectNames(repo, 'chunks'))], [], 'nothing is durable (indexed) before a flush');
  await repo.flush();
  assert.deepEqual([...(await objectNames(repo, 'chunks'))], [d1], 'one chunk stored, in one pack');
  const packs = [];
  for await (const p of backend.list('packs')) packs.push(p);
  assert.equal(packs.length, 1);
  assert.equal(await repo.putChunk(Buffer.from(data)), d1, 'dedup against the flushed pack');
  await repo.flush();
  assert.equal((await objectNames(repo, 'chunks')).size, 1);
  const reopened = await Repository.open(backend);
  assert.equal(reopened.config.id, repo.config.id);
  assert.deepEqual(await reopened.getChunk(d1), data);
  assert.deepEqual(await reopened.getChunk(ZERO_DIGEST, 100), Buffer.alloc(100));
  await assert.rejects(initRepo(backend), RepositoryExistsError);
  await assert.rejects(Repository.open(backend, { passphrase: 'x' }), PassphraseMismatchError);
});

test('open where there is no repository: RepositoryNotFoundError; unknown version: UnsupportedRepositoryError', async (t) => {
  const dir = await tempDir(t);
  await assert.rejects(Repository.open(new LocalBackend(dir)), (e) => e instanceof RepositoryNotFoundError && e.exitCode === 3);
  const b = new MemoryBackend();
  await b.put('config', 'config', Buffer.from(JSON.stringify({ version: 9 })));
  await assert.rejects(Repository.open(b), (e) => e instanceof UnsupportedRepositoryError && /version 9/.test(e.message));
});

test('encrypted repository: right passphrase opens, wrong one is WrongPassphraseError, none is refused', async (t) => {
  const dir = await tempDir(t);
  const backend = new LocalBackend(dir);
  const repo = await initRepo(backend, { passphrase: 'correct horse' });
  assert.equal(repo.encrypted, true);
  const secret = Buffer.from('TOP-SECRET-DISK-CONTENT '.repeat(2000));
  const d = await repo.putChunk(secret);
  assert.notEqual(d, createHash('sha256').update(secret).digest('hex'), 'name is keyed');
  await repo.flush();
  for await (const p of backend.list('packs')) assert.equal((await readFile(backend.path('packs', p))).includes(Buffer.from('TOP-SECRET')), false, 'pack content is encrypted');
  for await (const p of backend.list('packindex')) assert.equal((await readFile(backend.path('packindex', p))).includes(Buffer.from(d, 'hex')), false, 'pack index is encrypted');

  const keyNames = [];
  for await (const k of backend.list('keys')) keyNames.push(k);
  assert.equal(keyNames.length, 1);
  const keyFile = JSON.parse((await backend.get('keys', keyNames[0])).toString());
  assert.deepEqual({ kdf: keyFile.kdf, N: keyFile.N, r: keyFile.r, p: keyFile.p }, { kdf: 'scrypt', ...FAST_SCRYPT }, 'scrypt parameters stored in the key file');

  const again = await Repository.open(backend, { passphrase: 'correct horse' });
  assert.deepEqual(await again.getChunk(d), secret);
  await assert.rejects(Repository.open(backend, { passphrase: 'wrong horse' }), (e) => e instanceof WrongPassphraseError && e.code === 'E_WRONG_PASSPHRASE' && /wrong passphrase/.test(e.message));
  await assert.rejects(Repository.open(backend), PassphraseMismatchError);
});

test('getChunk verifies content: a flipped byte on disk is CorruptObjectError naming the chunk', async (t) => {
  const backend = new MemoryBackend();
  const repo = await initRepo(backend, { passphrase: 'pw' });
  const d = await repo.putChunk(randomBytes(5000));
  await repo.flush();
  const loc = await flipBlobByte(repo, 'chunks', d, 100);
  await assert.rejects(repo.getChunk(d), (e) => e instanceof CorruptObjectError && e.objectName === d && e.type === 'chunks' && e.message.includes(`chunks/${d}`) && e.data.pack === loc.pack);
});

test('concurrent putChunk of the same content stores it once', async () => {
  const backend = new MemoryBackend();
  const repo = await initRepo(backend);
  const data = randomBytes(4096);
  const ds = await Promise.all(Array.from({ length: 10 }, () => repo.putChunk(Buffer.from(data))));
  assert.equal(new Set(ds).size, 1);
  assert.equal(repo.stats.chunksWritten, 1);
});

test('codec worker threads produce the same objects as inline encoding (encrypted repo)', async () => {
  const { MemoryDevice } = await import('../../src/blockdev/MemoryDevice.js');
  const { backupDevice } = await import('../../src/repo/backupDevice.js');
  const { restoreDevice } = await import('../../src/repo/restoreDevice.js');
  const backend = new MemoryBackend();
  await initRepo(backend, { passphrase: 'pw', chunkSize: 8192 });
  const dev = new MemoryDevice(1 << 20);
  await dev.write(1000, randomBytes(300_000));
  const pooled = await Repository.open(backend, { passphrase: 'pw', workers: 2 });
  const a = await backupDevice(pooled, dev);
  await pooled.close();
  assert.ok(a.stats.chunksWritten > 30);
  const inline = await Repository.open(backend, { passphrase: 'pw' });
  const b = await backupDevice(inline, dev);
  assert.equal(b.disk.indexRoot, a.disk.indexRoot, 'same digests either way');
  assert.equal(b.stats.chunksWritten, 0, 'inline finds every chunk the workers stored');
  const target = new MemoryDevice(1 << 20);
  await restoreDevice(inline, a.disk, target);
  assert.deepEqual(await target.read(0, 1 << 20), await dev.read(0, 1 << 20));
});
