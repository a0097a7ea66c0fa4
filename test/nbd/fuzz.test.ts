/**
 * Hostile-client fuzzing over real sockets: random and mutated handshakes and requests (bounded count and
 * time). The server must survive every one, never hand the device an invalid request, never modify a
 * read-only export, and keep serving a well-behaved client afterwards.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as net from 'node:net';
import fc from 'fast-check';
import { NbdServer } from '../../src/nbd/NbdServer.js';
import { encodeInfoRequest, encodeMetaContextRequest, encodeOptionRequest } from '../../src/nbd/optionCodec.js';
import { encodeRequestHeader } from '../../src/nbd/transmissionCodec.js';
import * as P from '../../src/nbd/protocol.js';
import { RawClient } from './helpers/RawClient.js';
import { ProbeDevice } from './helpers/ProbeDevice.js';
import { fcSeed } from '../helpers/tools.js';

const MiB = 1024 * 1024;
const SIZE = 4 * MiB;

const u32 = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0, 0);
  return b;
};

/** A plausible session: client flags, some options, GO (or EXPORT_NAME), some requests. */
const session = fc
  .record({
    flags: fc.oneof({ arbitrary: fc.constantFrom(3, 1), weight: 6 }, { arbitrary: fc.constantFrom(0, 7, 0xffffffff), weight: 1 }),
    structured: fc.boolean(),
    meta: fc.option(fc.array(fc.constantFrom('base:allocation', 'base:', 'tidemark:changes:x', 'nope', 'x:y', ''), { maxLength: 3 })),
    extra: fc.array(fc.record({ opt: fc.integer({ min: 0, max: 12 }), data: fc.uint8Array({ maxLength: 40 }) }), { maxLength: 2 }),
    exportName: fc.oneof({ arbitrary: fc.constantFrom('rw', 'ro', ''), weight: 6 }, { arbitrary: fc.constant('missing'), weight: 1 }),
    useExportName: fc.boolean(),
    requests: fc.array(
      fc.record({
        type: fc.oneof({ arbitrary: fc.integer({ min: 0, max: 8 }), weight: 8 }, { arbitrary: fc.integer({ min: 0, max: 0xffff }), weight: 1 }),
        flags: fc.oneof({ arbitrary: fc.constantFrom(0, 1), weight: 6 }, { arbitrary: fc.integer({ min: 0, max: 0x3f }), weight: 2 }, { arbitrary: fc.integer({ min: 0, max: 0xffff }), weight: 1 }),
        offset: fc.oneof({ arbitrary: fc.integer({ min: 0, max: SIZE }), weight: 6 }, fc.constant(SIZE - 1), fc.maxSafeNat(), fc.constant(2 ** 63)),
        length: fc.oneof({ arbitrary: fc.integer({ min: 0, max: 65536 }), weight: 8 }, fc.constant(0xffffffff), fc.constant(P.MAX_PAYLOAD + 1)),
        payload: fc.oneof({ arbitrary: fc.constant(-1), weight: 8 }, { arbitrary: fc.integer({ min: 0, max: 70000 }), weight: 1 }),
      }),
      { maxLength: 6 },
    ),
  })
  .map((s) => {
    const parts: Buffer[] = [u32(s.flags)];
    if (s.structured) parts.push(encodeOptionRequest(P.OPT_STRUCTURED_REPLY));
    if (s.meta) parts.push(encodeOptionRequest(P.OPT_SET_META_CONTEXT, encodeMetaContextRequest(s.exportName, s.meta)));
    for (const e of s.extra) parts.push(encodeOptionRequest(e.opt, Buffer.from(e.data)));
    parts.push(s.useExportName ? encodeOptionRequest(P.OPT_EXPORT_NAME, Buffer.from(s.exportName)) : encodeOptionRequest(P.OPT_GO, encodeInfoRequest(s.exportName, [3])));
    s.requests.forEach((r, i) => {
      const off = Math.min(r.offset, 2 ** 63);
      const h = encodeRequestHeader(r.type, r.flags, BigInt(i), 0, r.length);
      h.writeBigUInt64BE(BigInt(Math.floor(off)) & ((1n << 64n) - 1n), 16);
      parts.push(h);
      // Sometimes send the payload a WRITE promises, sometimes less, sometimes more.
      const n = r.payload < 0 ? (r.type === P.CMD_WRITE ? Math.min(r.length, 70000) : 0) : r.payload;
      if (n > 0) parts.push(Buffer.alloc(n, 0xcd));
    });
    return Buffer.concat(parts);
  });

/** Mutations of a session: flip bytes, cut it short, splice in garbage. */
const mutated = fc
  .tuple(session, fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 4 }), fc.option(fc.nat()), fc.uint8Array({ maxLength: 64 }))
  .map(([bytes, flips, cut, junk]) => {
    const b = Buffer.from(bytes);
    for (const [pos, v] of flips) if (b.length) b[pos % b.length] = v;
    const end = cut === null ? b.length : cut % (b.length + 1);
    return Buffer.concat([b.subarray(0, end), Buffer.from(junk)]);
  });

const anyInput = fc.oneof(session, mutated, fc.uint8Array({ maxLength: 512 }).map((u) => Buffer.from(u)));

function play(port: number, bytes: Buffer, chunk: number): Promise<void> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.on('error', () => {});
    s.on('data', () => {});
    s.on('close', () => resolve());
    s.once('connect', () => {
      let pos = 0;
      const step = (): void => {
        if (s.destroyed) return;
        if (pos >= bytes.length) {
          setTimeout(() => s.destroy(), 30);
          return;
        }
        s.write(bytes.subarray(pos, pos + chunk));
        pos += chunk;
        setImmediate(step);
      };
      step();
    });
  });
}

test('fuzzed clients never crash the server, reach the device with bad requests, or touch a read-only export', async () => {
  const rw = new ProbeDevice(SIZE);
  const ro = new ProbeDevice(SIZE);
  await ro.inner.write(0, Buffer.alloc(SIZE, 0x5e));
  const srv = new NbdServer({
    exports: [
      { name: 'rw', device: rw, changes: { changesSince: async (id) => (id === 'x' ? [{ offset: 0, length: 4096 }] : Promise.reject(new Error('no'))) } },
      { name: 'ro', device: ro, readOnly: true },
    ],
    handshakeTimeoutMs: 2000,
    log: () => {},
  });
  const port = ((await srv.listen({ port: 0 })) as net.AddressInfo).port;
  const cases = fc.sample(fc.tuple(anyInput, fc.integer({ min: 1, max: 4096 })), { seed: fcSeed(), numRuns: 240 });
  const started = Date.now();
  for (let i = 0; i < cases.length && Date.now() - started < 20_000; i += 8) {
    await Promise.all(cases.slice(i, i + 8).map(([bytes, chunk]) => play(port, bytes, chunk)));
  }
  // Let in-flight device calls settle.
  await new Promise((r) => setTimeout(r, 200));
  for (const d of [rw, ro]) {
    for (const c of d.calls) {
      assert.ok(Number.isSafeInteger(c.offset) && c.offset >= 0 && c.offset + c.length <= SIZE, `device got an invalid range ${JSON.stringify(c)}`);
    }
  }
  assert.equal(ro.calls.filter((c) => c.op === 'write' || c.op === 'zero' || c.op === 'trim').length, 0);
  assert.ok((await ro.inner.read(0, SIZE)).equals(Buffer.alloc(SIZE, 0x5e)), 'read-only export unchanged');

  // The fuzz reached the device through every kind of valid request (the generator is not just noise).
  const ops = new Set(rw.calls.map((c) => c.op));
  for (const op of ['read', 'write', 'zero', 'trim', 'flush', 'extents']) assert.ok(ops.has(op), `no fuzzed ${op} reached the device`);

  // A well-behaved client still works.
  const c = await RawClient.open({ port }, { name: 'rw', contexts: ['base:allocation'] });
  const data = Buffer.alloc(65536, 0x21);
  assert.equal((await c.request(P.CMD_WRITE, { offset: MiB, data })).error, 0);
  assert.ok((await c.request(P.CMD_READ, { offset: MiB, length: 65536 })).data!.equals(data));
  assert.equal((await c.request(P.CMD_BLOCK_STATUS, { offset: 0, length: SIZE })).error, 0);
  c.close();
  await srv.close();
  assert.equal(srv.connectionCount, 0);
});
