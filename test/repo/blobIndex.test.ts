/**
 * BlobIndex (the compact (kind, digest) -> location table of PackStore) against a model: the Map of
 * objects it replaced. Also the bulk insert straight from pack index plaintexts (scanPackIndex) against
 * the former decoder on valid, truncated and damaged inputs, and PackStore's load through it.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import fc from 'fast-check';
import { MemoryBackend } from '../../src/backend/MemoryBackend.js';
import { BlobIndex, type BlobLocation } from '../../src/repo/BlobIndex.js';
import { ObjectKind, PACK_INDEX_ENTRY_SIZE, PACK_INDEX_HEADER_SIZE, PACK_INDEX_MAGIC, PACK_INDEX_PACK_SIZE, PACK_INDEX_VERSION } from '../../src/repo/constants.js';
import { CorruptObjectError } from '../../src/repo/errors.js';
import { encodeObject, objectDigest } from '../../src/repo/ObjectCodec.js';
import { decodePackIndex, encodePackIndex, scanPackIndex, type BlobKind, type PackEntry, type PackIndexPack } from '../../src/repo/PackFormat.js';
import { PackStore } from '../../src/repo/PackStore.js';
import { fcSeed } from '../helpers/tools.js';

/** The model: PackStore's former maps, built the way its former addPack built them. */
class MapModel {
  blobs = new Map<string, BlobLocation>();
  packs = new Map<string, BlobLocation[]>();
  addPack(p: PackIndexPack): void {
    const list = this.packs.get(p.id) ?? [];
    for (const e of p.entries) {
      const loc: BlobLocation = { kind: e.kind, digest: e.digest, offset: e.offset, length: e.length, pack: p.id };
      list.push(loc);
      if (!this.blobs.has(`${e.kind}${e.digest}`)) this.blobs.set(`${e.kind}${e.digest}`, loc);
    }
    this.packs.set(p.id, list);
  }
}

/** The pack index decoder as it was before scanPackIndex (the oracle for verdicts). */
function formerDecodePackIndex(plain: Uint8Array): PackIndexPack[] | string {
  const buf = Buffer.from(plain.buffer, plain.byteOffset, plain.byteLength);
  if (buf.length < PACK_INDEX_HEADER_SIZE || buf.readUInt32LE(0) !== PACK_INDEX_MAGIC) return 'pack index magic is not "TMPI"';
  if (buf[4] !== PACK_INDEX_VERSION) return `pack index version ${buf[4]} is not supported`;
  const packCount = buf.readUInt32LE(8);
  const out: PackIndexPack[] = [];
  let o = PACK_INDEX_HEADER_SIZE;
  for (let i = 0; i < packCount; i++) {
    if (o + PACK_INDEX_PACK_SIZE > buf.length) return `pack index truncated in pack ${i}`;
    const id = buf.subarray(o, o + 32).toString('hex');
    const count = buf.readUInt32LE(o + 32);
    o += PACK_INDEX_PACK_SIZE;
    if (o + count * PACK_INDEX_ENTRY_SIZE > buf.length) return `pack index truncated in the entries of pack ${id}`;
    const entries: PackEntry[] = [];
    for (let j = 0; j < count; j++, o += PACK_INDEX_ENTRY_SIZE) {
      const kind = buf[o + 32];
      if (kind !== ObjectKind.chunk && kind !== ObjectKind.indexPage) return `pack index entry ${j} of pack ${id} has kind ${kind}`;
      entries.push({ digest: buf.subarray(o, o + 32).toString('hex'), kind, offset: buf.readUInt32LE(o + 36), length: buf.readUInt32LE(o + 40) });
    }
    out.push({ id, entries });
  }
  if (o !== buf.length) return `pack index has ${buf.length - o} trailing bytes`;
  return out;
}

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
const KINDS: BlobKind[] = [ObjectKind.chunk, ObjectKind.indexPage];

/** Everything observable of an index equals the model, for every digest of `pool` (present or not). */
function assertSameAsModel(ix: BlobIndex, model: MapModel, pool: string[]): void {
  for (const d of pool) {
    for (const kind of KINDS) {
      assert.deepEqual(ix.locate(kind, d), model.blobs.get(`${kind}${d}`), `locate ${kind} ${d}`);
      assert.equal(ix.has(kind, d), model.blobs.has(`${kind}${d}`));
      assert.deepEqual(ix.locateDigest(kind, Buffer.from(d, 'hex')), model.blobs.get(`${kind}${d}`));
    }
  }
  assert.equal(ix.size, model.blobs.size);
  assert.equal(ix.packCount, model.packs.size);
  assert.deepEqual([...ix.packIds()], [...model.packs.keys()], 'packs in the order first added');
  const lists = ix.packLists();
  assert.equal(lists.size, model.packs.size);
  assert.deepEqual(new Map(lists), model.packs, 'per-pack lists: every entry, duplicates included, in order');
  for (const id of model.packs.keys()) assert.equal(lists.get(id), lists.get(id), 'the same list until the table changes');
}

/**
 * A digest pool: random ones, plus structured ones that differ in one byte only (their slots collide
 * unless the hash mixes every word).
 */
const digestPool = fc
  .tuple(fc.array(fc.uint8Array({ minLength: 32, maxLength: 32 }), { minLength: 1, maxLength: 40 }), fc.array(fc.record({ at: fc.nat(31), v: fc.nat(255) }), { maxLength: 40 }))
  .map(([random, structured]) => [...new Set([...random.map(hex), ...structured.map(({ at, v }) => hex(Buffer.alloc(32).fill(v, at, at + 1)))])]);

test('BlobIndex = the former Map model: random packs with duplicates across and within packs, both kinds, growth from 16 entries', () => {
  fc.assert(
    fc.property(
      digestPool,
      fc.array(
        fc.record({
          pack: fc.nat(7),
          bulk: fc.boolean(),
          entries: fc.array(fc.record({ d: fc.nat(), kind: fc.constantFrom(...KINDS), offset: fc.nat({ max: 0xffffffff }), length: fc.nat({ max: 0xffffffff }) }), { maxLength: 150 }),
        }),
        { maxLength: 20 },
      ),
      fc.array(fc.uint8Array({ minLength: 32, maxLength: 32 }), { maxLength: 5 }),
      (pool, adds, absent) => {
        const packIds = Array.from({ length: 8 }, (_, i) => hex(Buffer.alloc(32, i + 1)));
        const ix = new BlobIndex(16);
        const model = new MapModel();
        for (const a of adds) {
          const p: PackIndexPack = { id: packIds[a.pack], entries: a.entries.map((e) => ({ kind: e.kind, digest: pool[e.d % pool.length], offset: e.offset, length: e.length })) };
          if (a.bulk) assert.equal(ix.addPackIndex(encodePackIndex([p])), null);
          else ix.addPack(p);
          model.addPack(p);
        }
        assertSameAsModel(ix, model, [...pool, ...absent.map(hex)]);
        // copyPack (PackStore keeps its own packs across a reload this way) = the former re-adding of
        // each pack's whole list, pack after pack.
        const copy = new BlobIndex();
        const copied = new MapModel();
        for (const id of ix.packIds()) copy.copyPack(ix, id);
        for (const [id, list] of model.packs) copied.addPack({ id, entries: list });
        assertSameAsModel(copy, copied, pool);
        ix.trim();
        assertSameAsModel(ix, model, pool);
      },
    ),
    { seed: fcSeed(), numRuns: 60 },
  );
});

test('BlobIndex: growth past many doublings keeps every blob; ~56-64 bytes per entry once trimmed', () => {
  const ix = new BlobIndex(16);
  const model = new MapModel();
  const pool: string[] = [];
  for (let p = 0; p < 40; p++) {
    const entries: PackEntry[] = [];
    for (let i = 0; i < 500; i++) {
      const d = randomBytes(32).toString('hex');
      pool.push(d);
      entries.push({ kind: i % 50 === 0 ? ObjectKind.indexPage : ObjectKind.chunk, digest: d, offset: i * 40000, length: 39000 + i });
    }
    if (p % 2 === 0) entries.push(...entries.slice(0, 10)); // duplicates within a pack
    const pack = { id: randomBytes(32).toString('hex'), entries };
    assert.equal(ix.addPackIndex(encodePackIndex([pack])), null);
    model.addPack(pack);
  }
  ix.trim();
  assertSameAsModel(ix, model, pool.filter((_, i) => i % 37 === 0).concat(Array.from({ length: 50 }, () => randomBytes(32).toString('hex'))));
  for (const d of pool) assert.ok(ix.has(ObjectKind.chunk, d) || ix.has(ObjectKind.indexPage, d));
  const perEntry = ix.byteSize / ix.entries;
  assert.ok(perEntry >= 48 && perEntry <= 72, `${perEntry.toFixed(1)} bytes per entry`);
});

test('BlobIndex: a digest that is not 64 lowercase hex digits is never found (as with the Map)', () => {
  const ix = new BlobIndex();
  const d = randomBytes(32).toString('hex');
  ix.addPack({ id: 'ab'.repeat(32), entries: [{ kind: ObjectKind.chunk, digest: d, offset: 1, length: 2 }] });
  assert.ok(ix.has(ObjectKind.chunk, d));
  assert.equal(ix.has(ObjectKind.indexPage, d), false, 'kinds are separate');
  for (const bad of [d.toUpperCase(), d.slice(0, 62), `${d}00`, `${d.slice(0, 63)}g`, `${d.slice(0, 63)}\u0130`, '']) {
    assert.equal(ix.has(ObjectKind.chunk, bad), false, bad);
    assert.equal(ix.locate(ObjectKind.chunk, bad), undefined, bad);
  }
  assert.equal(ix.locateDigest(ObjectKind.chunk, Buffer.alloc(31)), undefined);
  const other = randomBytes(32).toString('hex');
  assert.throws(() => ix.addPack({ id: 'cd'.repeat(32), entries: [{ kind: ObjectKind.chunk, digest: other, offset: 0, length: 1 }, { kind: ObjectKind.chunk, digest: 'xyz', offset: 0, length: 1 }] }), TypeError);
  assert.throws(() => ix.addPack({ id: 'cd'.repeat(32), entries: [{ kind: ObjectKind.manifest as BlobKind, digest: other, offset: 0, length: 1 }] }), TypeError);
  assert.equal(ix.has(ObjectKind.chunk, other), false, 'a rejected pack adds nothing');
  assert.equal(ix.hasPack('cd'.repeat(32)), false);
  assert.equal(ix.entries, 1);
});

test('scanPackIndex / BlobIndex.addPackIndex: the former decoder\'s verdict on valid, truncated and damaged plaintexts; a bad one adds nothing', () => {
  const packsArb = fc.array(
    fc.record({
      id: fc.uint8Array({ minLength: 32, maxLength: 32 }).map(hex),
      entries: fc.array(fc.record({ digest: fc.uint8Array({ minLength: 32, maxLength: 32 }).map(hex), kind: fc.constantFrom(...KINDS), offset: fc.nat({ max: 0xffffffff }), length: fc.nat({ max: 0xffffffff }) }), { maxLength: 8 }),
    }),
    { maxLength: 4 },
  );
  const damage = fc.oneof(
    fc.record({ op: fc.constant('cut' as const), at: fc.nat() }),
    fc.record({ op: fc.constant('set' as const), at: fc.nat(), v: fc.nat(255) }),
    fc.record({ op: fc.constant('append' as const), n: fc.integer({ min: 1, max: 50 }) }),
    fc.record({ op: fc.constant('count' as const), v: fc.nat({ max: 0xffffffff }) }),
    fc.constant({ op: 'none' as const }),
  );
  fc.assert(
    fc.property(packsArb, fc.array(damage, { maxLength: 3 }), (packs, damages) => {
      let plain = encodePackIndex(packs);
      for (const d of damages) {
        if (d.op === 'cut') plain = plain.subarray(0, d.at % (plain.length + 1));
        else if (d.op === 'set' && plain.length > 0) (plain = Buffer.from(plain))[d.at % plain.length] = d.v;
        else if (d.op === 'append') plain = Buffer.concat([plain, randomBytes(d.n)]);
        else if (d.op === 'count' && plain.length >= 12) (plain = Buffer.from(plain)).writeUInt32LE(d.v, 8);
      }
      // Unaligned, inside a larger buffer: the bulk path must not assume alignment.
      const host = Buffer.alloc(plain.length + 3);
      plain.copy(host, 3);
      plain = host.subarray(3);
      const expected = formerDecodePackIndex(plain);
      assert.deepEqual(decodePackIndex(plain), expected);
      const ix = new BlobIndex(16);
      const earlier: PackIndexPack = { id: 'ee'.repeat(32), entries: [{ kind: ObjectKind.chunk, digest: '11'.repeat(32), offset: 5, length: 6 }] };
      ix.addPack(earlier);
      const model = new MapModel();
      model.addPack(earlier);
      const verdict = ix.addPackIndex(plain);
      if (typeof expected === 'string') {
        assert.equal(verdict, expected);
        let visited = 0;
        assert.equal(scanPackIndex(plain, () => visited++), expected);
        assert.equal(visited, 0, 'a defective index visits nothing');
      } else {
        assert.equal(verdict, null);
        for (const p of expected) model.addPack(p);
      }
      const pool = ['11'.repeat(32), ...(typeof expected === 'string' ? packs : expected).flatMap((p) => p.entries.map((e) => e.digest))];
      assertSameAsModel(ix, model, pool);
    }),
    { seed: fcSeed(), numRuns: 300 },
  );
  // The defects named, one each.
  const plain = encodePackIndex([{ id: 'aa'.repeat(32), entries: [{ kind: ObjectKind.chunk, digest: 'bb'.repeat(32), offset: 0, length: 1 }] }]);
  const ix = new BlobIndex();
  assert.equal(ix.addPackIndex(plain.subarray(0, 10)), 'pack index magic is not "TMPI"');
  assert.equal(ix.addPackIndex(Buffer.concat([plain.subarray(0, 4), Buffer.from([9]), plain.subarray(5)])), 'pack index version 9 is not supported');
  assert.equal(ix.addPackIndex(plain.subarray(0, 40)), 'pack index truncated in pack 0');
  assert.equal(ix.addPackIndex(plain.subarray(0, plain.length - 1)), `pack index truncated in the entries of pack ${'aa'.repeat(32)}`);
  const badKind = Buffer.from(plain);
  badKind[16 + 40 + 32] = 7;
  assert.equal(ix.addPackIndex(badKind), `pack index entry 0 of pack ${'aa'.repeat(32)} has kind 7`);
  assert.equal(ix.addPackIndex(Buffer.concat([plain, Buffer.alloc(2)])), 'pack index has 2 trailing bytes');
  assert.equal(ix.entries, 0);
  assert.equal(ix.addPackIndex(plain), null);
  assert.deepEqual(ix.locate(ObjectKind.chunk, 'bb'.repeat(32)), { kind: ObjectKind.chunk, digest: 'bb'.repeat(32), offset: 0, length: 1, pack: 'aa'.repeat(32) });
});

test('PackStore.load through the compact index: first location wins across indexes, a pack named twice lists its entries twice, a damaged index is a problem and adds nothing', async () => {
  const backend = new MemoryBackend();
  const writer = new PackStore(backend, null);
  const d = Array.from({ length: 6 }, () => randomBytes(32).toString('hex'));
  const e = (i: number, kind: BlobKind = ObjectKind.chunk): PackEntry => ({ kind, digest: d[i], offset: i * 100, length: 90 + i });
  const p1: PackIndexPack = { id: '01'.repeat(32), entries: [e(0), e(1), e(2, ObjectKind.indexPage)] };
  const p2: PackIndexPack = { id: '02'.repeat(32), entries: [e(1), e(3), e(2)] };
  const p3: PackIndexPack = { id: '03'.repeat(32), entries: [] };
  await writer.putIndex([p1, p2]);
  await writer.putIndex([p3, p1]);
  // A damaged pack index (valid envelope, bad plaintext): its blob must not be found.
  const bad = Buffer.from(encodePackIndex([{ id: '04'.repeat(32), entries: [e(4)] }]));
  bad[bad.length - 12] = 3;
  const name = objectDigest(bad, null); // a sound envelope under its right name: only the plaintext is bad
  await backend.put('packindex', name, encodeObject(ObjectKind.packIndex, bad, { keys: null }));

  const store = new PackStore(backend, null);
  await store.ensureLoaded();
  const model = new MapModel();
  const names: string[] = [];
  for await (const n of backend.list('packindex')) names.push(n);
  for (const n of names) if (n !== name) for (const p of await store.readIndex(n)) model.addPack(p);
  assert.deepEqual(new Map(store.indexedPacks), model.packs);
  assert.equal(store.indexedPacks.get(p1.id)!.length, 6, 'pack 1 is named by two indexes: its entries twice');
  assert.deepEqual(store.indexedPacks.get(p3.id), [], 'a pack without entries is listed');
  for (const i of [0, 1, 2, 3, 4, 5]) {
    for (const kind of KINDS) {
      assert.deepEqual(store.locate(kind, d[i]), model.blobs.get(`${kind}${d[i]}`));
      assert.equal(store.has(kind, d[i]), model.blobs.has(`${kind}${d[i]}`));
    }
  }
  assert.equal(store.locate(ObjectKind.chunk, d[4]), undefined, 'nothing from the damaged index');
  assert.equal(store.indexProblems.length, 1);
  assert.equal(store.indexProblems[0].name, name);
  assert.ok(store.indexProblems[0].error instanceof CorruptObjectError);
  assert.match(store.indexProblems[0].error.message, /has kind 3/);
  assert.deepEqual([...store.indexObjects].sort(), names.filter((n) => n !== name).sort());

  // This process's packs survive a load that does not list them; reset() drops everything.
  const own = new PackStore(backend, null, 1);
  await own.ensureLoaded();
  assert.equal(await own.add(ObjectKind.chunk, d[5], Buffer.from('blob five')), true);
  await own.flush();
  const loc = own.locate(ObjectKind.chunk, d[5]);
  assert.ok(loc, 'a durable, indexed blob of this process is located');
  assert.deepEqual(own.indexedPacks.get(loc.pack), [loc]);
  own.reset();
  assert.equal(own.locate(ObjectKind.chunk, d[5]), undefined);
  await own.ensureLoaded();
  assert.deepEqual(own.locate(ObjectKind.chunk, d[5]), loc, 'reloaded from its pack index');
});
