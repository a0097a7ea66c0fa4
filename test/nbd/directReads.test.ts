/**
 * Direct socket reads (readIntoCallerBuffers): WRITE payloads land straight in pooled buffers, everything
 * else in one reused scratch buffer; READ replies are read into pooled buffers behind their header. These
 * tests drive a real RawFileDevice over a real unix socket with pipelined requests split at random points,
 * through recycled (dirty) buffers, and check every byte against a model: a byte of one request must never
 * show up in another's payload or reply. The same stream runs with direct reads off ('data' events) as a
 * reference, and under a tight in-flight cap (the socket paused mid-stream).
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import * as net from 'node:net';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { RawFileDevice } from '../../src/blockdev/RawFileDevice.js';
import { BufferPool } from '../../src/nbd/BufferPool.js';
import { DataWindowCache } from '../../src/nbd/DataWindowCache.js';
import { NbdConnection, type ServedExport } from '../../src/nbd/NbdConnection.js';
import { transmissionFlags } from '../../src/nbd/NbdServer.js';
import { readIntoCallerBuffers } from '../../src/nbd/readIntoCallerBuffers.js';
import * as P from '../../src/nbd/protocol.js';
import { RawClient, type Reply } from './helpers/RawClient.js';
import { fcSeed, tempDir } from '../helpers/tools.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const SIZE = 8 * MiB;

interface Served {
  path: string;
  dev: RawFileDevice;
  conns: NbdConnection[];
  pool: BufferPool;
}

/** One export over a unix socket, connections built directly so the test can inspect them. */
async function serve(t: TestContext, opts: { directReads: boolean; maxInflightBytes?: number }): Promise<Served> {
  const dir = await tempDir(t);
  const dev = await RawFileDevice.create(join(dir, 'd.raw'), SIZE);
  t.after(() => dev.close());
  const pool = new BufferPool();
  const exp: ServedExport = { name: 'd', device: dev, readOnly: false, dataCache: new DataWindowCache() };
  const conns: NbdConnection[] = [];
  const sockets: net.Socket[] = [];
  const server = net.createServer((s) => {
    sockets.push(s);
    conns.push(
      new NbdConnection(s, {
        handshake: { exports: [{ name: 'd', size: SIZE, flags: transmissionFlags(false), blockSizes: { minimum: 1, preferred: 4096, maximum: P.MAX_PAYLOAD } }], tls: 'off' },
        exports: new Map([['d', exp]]),
        handshakeTimeoutMs: 10_000,
        maxInflightBytes: opts.maxInflightBytes ?? 64 * MiB,
        pool,
        directReads: opts.directReads,
        log: () => {},
      }),
    );
  });
  const path = join(dir, 's.sock');
  await new Promise<void>((r) => server.listen(path, r));
  t.after(async () => {
    for (const s of sockets) s.destroy();
    await Promise.all(conns.map((c) => c.closed));
    await new Promise<void>((r) => server.close(() => r()));
  });
  return { path, dev, conns, pool };
}

/**
 * Issue `reqs` on `c` as one pipelined byte stream, cut once per request where `splits` says (a value below
 * 0.5 cuts inside its 28-byte header, above inside its payload) and written piece by piece with a
 * macrotask in between, so the server's reads end at those points. Resolves with the replies in order.
 */
async function pipelined(c: RawClient, reqs: Array<{ type: number; offset: number; length?: number; data?: Buffer }>, splits: number[]): Promise<Reply[]> {
  const parts: Buffer[] = [];
  const write = c.write;
  c.write = (b: Buffer) => void parts.push(Buffer.from(b));
  const replies = reqs.map((r) => c.request(r.type, r));
  c.write = write;
  const stream = Buffer.concat(parts);
  const cuts: number[] = [];
  let start = 0;
  reqs.forEach((r, i) => {
    const v = splits[i % splits.length]!;
    const payload = r.data?.length ?? 0;
    if (v < 0.5) cuts.push(start + 1 + Math.floor(v * 2 * 26));
    else if (payload > 1) cuts.push(start + 28 + 1 + Math.floor((v - 0.5) * 2 * (payload - 1)));
    start += 28 + payload;
  });
  cuts.push(stream.length);
  let pos = 0;
  for (const cut of cuts) {
    c.sock.write(stream.subarray(pos, cut));
    pos = cut;
    await new Promise((r) => setImmediate(r));
  }
  // A server that drops the connection (a corrupted stream is fatal) fails the test instead of hanging it.
  const dropped = new Promise<never>((_, reject) => c.sock.once('close', () => reject(new Error('server closed the connection'))));
  return Promise.race([Promise.all(replies), dropped]);
}

/** Rounds of non-overlapping pipelined WRITEs (random sizes, random bytes), then pipelined READs, against a model. */
async function exercise(s: Served, structured: boolean, seedRounds: Array<{ sizes: number[]; splits: number[]; reads: Array<[number, number]> }>): Promise<void> {
  const c = await RawClient.open({ path: s.path }, { name: 'd', structured });
  const model = Buffer.alloc(SIZE);
  for (const round of seedRounds) {
    // Writes laid out back to back from a round-dependent start, so later rounds overwrite earlier data.
    let off = (round.sizes.length * 4099) % (SIZE / 2);
    const writes = round.sizes.map((n) => {
      const w = { type: P.CMD_WRITE, offset: off, data: randomBytes(n) };
      off = (off + n) % (SIZE - 700 * KiB);
      return w;
    });
    // Offsets wrap: keep only writes that do not overlap an earlier one of this round (order is undefined).
    const taken: Array<[number, number]> = [];
    const batch = writes.filter((w) => {
      const end = w.offset + w.data.length;
      if (taken.some(([a, b]) => w.offset < b && end > a)) return false;
      taken.push([w.offset, end]);
      return true;
    });
    const wr = await pipelined(c, batch, round.splits);
    wr.forEach((r, i) => assert.equal(r.error, 0, `write ${i}`));
    for (const w of batch) w.data.copy(model, w.offset);
    assert.ok((await s.dev.read(0, SIZE)).equals(model), 'the file holds exactly what was written');
    const reads = round.reads.map(([o, l]) => ({ type: P.CMD_READ, offset: Math.min(o, SIZE - l), length: l }));
    const rr = await pipelined(c, reads, round.splits);
    rr.forEach((r, i) => {
      assert.equal(r.error, 0);
      const { offset, length } = reads[i]!;
      assert.ok(r.data!.equals(model.subarray(offset, offset + length)), `read ${i} [${offset}, +${length}) matches`);
    });
  }
  c.close();
}

const roundArb = fc.record({
  sizes: fc.array(fc.oneof(fc.integer({ min: 1, max: 5000 }), fc.integer({ min: 60 * KiB, max: 600 * KiB })), { minLength: 1, maxLength: 10 }),
  splits: fc.array(fc.double({ min: 0, max: 0.999, noNaN: true }), { minLength: 1, maxLength: 10 }),
  reads: fc.array(fc.tuple(fc.integer({ min: 0, max: SIZE - 1 }), fc.integer({ min: 1, max: 700 * KiB })), { minLength: 1, maxLength: 8 }),
});

for (const directReads of [true, false]) {
  test(`pipelined WRITEs and READs split anywhere land intact through recycled buffers (direct reads ${directReads ? 'on' : 'off'})`, async (t) => {
    await fc.assert(
      fc.asyncProperty(fc.array(roundArb, { minLength: 2, maxLength: 3 }), fc.boolean(), async (rounds, structured) => {
        const s = await serve(t, { directReads });
        await exercise(s, structured, rounds);
        assert.equal(s.conns[0]!.directReads, directReads);
        assert.ok(s.pool.idle > 0, 'buffers went back to the pool');
      }),
      { seed: fcSeed(), numRuns: 8, endOnFailure: true },
    );
  });
}

test('direct reads under a tight in-flight cap: the socket pauses mid-stream and no byte is lost or misplaced', async (t) => {
  await fc.assert(
    fc.asyncProperty(roundArb, roundArb, async (a, b) => {
      const s = await serve(t, { directReads: true, maxInflightBytes: 512 * KiB });
      await exercise(s, true, [a, b]);
      assert.equal(s.conns[0]!.directReads, true);
    }),
    { seed: fcSeed(), numRuns: 4, endOnFailure: true },
  );
});

test('readIntoCallerBuffers: reads land in the buffers handed out, pause/resume and end still work', async (t) => {
  const dir = await tempDir(t);
  const path = join(dir, 's.sock');
  const bufs = [Buffer.alloc(5), Buffer.alloc(3)];
  let k = 0;
  const got: string[] = [];
  let ended!: () => void;
  const end = new Promise<void>((r) => (ended = r));
  const server = net.createServer((s) => {
    const ok = readIntoCallerBuffers(
      s,
      () => bufs[k++ % 2]!,
      (n, b) => {
        assert.ok(b === bufs[0] || b === bufs[1], 'the read landed in a buffer we supplied');
        got.push(b.subarray(0, n).toString());
        s.pause();
        setTimeout(() => s.resume(), 5);
      },
    );
    assert.equal(ok, true);
    s.on('end', ended);
  });
  await new Promise<void>((r) => server.listen(path, r));
  t.after(() => new Promise<void>((r) => server.close(() => r())));
  const c = net.connect(path);
  await new Promise((r) => c.once('connect', r));
  c.end('hello world, read in small pieces');
  await end;
  assert.equal(got.join(''), 'hello world, read in small pieces');
  assert.ok(got.every((g) => g.length <= 5));
});

test('BufferPool: power-of-two classes carry header room, buffers are recycled, idle bytes are capped', () => {
  const pool = new BufferPool(1 * MiB);
  const a = pool.take(256 * KiB + 28);
  assert.equal(a.length, 256 * KiB + BufferPool.HEADROOM, 'a 256 KiB read plus its header does not need a 512 KiB buffer');
  assert.equal(pool.take(1).length, 64 * KiB + BufferPool.HEADROOM);
  pool.give(a);
  assert.equal(pool.idle, a.length);
  assert.equal(pool.take(200 * KiB), a, 'recycled');
  for (let i = 0; i < 8; i++) pool.give(Buffer.alloc(256 * KiB + BufferPool.HEADROOM));
  assert.ok(pool.idle <= 1 * MiB);
});
