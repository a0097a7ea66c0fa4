import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Backend } from '../../src/backend/Backend.js';
import { InvalidObjectNameError, ObjectNotFoundError } from '../../src/backend/errors.js';
import { createHash, randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { fcSeed } from '../helpers/tools.js';

/** A fresh, empty backend per test. */
export type BackendFactory = (t: import('node:test').TestContext) => Promise<Backend>;

const hex = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

async function collect(it: AsyncIterable<string>): Promise<string[]> {
  const out: string[] = [];
  for await (const x of it) out.push(x);
  return out.sort();
}

/** The Backend contract (src/backend/Backend.ts), run against one implementation. */
export function backendContract(label: string, make: BackendFactory): void {
  test(`${label}: put/get/has/stat round-trip, empty and large objects`, async (t) => {
    const b = await make(t);
    const small = randomBytes(100);
    const big = randomBytes(1 << 20);
    assert.equal(await b.has('chunks', hex(small)), false);
    assert.equal(await b.put('chunks', hex(small), small), true);
    assert.equal(await b.put('index', hex(big), big), true);
    assert.equal(await b.put('snapshots', 'empty-object', new Uint8Array(0)), true);
    assert.deepEqual(await b.get('chunks', hex(small)), small);
    assert.deepEqual(await b.get('index', hex(big)), big);
    assert.equal((await b.get('snapshots', 'empty-object')).length, 0);
    assert.equal(await b.has('chunks', hex(small)), true);
    assert.equal(await b.has('index', hex(small)), false, 'types are separate namespaces');
    const st = await b.stat('index', hex(big));
    assert.equal(st.size, big.length);
    assert.equal(st.name, hex(big));
    assert.ok(Math.abs(st.mtimeMs - Date.now()) < 60_000, 'mtime is the time of the put');
  });

  test(`${label}: getRange reads a slice of a pack; missing object is ObjectNotFoundError`, async (t) => {
    const b = await make(t);
    const data = randomBytes(3 << 20);
    assert.equal(await b.put('packs', hex(data), data), true);
    assert.ok(b.getRange, 'implements getRange (packs are read a blob at a time)');
    assert.deepEqual(await b.getRange!('packs', hex(data), 0, 10), data.subarray(0, 10));
    assert.deepEqual(await b.getRange!('packs', hex(data), 2_000_001, 1_000_000), data.subarray(2_000_001, 3_000_001));
    assert.deepEqual(await b.getRange!('packs', hex(data), data.length - 5, 100), data.subarray(data.length - 5), 'short at the end of the object');
    assert.equal((await b.getRange!('packs', hex(data), 7, 0)).length, 0);
    // Into the caller's (shared) memory: the result is a view of it, bytes beyond the read untouched.
    const into = Buffer.from(new SharedArrayBuffer(2_000_000)).fill(0xee);
    const got = await b.getRange!('packs', hex(data), 1_000_003, 1_500_000, into);
    assert.equal(got.buffer, into.buffer, 'read into the given memory');
    assert.deepEqual(got, data.subarray(1_000_003, 2_500_003));
    assert.equal(into[1_500_000], 0xee);
    const tail = await b.getRange!('packs', hex(data), data.length - 7, 100, into);
    assert.deepEqual(tail, data.subarray(data.length - 7), 'short at the end, into the given memory');
    await assert.rejects(b.getRange!('packs', hex(data), 0, 100, Buffer.alloc(10)), RangeError, 'a target too small is refused');
    await assert.rejects(b.getRange!('packs', 'aa00', 0, 1), (e) => e instanceof ObjectNotFoundError && /packs\/aa00/.test(e.message));
    await assert.rejects(b.getRange!('packs', '../x', 0, 1), InvalidObjectNameError);
    const names = [];
    for await (const n of b.list('packs')) names.push(n);
    assert.deepEqual(names, [hex(data)]);
  });

  test(`${label}: put never overwrites an existing object`, async (t) => {
    const b = await make(t);
    assert.equal(await b.put('snapshots', 'abc123', Buffer.from('first')), true);
    assert.equal(await b.put('snapshots', 'abc123', Buffer.from('second, different')), false);
    assert.equal((await b.get('snapshots', 'abc123')).toString(), 'first');
  });

  test(`${label}: concurrent puts of one name: exactly one wins, whole`, async (t) => {
    const b = await make(t);
    const versions = Array.from({ length: 8 }, (_, i) => Buffer.alloc(64 * 1024, i + 1));
    const results = await Promise.all(versions.map((v) => b.put('chunks', 'ffeedd', v)));
    assert.equal(results.filter((r) => r).length, 1);
    const got = await b.get('chunks', 'ffeedd');
    assert.ok(versions.some((v) => v.equals(got)), 'the object is one whole version');
  });

  test(`${label}: list yields each name of a type once`, async (t) => {
    const b = await make(t);
    const names = Array.from({ length: 40 }, () => randomBytes(32).toString('hex'));
    await Promise.all(names.map((n) => b.put('chunks', n, Buffer.from(n))));
    await b.put('locks', 'lock01', Buffer.from('x'));
    assert.deepEqual(await collect(b.list('chunks')), [...names].sort());
    assert.deepEqual(await collect(b.list('locks')), ['lock01']);
    assert.deepEqual(await collect(b.list('snapshots')), []);
  });

  test(`${label}: missing objects: get/stat throw ObjectNotFoundError, remove is idempotent`, async (t) => {
    const b = await make(t);
    await assert.rejects(b.get('chunks', 'aa00'), (e) => e instanceof ObjectNotFoundError && e.code === 'E_NOT_FOUND' && /chunks\/aa00/.test(e.message));
    await assert.rejects(b.stat('keys', 'nokey'), ObjectNotFoundError);
    await b.remove('chunks', 'aa00');
    await b.put('chunks', 'aa00', Buffer.from('x'));
    await b.remove('chunks', 'aa00');
    assert.equal(await b.has('chunks', 'aa00'), false);
    assert.deepEqual(await collect(b.list('chunks')), []);
    assert.equal(await b.put('chunks', 'aa00', Buffer.from('again')), true, 'a removed name can be stored again');
  });

  test(`${label}: names are never paths`, async (t) => {
    const b = await make(t);
    for (const bad of ['../escape', 'a/b', '', 'x', '.hidden', 'a\\b', 'a\0b']) {
      await assert.rejects(b.put('chunks', bad, Buffer.from('x')), InvalidObjectNameError, bad);
      await assert.rejects(b.get('snapshots', bad), InvalidObjectNameError, bad);
    }
    await assert.rejects(b.put('nope' as never, 'abcd', Buffer.from('x')), InvalidObjectNameError);
  });

  test(`${label}: openWriter streams pieces; nothing is visible before commit; commit never overwrites`, async (t) => {
    const b = await make(t);
    if (!b.openWriter) return t.skip('no openWriter: callers put whole objects');
    await fc.assert(
      fc.asyncProperty(fc.array(fc.integer({ min: 0, max: 300_000 }), { maxLength: 12 }), async (sizes) => {
        const pieces = sizes.map((n) => randomBytes(n));
        const whole = Buffer.concat(pieces);
        const name = hex(Buffer.concat([whole, randomBytes(8)])); // fresh per run
        const w = b.openWriter!('packs');
        for (const p of pieces) void w.write(p); // callers need not await each piece
        assert.equal(await b.has('packs', name), false, 'invisible while being written');
        assert.equal(await w.commit(name), true);
        assert.deepEqual(await b.get('packs', name), whole);
        // A second object under the same name keeps the first.
        const again = b.openWriter!('packs');
        await again.write(randomBytes(10));
        assert.equal(await again.commit(name), false);
        assert.deepEqual(await b.get('packs', name), whole);
        await assert.rejects(w.write(Buffer.from('late')), /after commit/);
      }),
      { seed: fcSeed(), numRuns: 15 },
    );
  });

  test(`${label}: openWriter: abort and a rejected "after" publish nothing; a bad name is refused at commit`, async (t) => {
    const b = await make(t);
    if (!b.openWriter) return t.skip('no openWriter: callers put whole objects');
    const aborted = b.openWriter('packs');
    await aborted.write(randomBytes(1000));
    await aborted.abort();
    await aborted.abort(); // idempotent
    await assert.rejects(aborted.commit('aa11'), /after commit or abort/);
    assert.equal(await b.has('packs', 'aa11'), false);

    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const gated = b.openWriter('packindex');
    await gated.write(Buffer.from('index'));
    const done = gated.commit('bb22', gate);
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(await b.has('packindex', 'bb22'), false, 'published only after the awaited promise');
    release();
    assert.equal(await done, true);
    assert.deepEqual(await b.get('packindex', 'bb22'), Buffer.from('index'));

    const boom = new Error('the pack before it failed');
    const failed = b.openWriter('packindex');
    await failed.write(Buffer.from('x'));
    await assert.rejects(failed.commit('cc33', Promise.reject(boom)), (e) => e === boom);
    assert.equal(await b.has('packindex', 'cc33'), false);

    const bad = b.openWriter('packs');
    await bad.write(Buffer.from('x'));
    await assert.rejects(bad.commit('../escape'), InvalidObjectNameError);
    const empty = b.openWriter('packs');
    assert.equal(await empty.commit('dd44'), true, 'an empty object');
    assert.equal((await b.get('packs', 'dd44')).length, 0);
    assert.deepEqual(await collect(b.list('packs')), ['dd44']);
  });
}
