import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { test } from 'node:test';
import fc from 'fast-check';
import { ObjectKind, ZERO_DIGEST } from '../../src/repo/constants.js';
import { CorruptObjectError } from '../../src/repo/errors.js';
import { decodeIndexPage, decodeIndexPageBytes, encodeIndexPage, encodeIndexPageBytes } from '../../src/repo/IndexPage.js';
import { decodeObject, encodeObject, objectDigest, type RepoKeys } from '../../src/repo/ObjectCodec.js';
import { zstd } from '../../src/repo/zstd.js';
import { fcSeed } from '../helpers/tools.js';

const keys: RepoKeys = { encKey: randomBytes(32), idKey: randomBytes(32) };
const ref = (name: string) => ({ location: 'mem:', type: 'chunks', name });

test('zstd-napi loads on this Node and compresses', () => {
  assert.ok(zstd, 'zstd-napi should load (see docs/design.md (repo section) for the fallback)');
  const text = Buffer.from('tidemark '.repeat(4000));
  const enc = encodeObject(ObjectKind.chunk, text, { zstdLevel: 3 });
  assert.ok(enc.length < text.length / 10, `compressed to ${enc.length}`);
  assert.equal(enc[6] & 1, 1, 'compressed flag set');
});

test('object codec round-trips plain, compressed, encrypted and both (property)', () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 5000 }), fc.boolean(), fc.boolean(), fc.boolean(), (data, compress, encrypt, repetitive) => {
      const plain = repetitive ? Buffer.alloc(data.length, data[0] ?? 7) : Buffer.from(data);
      const k = encrypt ? keys : null;
      const enc = encodeObject(ObjectKind.chunk, plain, { keys: k, zstdLevel: compress ? 3 : 0 });
      const name = objectDigest(plain, k);
      assert.deepEqual(decodeObject(ref(name), ObjectKind.chunk, enc, k), plain);
    }),
    { seed: fcSeed(), numRuns: 200 },
  );
});

test('digests: SHA-256 of plaintext, keyed HMAC when encrypted (names do not reveal content)', () => {
  const data = Buffer.from('hello');
  assert.equal(objectDigest(data), createHash('sha256').update(data).digest('hex'));
  assert.notEqual(objectDigest(data, keys), objectDigest(data));
  assert.equal(objectDigest(data, keys), objectDigest(data, { encKey: randomBytes(32), idKey: keys.idKey }), 'only the id key matters');
});

test('encryption: random nonce per object, no plaintext in the stored bytes', () => {
  const plain = Buffer.from('SECRET-PAYLOAD-'.repeat(20));
  const a = encodeObject(ObjectKind.chunk, plain, { keys });
  const b = encodeObject(ObjectKind.chunk, plain, { keys });
  assert.notDeepEqual(a, b);
  assert.equal(a.includes(Buffer.from('SECRET')), false);
});

test('every single flipped byte of a stored object is detected (naming the object) or harmless, never garbage', () => {
  for (const k of [null, keys]) {
    const plain = Buffer.from(randomBytes(300).toString('hex').repeat(3)); // compressible
    const enc = encodeObject(ObjectKind.chunk, plain, { keys: k, zstdLevel: 3 });
    const name = objectDigest(plain, k);
    let detected = 0;
    for (let i = 0; i < enc.length; i++) {
      const bad = Buffer.from(enc);
      bad[i] ^= 0x40;
      let out: Buffer | null = null;
      try {
        out = decodeObject(ref(name), ObjectKind.chunk, bad, k);
      } catch (e) {
        assert.ok(e instanceof CorruptObjectError && e.type === 'chunks' && e.objectName === name && e.code === 'E_CORRUPT', `byte ${i}: ${String(e)}`);
        detected++;
      }
      // A flip zstd ignores (a spare bit of its frame) still decodes to the exact plaintext: the digest proves it.
      if (out) assert.deepEqual(out, plain, `byte ${i} decoded to different content`);
    }
    if (k) assert.equal(detected, enc.length, 'AES-GCM authenticates every byte');
    else assert.ok(detected >= enc.length - 4, `${detected}/${enc.length} detected`);
    assert.throws(() => decodeObject(ref(name), ObjectKind.chunk, enc.subarray(0, enc.length - 1), k), CorruptObjectError, 'truncated');
    assert.throws(() => decodeObject(ref(name), ObjectKind.indexPage, enc, k), /kind 1, expected 2/, 'kind binds type');
    assert.throws(() => decodeObject(ref('ab'.repeat(32)), ObjectKind.chunk, enc, k), /does not match its name/, 'wrong name');
  }
});

test('index page codec: round trip, trailing zeros trimmed, validation', () => {
  const d = () => randomBytes(32).toString('hex');
  const entries = [d(), ZERO_DIGEST, d(), ZERO_DIGEST, ZERO_DIGEST];
  const buf = encodeIndexPage({ level: 2, entries });
  assert.equal(buf.length, 16 + 3 * 32);
  assert.deepEqual(decodeIndexPage(buf, 2, 8), { level: 2, entries: entries.slice(0, 3) });
  assert.match(String(decodeIndexPage(buf, 1, 8)), /level 2, expected 1/);
  assert.match(String(decodeIndexPage(buf, 2, 2)), /more than the fanout/);
  assert.match(String(decodeIndexPage(buf.subarray(0, 40), 2, 8)), /bytes/);
  const bad = Buffer.from(buf);
  bad[0] ^= 1;
  assert.match(String(decodeIndexPage(bad, 2, 8)), /magic/);
  assert.equal(encodeIndexPage({ level: 0, entries: [ZERO_DIGEST, ZERO_DIGEST] }).length, 16);
});

test('index page codec, bytes form (used by the writer): same encoding as the hex form, zero-padded decode, same validation (property)', () => {
  fc.assert(
    fc.property(fc.array(fc.oneof(fc.constant(ZERO_DIGEST), fc.uint8Array({ minLength: 32, maxLength: 32 }).map((b) => Buffer.from(b).toString('hex'))), { maxLength: 16 }), fc.integer({ min: 0, max: 3 }), (entries, level) => {
      const fanout = 16;
      const bytes = Buffer.alloc(fanout * 32);
      entries.forEach((e, i) => bytes.write(e, i * 32, 'hex'));
      const enc = encodeIndexPageBytes(level, bytes);
      assert.deepEqual(enc, encodeIndexPage({ level, entries }));
      assert.deepEqual(decodeIndexPageBytes(enc, level, fanout), bytes);
      assert.equal(decodeIndexPageBytes(enc, level + 1, fanout), decodeIndexPage(enc, level + 1, fanout));
      const cut = enc.subarray(0, Math.max(0, enc.length - 5));
      assert.equal(decodeIndexPageBytes(cut, level, fanout), decodeIndexPage(cut, level, fanout));
    }),
    { seed: fcSeed(), numRuns: 100 },
  );
});

test('compression: compressible chunks shrink, incompressible ones are stored (probed by their first 4 KiB), both round-trip', () => {
  const keysets: Array<RepoKeys | null> = [null, { encKey: randomBytes(32), idKey: randomBytes(32) }];
  const text = Buffer.from('the quick brown fox jumps over the lazy dog 0123456789\n'.repeat(700)).subarray(0, 32768);
  const random = randomBytes(32768);
  const randomHead = Buffer.concat([randomBytes(4096), Buffer.alloc(28672, 'a')]); // probe says no
  const textHead = Buffer.concat([Buffer.alloc(4096, 'b'), randomBytes(28672)]); // probe says yes: the whole is tried
  for (const keys of keysets) {
    const flags = (plain: Buffer): number => encodeObject(ObjectKind.chunk, plain, { keys, zstdLevel: 3 })[6];
    assert.equal(flags(text) & 1, 1, 'text is compressed');
    assert.ok(encodeObject(ObjectKind.chunk, text, { keys, zstdLevel: 3 }).length < 2000, 'and small');
    assert.equal(flags(random) & 1, 0, 'random data is stored');
    assert.equal(flags(randomHead) & 1, 1, 'random at its head, text at its tail: the tail probe finds it compressible');
    const randomEnds = Buffer.concat([randomBytes(4096), Buffer.alloc(24576, 'a'), randomBytes(4096)]);
    assert.equal(flags(randomEnds) & 1, 0, 'random at both ends: stored without trying the middle (the probes decide)');
    assert.equal(flags(Buffer.alloc(8000, 'c')) & 1, 1, 'small objects are not probed');
    for (const plain of [text, random, randomHead, textHead, Buffer.alloc(100, 7), Buffer.alloc(0)]) {
      const bytes = encodeObject(ObjectKind.chunk, plain, { keys, zstdLevel: 3 });
      const name = objectDigest(plain, keys);
      assert.ok(decodeObject({ location: 't', type: 'chunks', name }, ObjectKind.chunk, bytes, keys).equals(plain));
      if (!keys) assert.ok(bytes.length <= plain.length + 16, 'never larger than stored');
    }
  }
});
