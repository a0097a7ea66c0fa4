import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { RequestParser, type ParsedItem } from '../../src/nbd/RequestParser.js';
import { encodeRequestHeader } from '../../src/nbd/transmissionCodec.js';
import { CMD_FLUSH, CMD_READ, CMD_WRITE } from '../../src/nbd/protocol.js';
import { fcSeed } from '../helpers/tools.js';

function drain(p: RequestParser): ParsedItem[] {
  const out: ParsedItem[] = [];
  for (let it = p.next(); it; it = p.next()) out.push(it);
  return out;
}

test('requests with payloads come out intact for any chunking of the stream', () => {
  fc.assert(
    fc.property(
      fc.array(fc.record({ write: fc.boolean(), len: fc.integer({ min: 0, max: 3000 }), fill: fc.integer({ min: 0, max: 255 }) }), { minLength: 1, maxLength: 12 }),
      fc.array(fc.integer({ min: 1, max: 5000 }), { minLength: 1, maxLength: 30 }),
      (reqs, cuts) => {
        const parts: Buffer[] = [];
        reqs.forEach((r, i) => {
          parts.push(encodeRequestHeader(r.write ? CMD_WRITE : CMD_READ, 0, BigInt(i), i * 4096, r.len));
          if (r.write) parts.push(Buffer.alloc(r.len, r.fill));
        });
        const stream = Buffer.concat(parts);
        const p = new RequestParser();
        const got: ParsedItem[] = [];
        let pos = 0;
        let k = 0;
        while (pos < stream.length) {
          const n = cuts[k++ % cuts.length]!;
          p.push(stream.subarray(pos, pos + n));
          pos += n;
          got.push(...drain(p));
        }
        assert.equal(got.length, reqs.length);
        got.forEach((g, i) => {
          assert.equal(g.kind, 'request');
          if (g.kind !== 'request') return;
          const r = reqs[i]!;
          assert.equal(g.header.handle, BigInt(i));
          assert.equal(g.header.length, r.len);
          if (r.write) assert.ok(g.payload!.equals(Buffer.alloc(r.len, r.fill)));
          else assert.equal(g.payload, null);
        });
        assert.equal(p.buffered, 0);
      },
    ),
    { seed: fcSeed() },
  );
});

test('a payload within one chunk is a zero-copy view', () => {
  const chunk = Buffer.concat([encodeRequestHeader(CMD_WRITE, 0, 1n, 0, 4), Buffer.from('abcd')]);
  const p = new RequestParser();
  p.push(chunk);
  const it = p.next();
  assert.ok(it && it.kind === 'request');
  assert.equal(it.payload!.buffer, chunk.buffer);
});

test('oversized writes are skipped without buffering, then parsing resumes; huge ones are fatal', () => {
  const p = new RequestParser({ maxPayload: 100, maxSkip: 1000 });
  p.push(encodeRequestHeader(CMD_WRITE, 0, 7n, 0, 500));
  assert.equal(p.next(), null);
  p.push(Buffer.alloc(300));
  assert.equal(p.next(), null);
  assert.equal(p.buffered, 0, 'skipped bytes are not kept');
  p.push(Buffer.concat([Buffer.alloc(200), encodeRequestHeader(CMD_FLUSH, 0, 8n, 0, 0)]));
  const a = p.next();
  assert.ok(a && a.kind === 'skipped' && a.header.handle === 7n);
  const b = p.next();
  assert.ok(b && b.kind === 'request' && b.header.handle === 8n);
  p.push(encodeRequestHeader(CMD_WRITE, 0, 9n, 0, 5000));
  assert.equal(p.next()!.kind, 'fatal');
  p.push(Buffer.alloc(100));
  assert.equal(p.next(), null, 'a dead parser stays dead');
});

test('bad magic is fatal', () => {
  const p = new RequestParser();
  p.push(Buffer.alloc(28, 0x42));
  const it = p.next();
  assert.ok(it && it.kind === 'fatal' && /MAGIC/.test(it.reason));
});

test('payloads spanning chunks are assembled in buffers from `allocate`, which is reported back', () => {
  const given: Buffer[] = [];
  const p = new RequestParser({ allocate: (n) => (given.push(Buffer.alloc(n + 100, 0xff)), given.at(-1)!) });
  const payload = Buffer.alloc(5000, 0x3a);
  const stream = Buffer.concat([encodeRequestHeader(CMD_WRITE, 0, 1n, 0, 5000), payload]);
  p.push(stream.subarray(0, 1000));
  p.push(stream.subarray(1000));
  const it = p.next();
  assert.ok(it && it.kind === 'request');
  assert.equal(it.payload!.length, 5000);
  assert.ok(it.payload!.equals(payload));
  assert.equal(it.pooled, given[0]);
  assert.equal(it.payload!.buffer, given[0]!.buffer);
});

test('payload windows, detach and reuseChunks: reading straight into payloads and reusing chunk buffers parses the same', () => {
  fc.assert(
    fc.property(
      fc.array(fc.record({ write: fc.boolean(), len: fc.integer({ min: 0, max: 3000 }), fill: fc.integer({ min: 0, max: 255 }) }), { minLength: 1, maxLength: 12 }),
      fc.array(fc.integer({ min: 1, max: 700 }), { minLength: 1, maxLength: 30 }),
      (reqs, cuts) => {
        const parts: Buffer[] = [];
        reqs.forEach((r, i) => {
          parts.push(encodeRequestHeader(r.write ? CMD_WRITE : CMD_READ, 0, BigInt(i), i * 4096, r.len));
          if (r.write) parts.push(Buffer.alloc(r.len, r.fill));
        });
        const stream = Buffer.concat(parts);
        const p = new RequestParser();
        p.reuseChunks();
        const scratch = Buffer.alloc(700);
        const got: ParsedItem[] = [];
        let pos = 0;
        let k = 0;
        while (pos < stream.length) {
          const n = Math.min(cuts[k++ % cuts.length]!, stream.length - pos);
          // Like a socket read: into the payload window when one is offered, else into the reused scratch.
          const window = p.payloadWindow();
          if (window) {
            const m = Math.min(n, window.length);
            stream.copy(window, 0, pos, pos + m);
            p.filled(m);
            pos += m;
          } else {
            p.detach();
            scratch.fill(0xee); // whatever the parser still needed from the last chunk must have been copied out
            stream.copy(scratch, 0, pos, pos + n);
            p.push(scratch.subarray(0, n));
            pos += n;
          }
          got.push(...drain(p));
        }
        scratch.fill(0xdd);
        assert.equal(got.length, reqs.length);
        got.forEach((g, i) => {
          assert.ok(g.kind === 'request');
          const r = reqs[i]!;
          assert.equal(g.header.handle, BigInt(i));
          if (r.write) assert.ok(g.payload!.equals(Buffer.alloc(r.len, r.fill)), `payload ${i} is its own, never a view of the reused scratch`);
        });
        assert.equal(p.buffered, 0);
        assert.equal(p.payloadWindow(), null);
      },
    ),
    { seed: fcSeed() },
  );
});

test('filled() without a matching window is refused', () => {
  const p = new RequestParser();
  assert.throws(() => p.filled(1), RangeError);
  p.push(encodeRequestHeader(CMD_WRITE, 0, 1n, 0, 10));
  assert.equal(p.next(), null);
  assert.equal(p.payloadWindow()!.length, 10);
  assert.throws(() => p.filled(11), RangeError);
  p.filled(10);
  const it = p.next();
  assert.ok(it && it.kind === 'request' && it.payload!.length === 10);
});
