import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { AddressInfo } from 'node:net';
import { DataWindowCache } from '../../src/nbd/DataWindowCache.js';
import { NbdServer } from '../../src/nbd/NbdServer.js';
import * as P from '../../src/nbd/protocol.js';
import type { Extent } from '../../src/blockdev/BlockDevice.js';
import { RawClient } from './helpers/RawClient.js';
import { ProbeDevice } from './helpers/ProbeDevice.js';

const MiB = 1024 * 1024;

test('cache: all-data windows are remembered; zero/trim and stale tokens forget them', async () => {
  const c = new DataWindowCache(MiB);
  const data = async (o: number, l: number): Promise<Extent[]> => [{ offset: o, length: l, type: 'data' }];
  await c.spanExtents(MiB + 5, 10, 10 * MiB, data);
  assert.ok(c.isAllData(MiB, MiB));
  assert.ok(!c.isAllData(MiB, MiB + 1));
  c.invalidate(MiB + 100, 1);
  assert.ok(!c.isAllData(MiB, 10));
  // A lookup that started before a zero began is not stored.
  const t = c.token();
  c.invalidate(0, 1);
  c.store(t, 0, MiB, 10 * MiB);
  assert.ok(!c.isAllData(0, 10));
  // The last, short window counts up to the export end.
  await c.spanExtents(9 * MiB + 1, 1, 9 * MiB + 4096, data);
  assert.ok(c.isAllData(9 * MiB, 4096));
});

test('cache: concurrent lookups share one call, but not across a completed write', async () => {
  const c = new DataWindowCache(MiB);
  let calls = 0;
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const slow = async (o: number, l: number): Promise<Extent[]> => {
    calls++;
    await gate;
    return [{ offset: o, length: l, type: 'hole' }];
  };
  const a = c.spanExtents(0, 4096, 4 * MiB, slow);
  const b = c.spanExtents(8192, 4096, 4 * MiB, slow);
  assert.equal(calls, 1);
  c.writeDone();
  const d = c.spanExtents(0, 4096, 4 * MiB, slow);
  assert.equal(calls, 2, 'a read after a completed write gets a fresh lookup');
  release();
  await Promise.all([a, b, d]);
});

test('server: a TRIM after a cached all-data READ is visible; a WRITE during a pending lookup is never hidden', async (t) => {
  const dev = new ProbeDevice(8 * MiB);
  await dev.inner.write(0, Buffer.alloc(4 * MiB, 0x77));
  const srv = new NbdServer({ exports: [{ name: 'd', device: dev }] });
  const port = ((await srv.listen({ port: 0 })) as AddressInfo).port;
  t.after(() => srv.close());
  const c = await RawClient.open({ port }, { name: 'd' });
  t.after(() => c.close());
  assert.ok((await c.request(P.CMD_READ, { offset: 0, length: 65536 })).data!.equals(Buffer.alloc(65536, 0x77)));
  const before = dev.calls.filter((x) => x.op === 'extents').length;
  await c.request(P.CMD_READ, { offset: 65536, length: 65536 });
  assert.equal(dev.calls.filter((x) => x.op === 'extents').length, before, 'second read of the window used the cache');
  assert.equal((await c.request(P.CMD_TRIM, { offset: 0, length: 128 * 1024 })).error, 0);
  const r = await c.request(P.CMD_READ, { offset: 0, length: 256 * 1024 });
  const expect = Buffer.alloc(256 * 1024, 0x77);
  expect.fill(0, 0, 128 * 1024);
  assert.ok(r.data!.equals(expect));

  // Window 4..8 MiB is a hole. Hold its extents lookup, complete a write there, then read it.
  let release!: () => void;
  const gate = new Promise<void>((res) => (release = res));
  dev.holdAfter = (x) => (x.op === 'extents' && x.offset === 4 * MiB && dev.calls.filter((y) => y.op === 'extents' && y.offset === 4 * MiB).length === 1 ? gate : undefined);
  const early = c.request(P.CMD_READ, { offset: 4 * MiB, length: 4096 });
  await new Promise((res) => setTimeout(res, 30));
  assert.equal((await c.request(P.CMD_WRITE, { offset: 4 * MiB + 8192, data: Buffer.alloc(4096, 0x31) })).error, 0);
  const late = c.request(P.CMD_READ, { offset: 4 * MiB + 8192, length: 4096 });
  await new Promise((res) => setTimeout(res, 30));
  release();
  assert.ok((await early).data!.equals(Buffer.alloc(4096)));
  assert.ok((await late).data!.equals(Buffer.alloc(4096, 0x31)), 'the read issued after the write saw its data');
});
