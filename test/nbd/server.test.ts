import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import * as net from 'node:net';
import { join } from 'node:path';
import { stat } from 'node:fs/promises';
import { spawn } from 'node:child_process';
import { NbdServer, type ExportSpec } from '../../src/nbd/NbdServer.js';
import * as P from '../../src/nbd/protocol.js';
import { encodeRequestHeader } from '../../src/nbd/transmissionCodec.js';
import { encodeInfoRequest, encodeMetaContextRequest } from '../../src/nbd/optionCodec.js';
import type { ChangeSource } from '../../src/nbd/ChangeSource.js';
import { RawClient } from './helpers/RawClient.js';
import { ProbeDevice } from './helpers/ProbeDevice.js';
import { tempDir } from '../helpers/tools.js';

const MiB = 1024 * 1024;

async function serve(t: TestContext, exports: ExportSpec[], extra: Partial<ConstructorParameters<typeof NbdServer>[0]> = {}): Promise<{ srv: NbdServer; port: number; logs: string[] }> {
  const logs: string[] = [];
  const srv = new NbdServer({ exports, log: (l) => logs.push(l), ...extra });
  const a = (await srv.listen({ port: 0 })) as net.AddressInfo;
  t.after(() => srv.close());
  return { srv, port: a.port, logs };
}

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

test('requests run concurrently and replies come back out of order', async (t) => {
  const dev = new ProbeDevice(MiB);
  await dev.inner.write(0, Buffer.alloc(4096, 1));
  await dev.inner.write(4096, Buffer.alloc(4096, 2));
  const gate = deferred();
  dev.hold = (c) => (c.op === 'read' && c.offset === 0 ? gate.promise : undefined);
  const { port } = await serve(t, [{ name: 'd', device: dev }]);
  const c = await RawClient.open({ port }, { name: 'd', structured: false });
  t.after(() => c.close());
  const order: number[] = [];
  const slow = c.request(P.CMD_READ, { offset: 0, length: 4096 }).then((r) => (order.push(0), r));
  const fast = c.request(P.CMD_READ, { offset: 4096, length: 4096 }).then((r) => (order.push(1), r));
  const f = await fast;
  assert.deepEqual(order, [1], 'the second request was answered while the first was still running');
  gate.resolve();
  const s = await slow;
  assert.deepEqual(order, [1, 0]);
  assert.ok(s.data!.equals(Buffer.alloc(4096, 1)));
  assert.ok(f.data!.equals(Buffer.alloc(4096, 2)));
});

test('structured READ sends holes as OFFSET_HOLE chunks; DF forces one data chunk; simple READ works', async (t) => {
  const dev = new ProbeDevice(4 * MiB);
  await dev.inner.write(128 * 1024, Buffer.alloc(64 * 1024, 0x5a));
  const { port } = await serve(t, [{ name: 'd', device: dev }]);
  const c = await RawClient.open({ port }, { name: 'd' });
  t.after(() => c.close());
  assert.ok(c.flags & P.TFLAG_SEND_DF);
  const expect = Buffer.alloc(512 * 1024);
  expect.fill(0x5a, 128 * 1024, 192 * 1024);
  const r = await c.request(P.CMD_READ, { offset: 0, length: 512 * 1024 });
  assert.equal(r.error, 0);
  assert.ok(r.data!.equals(expect));
  assert.equal(r.chunks, 3, 'hole, data, hole');
  const df = await c.request(P.CMD_READ, { offset: 0, length: 512 * 1024, flags: P.CMD_FLAG_DF });
  assert.equal(df.chunks, 1);
  assert.ok(df.data!.equals(expect));
  const s = await RawClient.open({ port }, { name: 'd', structured: false });
  t.after(() => s.close());
  assert.equal(s.flags & P.TFLAG_SEND_DF, 0);
  const sr = await s.request(P.CMD_READ, { offset: 64 * 1024, length: 128 * 1024 });
  assert.ok(sr.data!.equals(expect.subarray(64 * 1024, 192 * 1024)));
});

test('client mistakes get the spec errors and the connection keeps working', async (t) => {
  const dev = new ProbeDevice(MiB);
  const ro = new ProbeDevice(MiB);
  const { port } = await serve(t, [
    { name: 'rw', device: dev },
    { name: 'ro', device: ro, readOnly: true },
  ]);
  for (const structured of [true, false]) {
    const c = await RawClient.open({ port }, { name: 'rw', structured });
    t.after(() => c.close());
    assert.equal((await c.request(P.CMD_READ, { offset: MiB - 512, length: 1024 })).error, P.NBD_EINVAL);
    assert.equal((await c.request(P.CMD_WRITE, { offset: MiB - 512, data: Buffer.alloc(1024) })).error, P.NBD_ENOSPC);
    assert.equal((await c.request(P.CMD_TRIM, { offset: MiB, length: 512 })).error, P.NBD_EINVAL);
    assert.equal((await c.request(P.CMD_WRITE_ZEROES, { offset: 2 ** 52, length: 512 })).error, P.NBD_ENOSPC);
    assert.equal((await c.request(99, { offset: 0, length: 0 })).error, P.NBD_EINVAL);
    assert.equal((await c.request(P.CMD_CACHE, { offset: 0, length: 512 })).error, P.NBD_EINVAL);
    assert.equal((await c.request(P.CMD_FLUSH, { flags: P.CMD_FLAG_REQ_ONE })).error, P.NBD_EINVAL);
    assert.equal((await c.request(P.CMD_BLOCK_STATUS, { offset: 0, length: 512 })).error, P.NBD_EINVAL);
    assert.equal((await c.request(P.CMD_READ, { offset: 0, length: P.MAX_PAYLOAD + 1 })).error, structured ? P.NBD_EOVERFLOW : P.NBD_EINVAL);
    const w = await c.request(P.CMD_WRITE, { offset: 512, data: Buffer.alloc(512, 9) });
    assert.equal(w.error, 0);
    assert.ok((await c.request(P.CMD_READ, { offset: 512, length: 512 })).data!.equals(Buffer.alloc(512, 9)));
  }
  assert.equal(dev.calls.filter((x) => x.op !== 'read' && x.op !== 'extents').length, 2, 'rejected requests never reached the device');
  const r = await RawClient.open({ port }, { name: 'ro' });
  t.after(() => r.close());
  assert.ok(r.flags & P.TFLAG_READ_ONLY);
  assert.equal(r.flags & P.TFLAG_SEND_TRIM, 0);
  assert.equal((await r.request(P.CMD_WRITE, { offset: 0, data: Buffer.alloc(512, 1) })).error, P.NBD_EPERM);
  assert.equal((await r.request(P.CMD_TRIM, { offset: 0, length: 512 })).error, P.NBD_EPERM);
  assert.equal((await r.request(P.CMD_WRITE_ZEROES, { offset: 0, length: 512 })).error, P.NBD_EPERM);
  assert.equal((await r.request(P.CMD_FLUSH)).error, 0);
  assert.equal(ro.calls.filter((x) => x.op === 'write' || x.op === 'zero' || x.op === 'trim').length, 0);
});

test('an oversized WRITE is skipped and refused; an unskippable one disconnects only that client', async (t) => {
  const dev = new ProbeDevice(64 * MiB);
  const { port, logs } = await serve(t, [{ name: 'd', device: dev }]);
  const c = await RawClient.open({ port }, { name: 'd' });
  t.after(() => c.close());
  const big = await c.request(P.CMD_WRITE, { offset: 0, data: Buffer.alloc(P.MAX_PAYLOAD + 4096, 1) });
  assert.equal(big.error, P.NBD_EINVAL);
  assert.equal((await c.request(P.CMD_WRITE, { offset: 0, data: Buffer.alloc(512, 2) })).error, 0);
  assert.equal(dev.calls.filter((x) => x.op === 'write').length, 1);
  const h = await RawClient.open({ port }, { name: 'd' });
  h.write(encodeRequestHeader(P.CMD_WRITE, 0, 1n, 0, 0xffffffff));
  await h.waitClosed();
  assert.ok(logs.some((l) => /too large to skip/.test(l)));
  assert.equal((await c.request(P.CMD_READ, { offset: 0, length: 512 })).error, 0, 'other clients are unaffected');
});

test('garbage magic disconnects; a client vanishing mid-request corrupts nothing and others carry on', async (t) => {
  const dev = new ProbeDevice(MiB);
  const { port } = await serve(t, [{ name: 'd', device: dev }]);
  const g = await RawClient.open({ port }, { name: 'd' });
  g.write(Buffer.alloc(28, 0xee));
  await g.waitClosed();
  // Half a WRITE payload, then gone.
  const h = await RawClient.open({ port }, { name: 'd' });
  h.write(encodeRequestHeader(P.CMD_WRITE, 0, 1n, 0, 8192));
  h.write(Buffer.alloc(4096, 7));
  await new Promise((r) => setTimeout(r, 50));
  h.close();
  // A slow read in flight when the client goes.
  const gate = deferred();
  dev.hold = (c) => (c.op === 'read' ? gate.promise : undefined);
  const s = await RawClient.open({ port }, { name: 'd', structured: false });
  void s.request(P.CMD_READ, { offset: 0, length: 4096 });
  await new Promise((r) => setTimeout(r, 50));
  s.close();
  gate.resolve();
  dev.hold = undefined;
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(dev.calls.filter((x) => x.op === 'write').length, 0, 'a partial payload is never written');
  const c = await RawClient.open({ port }, { name: 'd' });
  t.after(() => c.close());
  assert.ok((await c.request(P.CMD_READ, { offset: 0, length: 8192 })).data!.equals(Buffer.alloc(8192)));
});

test('multi-conn: a FLUSH on one connection makes writes completed on another durable; FUA is durable at once', async (t) => {
  const dev = new ProbeDevice(MiB);
  const { port } = await serve(t, [{ name: 'd', device: dev }]);
  const a = await RawClient.open({ port }, { name: 'd' });
  const b = await RawClient.open({ port }, { name: 'd' });
  t.after(() => (a.close(), b.close()));
  assert.ok(a.flags & P.TFLAG_CAN_MULTI_CONN);
  assert.equal((await a.request(P.CMD_WRITE, { offset: 4096, data: Buffer.alloc(4096, 3) })).error, 0);
  assert.ok(dev.volatile.has(4096));
  assert.equal((await b.request(P.CMD_FLUSH)).error, 0);
  assert.ok(dev.durable.has(4096), 'durable after a flush on the other connection');
  await a.request(P.CMD_WRITE, { offset: 8192, data: Buffer.alloc(512, 1), flags: P.CMD_FLAG_FUA });
  assert.ok(dev.durable.has(8192));
  assert.equal(dev.calls.find((c) => c.offset === 8192)!.opts!.fua, true);
  // Reads through b see a's write (shared device, no per-connection cache).
  assert.ok((await b.request(P.CMD_READ, { offset: 4096, length: 4096 })).data!.equals(Buffer.alloc(4096, 3)));
});

test('WRITE_ZEROES flags reach the device; FAST_ZERO on a device that cannot is ENOTSUP and changes nothing', async (t) => {
  const dev = new ProbeDevice(MiB);
  const slow = new ProbeDevice(MiB, { fastZero: false });
  await slow.inner.write(0, Buffer.alloc(4096, 1));
  const { port } = await serve(t, [{ name: 'd', device: dev }, { name: 's', device: slow }]);
  const c = await RawClient.open({ port }, { name: 'd' });
  const s = await RawClient.open({ port }, { name: 's' });
  t.after(() => (c.close(), s.close()));
  assert.ok(c.flags & P.TFLAG_SEND_FAST_ZERO && c.flags & P.TFLAG_SEND_WRITE_ZEROES);
  await c.request(P.CMD_WRITE_ZEROES, { offset: 0, length: 65536, flags: P.CMD_FLAG_NO_HOLE | P.CMD_FLAG_FUA });
  assert.deepEqual(dev.calls.find((x) => x.op === 'zero')!.opts, { fua: true, fast: false, noHole: true });
  const r = await s.request(P.CMD_WRITE_ZEROES, { offset: 0, length: 4096, flags: P.CMD_FLAG_FAST_ZERO });
  assert.equal(r.error, P.NBD_ENOTSUP);
  assert.ok((await slow.inner.read(0, 4096)).equals(Buffer.alloc(4096, 1)));
  assert.equal((await c.request(P.CMD_TRIM, { offset: 0, length: 4096 })).error, 0);
  assert.equal(dev.calls.filter((x) => x.op === 'trim').length, 1);
});

test('in-flight bytes per connection are capped: the socket is paused until replies drain', async (t) => {
  const dev = new ProbeDevice(64 * MiB);
  const gate = deferred();
  dev.hold = (c) => (c.op === 'write' ? gate.promise : undefined);
  const { port } = await serve(t, [{ name: 'd', device: dev }], { maxInflightBytes: 2 * MiB });
  const c = await RawClient.open({ port }, { name: 'd' });
  t.after(() => c.close());
  const all = Array.from({ length: 16 }, (_, i) => c.request(P.CMD_WRITE, { offset: i * MiB, data: Buffer.alloc(MiB, i + 1) }));
  await new Promise((r) => setTimeout(r, 300));
  assert.ok(dev.running <= 2, `at most cap/size writes in flight, saw ${dev.running}`);
  gate.resolve();
  const res = await Promise.all(all);
  assert.ok(res.every((r) => r.error === 0));
  assert.ok(dev.maxRunning <= 2);
  assert.ok((await dev.inner.read(15 * MiB, MiB)).equals(Buffer.alloc(MiB, 16)));
});

test('BLOCK_STATUS answers base:allocation and tidemark:changes:<ID>; unknown IDs are not selected', async (t) => {
  const dev = new ProbeDevice(4 * MiB);
  await dev.inner.write(MiB, Buffer.alloc(64 * 1024, 1));
  const changes: ChangeSource = {
    async changesSince(id, offset, length) {
      if (id !== 'gen1') throw new Error('unknown id');
      return [{ offset: 0, length: 8192 }, { offset: 2 * MiB, length: 4096 }].filter((r) => r.offset < offset + length && r.offset + r.length > offset);
    },
    async listIds() {
      return ['gen1'];
    },
  };
  const { port } = await serve(t, [{ name: 'd', device: dev, changes }]);
  const c = await RawClient.open({ port }, { name: 'd', contexts: ['base:allocation', 'tidemark:changes:gen1', 'tidemark:changes:bogus'] });
  t.after(() => c.close());
  assert.deepEqual([...c.contexts.keys()].sort(), ['base:allocation', 'tidemark:changes:gen1']);
  const r = await c.request(P.CMD_BLOCK_STATUS, { offset: 0, length: 4 * MiB });
  assert.equal(r.error, 0);
  assert.deepEqual(r.status!.get(c.contexts.get('base:allocation')!), [
    { length: MiB, flags: 3 },
    { length: 64 * 1024, flags: 0 },
    { length: 3 * MiB - 64 * 1024, flags: 3 },
  ]);
  assert.deepEqual(r.status!.get(c.contexts.get('tidemark:changes:gen1')!), [
    { length: 8192, flags: 1 },
    { length: 2 * MiB - 8192, flags: 0 },
    { length: 4096, flags: 1 },
    { length: 2 * MiB - 4096, flags: 0 },
  ]);
  const one = await c.request(P.CMD_BLOCK_STATUS, { offset: MiB, length: MiB, flags: P.CMD_FLAG_REQ_ONE });
  for (const d of one.status!.values()) assert.equal(d.length, 1);
  assert.equal((await c.request(P.CMD_BLOCK_STATUS, { offset: 4 * MiB - 512, length: 1024 })).error, P.NBD_EINVAL);
});

test('close() lets in-flight requests finish and be answered, flushes, and refuses new clients', async (t) => {
  const dev = new ProbeDevice(MiB);
  const gate = deferred();
  dev.hold = (c) => (c.op === 'write' ? gate.promise : undefined);
  const { srv, port } = await serve(t, [{ name: 'd', device: dev }]);
  const c = await RawClient.open({ port }, { name: 'd' });
  const w = c.request(P.CMD_WRITE, { offset: 0, data: Buffer.alloc(512, 4) });
  await new Promise((r) => setTimeout(r, 50));
  const handshaking = await RawClient.connect({ port });
  let closed = false;
  const closing = srv.close().then(() => (closed = true));
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(closed, false, 'close waits for the in-flight write');
  gate.resolve();
  assert.equal((await w).error, 0);
  await closing;
  assert.ok(dev.durable.has(0), 'flushed on close');
  await c.waitClosed();
  await handshaking.waitClosed();
  await assert.rejects(RawClient.connect({ port }));
});

test('NBD_CMD_DISC finishes outstanding requests then closes; unix sockets work', async (t) => {
  const dir = await tempDir(t);
  const dev = new ProbeDevice(MiB);
  const srv = new NbdServer({ exports: [{ name: 'd', device: dev }] });
  const path = join(dir, 'nbd.sock');
  assert.equal(await srv.listen({ path }), path);
  t.after(() => srv.close());
  const c = await RawClient.open({ path }, { name: 'd' });
  const w = c.request(P.CMD_WRITE, { offset: 0, data: Buffer.alloc(4096, 8) });
  c.write(encodeRequestHeader(P.CMD_DISC, 0, 99n, 0, 0));
  assert.equal((await w).error, 0);
  await c.waitClosed();
  assert.ok((await dev.inner.read(0, 4096)).equals(Buffer.alloc(4096, 8)));
});

test('a client that never finishes the handshake is dropped after the timeout', async (t) => {
  const { port } = await serve(t, [{ name: 'd', device: new ProbeDevice(MiB) }], { handshakeTimeoutMs: 200 });
  const c = await RawClient.connect({ port });
  await c.greet();
  await c.waitClosed(3000);
});

test('GO for an unknown export is ERR_UNKNOWN and the client may retry', async (t) => {
  const { port } = await serve(t, [{ name: 'd', device: new ProbeDevice(MiB) }]);
  const c = await RawClient.connect({ port });
  t.after(() => c.close());
  await c.greet();
  const r = await c.option(P.OPT_GO, encodeInfoRequest('nope'));
  assert.equal(r.at(-1)!.type, P.REP_ERR_UNKNOWN);
  const l = await c.option(P.OPT_LIST_META_CONTEXT, encodeMetaContextRequest('d', []));
  assert.equal(l.at(-1)!.type, P.REP_ERR_INVALID, 'meta contexts need structured replies first');
  const ok = await c.option(P.OPT_GO, encodeInfoRequest('d'));
  assert.equal(ok.at(-1)!.type, P.REP_ACK);
});

test('configuration errors are typed', () => {
  const d = new ProbeDevice(MiB);
  assert.throws(() => new NbdServer({ exports: [] }), /no exports/);
  assert.throws(() => new NbdServer({ exports: [{ name: 'x', device: d }, { name: 'x', device: d }] }), /used twice/);
  assert.throws(() => new NbdServer({ exports: [{ name: 'x', device: d }], tls: { cert: 'nope', key: 'nope', mode: 'allowed' } }), /TLS/);
});

test('devices offering readInto are read into recycled buffers, replies stay correct under pipelining', async (t) => {
  const dev = new ProbeDevice(8 * MiB);
  for (let i = 0; i < 8; i++) await dev.inner.write(i * MiB, Buffer.alloc(MiB, i + 1));
  let intoCalls = 0;
  const withInto = Object.assign(Object.create(dev) as ProbeDevice, {
    // Per extent, as VhdxDevice does: data copied, holes zero-filled (the contract: every byte is written).
    async readInto(out: Buffer, at: number, offset: number, length: number): Promise<void> {
      intoCalls++;
      for (const e of await dev.inner.extents(offset, length)) {
        const o = at + e.offset - offset;
        if (e.type === 'data') (await dev.inner.read(e.offset, e.length)).copy(out, o);
        else out.fill(0, o, o + e.length);
      }
    },
  });
  const { port } = await serve(t, [{ name: 'd', device: withInto }]);
  for (const structured of [true, false]) {
    const c = await RawClient.open({ port }, { name: 'd', structured });
    t.after(() => c.close());
    for (let round = 0; round < 3; round++) {
      const rs = await Promise.all(Array.from({ length: 8 }, (_, i) => c.request(P.CMD_READ, { offset: i * MiB + 4096, length: 256 * 1024 })));
      rs.forEach((r, i) => assert.ok(r.data!.equals(Buffer.alloc(256 * 1024, i + 1)), `read ${i} round ${round}`));
    }
  }
  // Half-allocated reads through recycled (dirty) buffers: the unallocated half must read as zeros.
  await dev.inner.zero(7 * MiB, MiB);
  const c = await RawClient.open({ port }, { name: 'd', structured: false });
  t.after(() => c.close());
  for (let round = 0; round < 3; round++) {
    const r = await c.request(P.CMD_READ, { offset: 6 * MiB + 512 * 1024, length: MiB });
    const expect = Buffer.alloc(MiB);
    expect.fill(7, 0, 512 * 1024);
    assert.ok(r.data!.equals(expect), `round ${round}: never-written range reads as zeros`);
  }
  assert.equal(intoCalls, 51);
  assert.equal(dev.calls.filter((c) => c.op === 'read').length, 0, 'the allocating read path was not used');
});

test('unix socket: a stale socket file is replaced, a live one is refused, close removes it', async (t) => {
  const dir = await tempDir(t);
  const path = join(dir, 'stale.sock');
  // A socket file nobody accepts on: what a crashed server leaves (a child listens, then is SIGKILLed).
  const child = spawn(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(path)}, () => console.log('up'))`], { stdio: ['ignore', 'pipe', 'ignore'] });
  await new Promise<void>((r) => child.stdout!.once('data', () => r()));
  child.kill('SIGKILL');
  await new Promise((r) => child.once('exit', r));
  assert.ok((await stat(path)).isSocket(), 'the stale socket file is there');
  const a = new NbdServer({ exports: [{ name: 'd', device: new ProbeDevice(MiB) }] });
  assert.equal(await a.listen({ path }), path);
  const b = new NbdServer({ exports: [{ name: 'd', device: new ProbeDevice(MiB) }] });
  await assert.rejects(b.listen({ path }), /already in use/);
  const c = await RawClient.open({ path }, { name: 'd' });
  c.close();
  await a.close();
  await assert.rejects(RawClient.connect({ path }));
});
