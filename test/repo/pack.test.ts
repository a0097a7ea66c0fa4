/**
 * Pack files and pack indexes: the pure codecs, the write ordering (packs durable -> pack index durable
 * -> manifest), failures mid-backup, bounded uploads, prune's repacking, and refusing format 1.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import fc from 'fast-check';
import type { Backend, ObjectType } from '../../src/backend/Backend.js';
import { LocalBackend } from '../../src/backend/LocalBackend.js';
import { MemoryBackend } from '../../src/backend/MemoryBackend.js';
import { MemoryDevice } from '../../src/blockdev/MemoryDevice.js';
import { ObjectKind } from '../../src/repo/constants.js';
import { UnsupportedRepositoryError } from '../../src/repo/errors.js';
import { listSnapshots } from '../../src/repo/Manifest.js';
import { encodeObject, type RepoKeys } from '../../src/repo/ObjectCodec.js';
import { decodePack, decodePackIndex, encodePack, encodePackIndex, encodePackTail, packId, type BlobKind } from '../../src/repo/PackFormat.js';
import { PackStore } from '../../src/repo/PackStore.js';
import { prune } from '../../src/repo/prune.js';
import { Repository } from '../../src/repo/Repository.js';
import { restoreDevice } from '../../src/repo/restoreDevice.js';
import { runBackup } from '../../src/repo/runBackup.js';
import { verifyRepository } from '../../src/repo/verifyRepository.js';
import { fcSeed, tempDir } from '../helpers/tools.js';
import { deviceHash, initRepo, objectNames } from './helpers.js';

const KiB = 1024;
const MiB = 1 << 20;
const keys: RepoKeys = { encKey: randomBytes(32), idKey: randomBytes(32) };

function makePack(blobs: Array<{ kind: BlobKind; plain: Buffer }>, k: RepoKeys | null): { bytes: Buffer; digests: string[] } {
  const envs = blobs.map((b) => encodeObject(b.kind, b.plain, { keys: k }));
  const digests = blobs.map(() => randomBytes(32).toString('hex'));
  const tail = encodePackTail(blobs.map((b, i) => ({ kind: b.kind, digest: digests[i], length: envs[i].length })), k);
  return { bytes: Buffer.concat([...envs, tail]), digests };
}

test('pack codec: round trip with and without encryption; every damaged tail byte is a described error', () => {
  fc.assert(
    fc.property(fc.array(fc.record({ kind: fc.constantFrom<BlobKind>(ObjectKind.chunk, ObjectKind.indexPage), n: fc.integer({ min: 0, max: 3000 }) }), { maxLength: 20 }), fc.boolean(), (spec, encrypted) => {
      const k = encrypted ? keys : null;
      const { bytes, digests } = makePack(spec.map((s) => ({ kind: s.kind, plain: randomBytes(s.n) })), k);
      const entries = decodePack(bytes, k, 'mem:', packId(bytes));
      assert.ok(Array.isArray(entries), String(entries));
      assert.deepEqual(entries.map((e) => [e.kind, e.digest]), spec.map((s, i) => [s.kind, digests[i]]));
      let off = 0;
      for (const e of entries) {
        assert.equal(e.offset, off);
        off += e.length;
      }
    }),
    { seed: fcSeed(), numRuns: 60 },
  );
  // Flip each byte of the header + trailer: never a crash. Encrypted: always an error (AES-GCM). Plain:
  // an error, or different entries in a pack that no longer hashes to its name (verify checks it; a
  // changed digest also fails the blob's own digest check when read).
  for (const k of [null, keys]) {
    const { bytes } = makePack([{ kind: ObjectKind.chunk, plain: randomBytes(100) }, { kind: ObjectKind.indexPage, plain: randomBytes(50) }], k);
    const good = decodePack(bytes, k, 'mem:', 'x');
    const blobEnd = (good as Array<{ offset: number; length: number }>)[1].offset + (good as Array<{ length: number }>)[1].length;
    for (let i = blobEnd; i < bytes.length; i++) {
      const bad = Buffer.from(bytes);
      bad[i] ^= 0x01;
      const r = decodePack(bad, k, 'mem:', 'x');
      if (typeof r === 'string') assert.match(r, /pack/);
      else {
        assert.equal(k, null, `byte ${i}: an encrypted header decoded despite damage`);
        assert.notEqual(packId(bad), packId(bytes));
      }
    }
  }
  assert.match(decodePack(Buffer.from('short'), null, 'mem:', 'x') as string, /shorter than its trailer/);
});

test('pack index codec: round trip; truncation and bad kinds are described errors', () => {
  const packs = Array.from({ length: 3 }, (_, p) => ({
    id: randomBytes(32).toString('hex'),
    entries: Array.from({ length: p * 5 }, (_, i) => ({ kind: (i % 2 ? ObjectKind.chunk : ObjectKind.indexPage) as BlobKind, digest: randomBytes(32).toString('hex'), offset: i * 1000, length: 999 + p })),
  }));
  const plain = encodePackIndex(packs);
  assert.equal(plain.length, 16 + 3 * 40 + 15 * 44, 'header 16 B, 40 B per pack, 44 B per blob');
  assert.deepEqual(decodePackIndex(plain), packs);
  for (const cut of [0, 10, 16, 50, plain.length - 1]) assert.equal(typeof decodePackIndex(plain.subarray(0, cut)), 'string', `cut at ${cut}`);
  const badKind = Buffer.from(plain);
  badKind[16 + 40 + 40 + 32] = 9; // first entry of the second pack
  assert.match(decodePackIndex(badKind) as string, /kind 9/);
  assert.match(decodePackIndex(Buffer.concat([plain, Buffer.alloc(1)])) as string, /trailing/);
});

/** Records the order of puts; optionally fails the n-th put of a type; counts concurrent pack puts. */
function recording(next: Backend, fail?: { type: ObjectType; nth: number }) {
  const log: Array<{ type: ObjectType; name: string }> = [];
  let count = 0;
  let active = 0;
  const stats = { maxActivePacks: 0 };
  const b: Backend = {
    location: next.location,
    put: async (type, name, data) => {
      if (fail && type === fail.type && ++count === fail.nth) throw Object.assign(new Error('simulated I/O failure'), { code: 'EIO' });
      if (type === 'packs') stats.maxActivePacks = Math.max(stats.maxActivePacks, ++active);
      try {
        if (type === 'packs') await new Promise((r) => setTimeout(r, 5)); // a slow store
        const ok = await next.put(type, name, data);
        log.push({ type, name });
        return ok;
      } finally {
        if (type === 'packs') active--;
      }
    },
    get: (t, n) => next.get(t, n),
    getRange: (t, n, o, l) => next.getRange!(t, n, o, l),
    has: (t, n) => next.has(t, n),
    list: (t) => next.list(t),
    remove: (t, n) => next.remove(t, n),
    stat: (t, n) => next.stat(t, n),
  };
  return { b, log, stats };
}

test('write ordering: every pack is durable and indexed before the manifest that needs it; uploads are bounded', async () => {
  const mem = new MemoryBackend();
  const { b, log, stats } = recording(mem);
  const repo = await initRepo(b, { chunkSize: 4096, fanout: 16, packSize: 64 * KiB });
  const dev = new MemoryDevice(4 * MiB);
  await dev.write(0, randomBytes(3 * MiB));
  const s1 = await runBackup(repo, { source: { id: 'v', name: 'v' }, disks: [{ name: 'd', device: dev }], concurrency: 32 } as never);
  const snapAt = log.findIndex((e) => e.type === 'snapshots');
  assert.ok(snapAt > 0, 'a manifest was written');
  const before = log.slice(0, snapAt);
  const packs = before.filter((e) => e.type === 'packs').map((e) => e.name);
  assert.ok(packs.length >= 48, `3 MiB in 64 KiB packs: ${packs.length} packs`);
  assert.ok(log.slice(snapAt).every((e) => e.type !== 'packs' && e.type !== 'packindex'), 'nothing pack-related after the manifest');
  // Every pack put before the manifest is named by a pack index put before the manifest, after the pack.
  const store = new PackStore(mem, null);
  await store.ensureLoaded();
  for (const id of packs) assert.ok(store.indexedPacks.has(id), `pack ${id} is indexed`);
  const namedBy = new Map<string, number>();
  for (const ix of before.filter((e) => e.type === 'packindex')) {
    const at = before.indexOf(ix);
    for (const p of await store.readIndex(ix.name)) {
      assert.ok(before.findIndex((e) => e.type === 'packs' && e.name === p.id) < at, 'a pack index follows its packs');
      namedBy.set(p.id, (namedBy.get(p.id) ?? 0) + 1);
    }
  }
  for (const id of packs) assert.equal(namedBy.get(id), 1, `pack ${id.slice(0, 8)} is named by exactly one pack index`);
  assert.ok(stats.maxActivePacks <= 3, `at most PACK_UPLOADS + 1 packs in flight (saw ${stats.maxActivePacks})`);
  const out = new MemoryDevice(4 * MiB);
  await restoreDevice(repo, s1.disks[0], out);
  assert.equal(await deviceHash(out), await deviceHash(dev));
});

for (const fail of [{ type: 'packs' as const, nth: 5 }, { type: 'packindex' as const, nth: 3 }]) {
  test(`a ${fail.type} put failing mid-backup: the backup fails, no snapshot, verify passes, the repository stays usable`, async () => {
    const mem = new MemoryBackend();
    const { b } = recording(mem, fail);
    const repo = await initRepo(b, { chunkSize: 4096, fanout: 16, packSize: 64 * KiB });
    const dev = new MemoryDevice(4 * MiB);
    await dev.write(0, randomBytes(2 * MiB));
    await assert.rejects(runBackup(repo, { source: { id: 'v', name: 'v' }, disks: [{ name: 'd', device: dev }] }), /simulated I\/O failure/);
    assert.deepEqual(await listSnapshots(repo), []);
    assert.equal((await verifyRepository(repo, { readData: true })).ok, true);
    // Same process, next backup: what the failed run left unindexed is not trusted for dedup.
    const s = await runBackup(repo, { source: { id: 'v', name: 'v' }, disks: [{ name: 'd', device: dev }] });
    assert.equal((await verifyRepository(repo, { readData: true })).ok, true);
    const out = new MemoryDevice(4 * MiB);
    await restoreDevice(repo, s.disks[0], out);
    assert.equal(await deviceHash(out), await deviceHash(dev));
  });
}

test('prune repacks partly-dead packs, drops dead and unindexed old packs, keeps young ones, merges pack indexes', async () => {
  let now = Date.now();
  const mem = new MemoryBackend({ clock: () => now });
  const repo = await initRepo(mem, { chunkSize: 4096, fanout: 16, packSize: 256 * KiB });
  const dev = new MemoryDevice(2 * MiB);
  await dev.write(0, randomBytes(MiB));
  const s1 = await runBackup(repo, { source: { id: 'v', name: 'v' }, disks: [{ name: 'd', device: dev }] });
  await dev.write(0, randomBytes(128 * KiB)); // 32 chunks of s1 become s1-only
  const s2 = await runBackup(repo, { source: { id: 'v', name: 'v' }, parent: s1.id, disks: [{ name: 'd', device: dev, previous: s1.disks[0], changedRanges: [{ offset: 0, length: 128 * KiB }] }] });
  const h2 = await deviceHash(dev);
  // An old pack that no index names (a killed backup's), and garbage from an old index.
  await mem.put('packs', 'ab'.repeat(32), randomBytes(1000));
  await mem.remove('snapshots', s1.id);
  const packsBefore: string[] = [];
  for await (const p of mem.list('packs')) packsBefore.push(p);
  const chunksBefore = (await objectNames(repo, 'chunks')).size;

  const young = await prune(repo, { now });
  assert.equal(young.removedPacks, 0, 'everything is younger than the grace period');
  assert.ok(young.keptYoung >= 32);

  now += 3 * 3600_000;
  const dry = await prune(repo, { dryRun: true, repackUnused: 0, now });
  assert.ok(dry.removedPacks > 0);
  const after: string[] = [];
  for await (const p of mem.list('packs')) after.push(p);
  assert.deepEqual(after.sort(), packsBefore.sort(), 'dry run changes nothing');

  const r = await prune(repo, { repackUnused: 0, now });
  assert.equal(r.removedChunks, 32, JSON.stringify(r));
  assert.ok(r.repackedPacks >= 1 && r.removedPacks >= 2, JSON.stringify(r));
  assert.equal((await objectNames(repo, 'chunks')).size, chunksBefore - 32);
  assert.equal(await mem.has('packs', 'ab'.repeat(32)), false, 'the old unindexed pack is gone');
  const indexes: string[] = [];
  for await (const n of mem.list('packindex')) indexes.push(n);
  assert.equal(indexes.length, 1, 'pack indexes merged into one');
  assert.equal((await verifyRepository(repo, { readData: true })).ok, true);
  const out = new MemoryDevice(2 * MiB);
  await restoreDevice(repo, s2.disks[0], out);
  assert.equal(await deviceHash(out), h2);
  now += 3 * 3600_000; // the repacked packs are old too
  const again = await prune(repo, { repackUnused: 0, now });
  assert.equal(again.removedPacks + again.removedChunks + again.removedPages, 0, 'nothing left to prune');
  // A fresh process sees the same thing.
  const reopened = await Repository.open(mem);
  const out2 = new MemoryDevice(2 * MiB);
  await restoreDevice(reopened, s2.disks[0], out2);
  assert.equal(await deviceHash(out2), h2);
});

test('a pack made durable while the final flush runs is named by one pack index, not two (LocalBackend)', async (t) => {
  // Real fsyncs make uploads finish while flush() claims what is still uploading: a pack already
  // queued for the next index must not be claimed again.
  for (let round = 0; round < 3; round++) {
    const backend = new LocalBackend(await tempDir(t));
    const repo = await initRepo(backend, { chunkSize: 16 * KiB, fanout: 8, packSize: 64 * KiB });
    const dev = new MemoryDevice(2 * MiB);
    await dev.write(0, randomBytes(MiB));
    await runBackup(repo, { source: { id: 'v', name: 'v' }, disks: [{ name: 'd', device: dev }] });
    const store = new PackStore(backend, null);
    await store.ensureLoaded();
    const namedBy = new Map<string, number>();
    for (const ix of store.indexObjects) for (const p of await store.readIndex(ix)) namedBy.set(p.id, (namedBy.get(p.id) ?? 0) + 1);
    for (const [id, n] of namedBy) assert.equal(n, 1, `round ${round}: pack ${id.slice(0, 8)} is named by ${n} pack indexes`);
    assert.ok(namedBy.size >= 16, `${namedBy.size} packs`);
  }
});

test('prune: a pack named by two pack indexes is one pack — never "repacked" into itself and deleted', async () => {
  let now = Date.now();
  const mem = new MemoryBackend({ clock: () => now });
  const repo = await initRepo(mem, { chunkSize: 4096, fanout: 16, packSize: 64 * KiB });
  const dev = new MemoryDevice(MiB);
  await dev.write(0, randomBytes(256 * KiB));
  const s1 = await runBackup(repo, { source: { id: 'v', name: 'v' }, disks: [{ name: 'd', device: dev }] });
  const h1 = await deviceHash(dev);
  // Index every pack a second time (what a crash between a pack and its index, or a flush racing a
  // seal, leaves behind): each pack is then listed with its entries twice.
  const store = new PackStore(mem, repo.objectKeys);
  await store.ensureLoaded();
  const packs = [...store.indexedPacks].map(([id, entries]) => ({ id, entries: entries.map(({ kind, digest, offset, length }) => ({ kind, digest, offset, length })) }));
  await store.putIndex(packs);
  const reloaded = new PackStore(mem, repo.objectKeys);
  await reloaded.ensureLoaded();
  const [, twice] = [...reloaded.indexedPacks][0];
  assert.equal(twice.length, 2 * packs[0].entries.length, 'the pack is listed twice');
  now += 3 * 3600_000;
  const r = await prune(repo, { repackUnused: 0, now });
  assert.equal(r.removedChunks + r.removedPages, 0, JSON.stringify(r));
  assert.equal(r.repackedPacks, 0, 'nothing to repack: no blob is garbage');
  for (const p of packs) assert.ok(await mem.has('packs', p.id), `pack ${p.id.slice(0, 8)} kept`);
  assert.equal((await verifyRepository(repo, { readData: true })).ok, true);
  const out = new MemoryDevice(MiB);
  await restoreDevice(repo, s1.disks[0], out);
  assert.equal(await deviceHash(out), h1);
});

test('prune refuses to run when a pack index is unreadable (its packs would look unindexed)', async () => {
  const mem = new MemoryBackend();
  const repo = await initRepo(mem, { chunkSize: 4096 });
  const dev = new MemoryDevice(MiB);
  await dev.write(0, randomBytes(100 * KiB));
  await runBackup(repo, { source: { id: 'v', name: 'v' }, disks: [{ name: 'd', device: dev }] });
  let name = '';
  for await (const n of mem.list('packindex')) name = n;
  mem.raw('packindex', name)[20] ^= 1;
  await assert.rejects(prune(repo, { graceMs: 0 }), (e: Error & { code?: string }) => e.code === 'E_CORRUPT' && e.message.includes(`packindex/${name}`));
  let packs = 0;
  for await (const _ of mem.list('packs')) packs++;
  assert.ok(packs > 0, 'no pack deleted');
  const v = await verifyRepository(repo);
  assert.equal(v.ok, false);
  assert.ok(v.problems.some((p) => p.type === 'packindex' && p.name === name));
  assert.ok(v.problems.some((p) => p.type === 'index' && p.problem === 'missing' && p.snapshots.length === 1), 'the blobs it indexed are missing for the snapshot');
});

test('a format-1 repository (one file per chunk) is refused with a re-init message', async () => {
  const mem = new MemoryBackend();
  await mem.put('config', 'config', Buffer.from(JSON.stringify({ version: 1, id: 'a'.repeat(32), created: new Date().toISOString(), encryption: 'none', compression: 'none', chunkSize: 32768, fanout: 512 })));
  await assert.rejects(Repository.open(mem), (e) => e instanceof UnsupportedRepositoryError && e.exitCode === 7 && /format version 1/.test(e.message) && /re-init/.test(e.message));
  const fresh = await initRepo(new MemoryBackend());
  assert.equal(fresh.config.version, 2);
});

test('a lock-free reader whose pack index map predates a repacking prune reloads it and still restores', async () => {
  const mem = new MemoryBackend();
  const writer = await initRepo(mem, { chunkSize: 4096, packSize: 128 * KiB });
  const dev = new MemoryDevice(MiB);
  await dev.write(0, randomBytes(512 * KiB));
  const s1 = await runBackup(writer, { source: { id: 'v', name: 'v' }, disks: [{ name: 'd', device: dev }] });
  await dev.write(0, randomBytes(64 * KiB));
  const s2 = await runBackup(writer, { source: { id: 'v', name: 'v' }, parent: s1.id, disks: [{ name: 'd', device: dev, previous: s1.disks[0], changedRanges: [{ offset: 0, length: 64 * KiB }] }] });
  const want = await deviceHash(dev);
  const reader = await Repository.open(mem);
  const first = new MemoryDevice(MiB);
  await restoreDevice(reader, s2.disks[0], first); // loads the map
  await mem.remove('snapshots', s1.id);
  const pr = await prune(writer, { graceMs: 0, repackUnused: 0 });
  assert.ok(pr.repackedPacks >= 1, JSON.stringify(pr));
  const again = new MemoryDevice(MiB);
  await restoreDevice(reader, s2.disks[0], again);
  assert.equal(await deviceHash(again), want);
});

test('a pack is streamed to its temp file while it fills; the stored pack is its blobs, then a tail naming them (the one-piece encoding); abort leaves no temp file', async (t) => {
  const dir = await tempDir(t);
  const backend = new LocalBackend(dir, { streamSyncBytes: 64 * KiB });
  for (const k of [null, keys]) {
    const store = new PackStore(backend, k, 512 * KiB);
    await store.ensureLoaded();
    const blobs = Array.from({ length: 40 }, (_, i) => ({ kind: (i % 5 === 0 ? ObjectKind.indexPage : ObjectKind.chunk) as BlobKind, digest: randomBytes(32).toString('hex'), bytes: encodeObject(ObjectKind.chunk, randomBytes(8 * KiB + i), { keys: k }) }));
    for (const b of blobs.slice(0, 20)) await store.add(b.kind, b.digest, b.bytes);
    // Before any seal: the open packs' bytes are already in temp files (written in the background), no pack is visible.
    await new Promise((r) => setTimeout(r, 100));
    let parts = (await readdir(join(dir, 'tmp'))).filter((n) => n.endsWith('.part'));
    assert.equal(parts.length, 2, 'one streamed temp file per open pack (data and tree)');
    const partBytes = (await Promise.all(parts.map((p) => stat(join(dir, 'tmp', p))))).reduce((a, s) => a + s.size, 0);
    assert.equal(partBytes, blobs.slice(0, 20).reduce((a, b) => a + b.bytes.length, 0), 'every blob added so far is in the temp files');
    assert.deepEqual(await collectNames(backend, 'packs'), []);
    for (const b of blobs.slice(20)) await store.add(b.kind, b.digest, b.bytes);
    await store.flush();
    // Each stored pack is its blobs in order, then a tail that decodes to its entries, named by its hash;
    // unencrypted (no random nonce in the header) it equals encodePack's one-piece encoding byte for byte.
    const ids = await collectNames(backend, 'packs');
    assert.equal(ids.length, 2);
    for (const id of ids) {
      const entries = store.indexedPacks.get(id)!;
      const inPack = entries.map((e) => blobs.find((b) => b.digest === e.digest)!);
      const got = await backend.get('packs', id);
      assert.equal(packId(got), id);
      const body = Buffer.concat(inPack.map((b) => b.bytes));
      assert.deepEqual(got.subarray(0, body.length), body);
      const decoded = decodePack(got, k, 'local', id);
      assert.ok(Array.isArray(decoded), String(decoded));
      assert.deepEqual(decoded.map((e) => [e.kind, e.digest, e.offset, e.length]), entries.map((e) => [e.kind, e.digest, e.offset, e.length]));
      if (!k) assert.deepEqual(got, encodePack(inPack, k).bytes);
    }
    for (const id of ids) await backend.remove('packs', id);
    // Aborted while filling: the streamed temp file is removed, nothing is published.
    for (const b of blobs.slice(0, 10)) await store.add(b.kind, randomBytes(32).toString('hex'), b.bytes);
    await new Promise((r) => setTimeout(r, 100));
    parts = (await readdir(join(dir, 'tmp'))).filter((n) => n.endsWith('.part'));
    assert.ok(parts.length > 0);
    await store.abort();
    assert.deepEqual(await readdir(join(dir, 'tmp')), []);
    assert.deepEqual(await collectNames(backend, 'packs'), []);
  }
});

async function collectNames(b: Backend, type: ObjectType): Promise<string[]> {
  const out: string[] = [];
  for await (const n of b.list(type)) out.push(n);
  return out;
}
