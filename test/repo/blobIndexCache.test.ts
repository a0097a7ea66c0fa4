/**
 * The local pack index cache (BlobIndexCache): the codec round-trips a table exactly; a backup writes it;
 * a later open reads only the pack index objects the cache does not name; a prune that removed a named
 * pack index, a damaged file or the wrong keys make it be ignored (the table is rebuilt), never wrong.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import fc from 'fast-check';
import { LocalBackend } from '../../src/backend/LocalBackend.js';
import { MemoryDevice } from '../../src/blockdev/MemoryDevice.js';
import { BlobIndex } from '../../src/repo/BlobIndex.js';
import { decodeBlobIndexCache, encodeBlobIndexCache } from '../../src/repo/BlobIndexCache.js';
import { ObjectKind } from '../../src/repo/constants.js';
import { prune } from '../../src/repo/prune.js';
import { Repository } from '../../src/repo/Repository.js';
import { restoreDevice } from '../../src/repo/restoreDevice.js';
import { runBackup } from '../../src/repo/runBackup.js';
import { fcSeed, tempDir } from '../helpers/tools.js';
import { deviceHash, FAST_SCRYPT } from './helpers.js';

const hex = (): string => randomBytes(32).toString('hex');

test('cache codec: a table round-trips exactly (lookups, per-pack lists, sizes); damage is a described error (property)', () => {
  fc.assert(
    fc.property(fc.array(fc.integer({ min: 0, max: 40 }), { maxLength: 12 }), fc.integer({ min: 0, max: 5 }), (packSizes, dups) => {
      const t = new BlobIndex(16);
      const seen: Array<{ kind: 1 | 2; digest: string }> = [];
      for (const n of packSizes) {
        const entries = Array.from({ length: n }, (_, i) => {
          const again = i < dups && seen.length > 0 ? seen[i % seen.length] : null; // the same blob in another pack
          const e = again ?? { kind: (i % 3 === 0 ? ObjectKind.indexPage : ObjectKind.chunk) as 1 | 2, digest: hex() };
          seen.push(e);
          return { ...e, offset: i * 100, length: 90 + i };
        });
        t.addPack({ id: hex(), entries });
      }
      const names = Array.from({ length: 3 }, hex);
      const back = decodeBlobIndexCache(encodeBlobIndexCache(names, t));
      assert.ok(typeof back !== 'string', String(back));
      assert.deepEqual(back.names, names);
      assert.equal(back.index.size, t.size);
      assert.equal(back.index.entries, t.entries);
      assert.deepEqual([...back.index.packLists()].map(([id, l]) => [id, [...l]]), [...t.packLists()].map(([id, l]) => [id, [...l]]));
      for (const e of seen) assert.deepEqual(back.index.locate(e.kind, e.digest), t.locate(e.kind, e.digest));
      assert.equal(back.index.has(ObjectKind.chunk, hex()), false);
      // The decoded table keeps working: new packs are added to it.
      const more = { kind: ObjectKind.chunk as 1, digest: hex(), offset: 0, length: 5 };
      back.index.addPack({ id: hex(), entries: [more] });
      assert.equal(back.index.locate(more.kind, more.digest)?.length, 5);
    }),
    { seed: fcSeed(), numRuns: 60 },
  );
  const t = new BlobIndex(16);
  t.addPack({ id: hex(), entries: [{ kind: ObjectKind.chunk, digest: hex(), offset: 0, length: 10 }] });
  const good = encodeBlobIndexCache([hex()], t);
  assert.match(String(decodeBlobIndexCache(good.subarray(0, good.length - 1))), /header says/);
  const badSlot = Buffer.from(good);
  badSlot.writeInt32LE(99, badSlot.length - 4); // a slot naming record 98 of 1
  assert.match(String(decodeBlobIndexCache(badSlot)), /slot/);
  const badVersion = Buffer.from(good);
  badVersion[4] = 9;
  assert.match(String(decodeBlobIndexCache(badVersion)), /version 9/);
});

/** Counts the pack index objects a repository reads. */
function counting(backend: LocalBackend): { reads: () => number } {
  let n = 0;
  const get = backend.get.bind(backend);
  backend.get = (type, name) => {
    if (type === 'packindex') n++;
    return get(type, name);
  };
  return { reads: () => n };
}

async function backupOnce(repo: Repository, dev: MemoryDevice): Promise<string> {
  const s = await runBackup(repo, { source: { id: 'v', name: 'v' }, disks: [{ name: 'd', device: dev }] });
  await repo.packs.cacheSaved();
  return s.id;
}

for (const encrypted of [false, true]) {
  test(`a backup writes the cache; the next open reads only pack indexes it does not name; a prune or damage makes it be ignored (${encrypted ? 'encrypted' : 'plain'})`, async (t) => {
    const dir = await tempDir(t);
    const cacheRoot = join(dir, 'cache');
    const auth = encrypted ? { passphrase: 'pw', scrypt: FAST_SCRYPT } : {};
    const init = await Repository.init(new LocalBackend(join(dir, 'repo')), { chunkSize: 4096, fanout: 16, packSize: 64 * 1024, cacheRoot, ...auth });
    const dev = new MemoryDevice(2 * 1024 * 1024);
    await dev.write(0, randomBytes(1024 * 1024));
    const first = await backupOnce(init, dev);
    await init.close();
    const [id] = await readdir(cacheRoot);
    assert.equal(id, init.config.id, 'one cache directory per repository id');
    const file = join(cacheRoot, id, 'blobindex');
    assert.ok((await readFile(file)).length > 1000);
    const indexes = async (): Promise<number> => (await readdir(join(dir, 'repo', 'packindex'))).length;

    const open = async (withCache = true): Promise<{ repo: Repository; reads: () => number }> => {
      const backend = new LocalBackend(join(dir, 'repo'));
      const c = counting(backend);
      const repo = await Repository.open(backend, { cacheRoot: withCache ? cacheRoot : undefined, passphrase: encrypted ? 'pw' : undefined });
      return { repo, reads: c.reads };
    };
    const restoresExactly = async (repo: Repository): Promise<void> => {
      const { listSnapshots } = await import('../../src/repo/Manifest.js');
      const snaps = await listSnapshots(repo);
      const latest = snaps[snaps.length - 1];
      const out = new MemoryDevice(dev.size);
      await restoreDevice(repo, latest.disks[0], out);
      assert.equal(await deviceHash(out), await deviceHash(dev));
    };

    // 1. Every pack index is in the cache: none is read.
    let o = await open();
    await o.repo.packs.ensureLoaded();
    assert.equal(o.reads(), 0, 'loaded from the cache alone');
    assert.ok((await indexes()) > 3);
    await restoresExactly(o.repo);
    await o.repo.close();

    // 2. Another process (no cache) adds pack indexes: only those are read.
    const before = await indexes();
    const other = await open(false);
    await dev.write(512 * 1024, randomBytes(256 * 1024));
    await backupOnce(other.repo, dev);
    await other.repo.close();
    const added = (await indexes()) - before;
    assert.ok(added > 0);
    o = await open();
    await o.repo.packs.ensureLoaded();
    assert.equal(o.reads(), added, 'only the pack indexes written since the cache');
    await restoresExactly(o.repo);
    // ... and its own next backup refreshes the cache.
    await dev.write(0, randomBytes(64 * 1024));
    await backupOnce(o.repo, dev);
    await o.repo.close();
    o = await open();
    await o.repo.packs.ensureLoaded();
    assert.equal(o.reads(), 0, 'refreshed after the backup');
    await o.repo.close();

    // 3. A prune that rewrites pack indexes (the first restore point forgotten: its overwritten chunks
    // are dead, their packs repacked) removes ones the cache names: the cache is stale, all are read.
    const p = await open(false);
    const listed = new Set(await readdir(join(dir, 'repo', 'packindex')));
    await p.repo.backend.remove('snapshots', first);
    await prune(p.repo, { graceMs: 0 });
    await p.repo.close();
    const after = new Set(await readdir(join(dir, 'repo', 'packindex')));
    assert.ok([...listed].some((n) => !after.has(n)), 'the prune removed pack indexes');
    o = await open();
    await o.repo.packs.ensureLoaded();
    assert.equal(o.reads(), await indexes(), 'stale cache ignored: every pack index read');
    await restoresExactly(o.repo);
    await dev.write(128 * 1024, randomBytes(64 * 1024));
    await backupOnce(o.repo, dev);
    await o.repo.close();

    // 4. verify reads every pack index even with a cache: damage in one the cache names is reported.
    const names = await readdir(join(dir, 'repo', 'packindex'));
    const victim = join(dir, 'repo', 'packindex', names[0]);
    const good = await readFile(victim);
    const flipped = Buffer.from(good);
    flipped[flipped.length - 20] ^= 1;
    await writeFile(victim, flipped);
    o = await open();
    await o.repo.packs.ensureLoaded();
    assert.equal(o.reads(), 0, 'a backup or restore trusts the cache (the names are content addresses)');
    const { verifyRepository } = await import('../../src/repo/verifyRepository.js');
    const v = await verifyRepository(o.repo);
    assert.equal(v.ok, false);
    assert.ok(JSON.stringify(v).includes(names[0]), 'the damaged pack index is named');
    await o.repo.close();
    await writeFile(victim, good);

    // 5. A damaged cache file is ignored (and the result still right).
    const bytes = await readFile(file);
    bytes[bytes.length >> 1] ^= 0x40;
    await writeFile(file, bytes);
    o = await open();
    await o.repo.packs.ensureLoaded();
    assert.equal(o.reads(), await indexes(), 'damaged cache ignored');
    await restoresExactly(o.repo);
    await o.repo.close();
  });
}

test('an encrypted repository\'s cache is encrypted: another key cannot use it, and it does not hold the digests in the clear', async (t) => {
  const dir = await tempDir(t);
  const cacheRoot = join(dir, 'cache');
  const repo = await Repository.init(new LocalBackend(join(dir, 'repo')), { chunkSize: 4096, fanout: 16, cacheRoot, passphrase: 'pw', scrypt: FAST_SCRYPT });
  const dev = new MemoryDevice(256 * 1024);
  await dev.write(0, randomBytes(256 * 1024));
  await backupOnce(repo, dev);
  const file = join(cacheRoot, repo.config.id, 'blobindex');
  const cache = await readFile(file);
  const { listSnapshots } = await import('../../src/repo/Manifest.js');
  const [snap] = await listSnapshots(repo);
  assert.equal(cache.includes(Buffer.from(snap.disks[0].indexRoot, 'hex')), false, 'no digest in the clear');
  for (const id of repo.packs.indexedPacks.keys()) assert.equal(cache.includes(Buffer.from(id, 'hex')), false, 'no pack id in the clear');
  await repo.close();
  // The same cache under a repository with other keys (same id directory) is not usable.
  const { openBlobIndexCache } = await import('../../src/repo/BlobIndexCache.js');
  assert.equal(openBlobIndexCache(cache, cacheRoot, { encKey: randomBytes(32), idKey: randomBytes(32) }), null);
  assert.equal(openBlobIndexCache(cache, cacheRoot, null), null);
});
