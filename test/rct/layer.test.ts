import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { MemoryDevice } from '../../src/blockdev/MemoryDevice.js';
import { ClosedError } from '../../src/errors.js';
import { enableTracking } from '../../src/rct/enableTracking.js';
import { decodeMrt } from '../../src/rct/mrtCodec.js';
import { openTracked } from '../../src/rct/trackingLayer.js';
import { tempDir } from '../helpers/tools.js';
import { keepOpen } from './rctTestKit.js';

const MiB = 1024 * 1024;

/**
 * `mem` whose writes wait after they start: `inWrite` resolves when a write has begun, `release()`
 * lets the pending write go on to `mem`.
 */
function blockingWrite(mem: MemoryDevice) {
  let release!: () => void;
  let entered!: () => void;
  const inWrite = new Promise<void>((r) => (entered = r));
  const slow = { ...keepOpen(mem), write: async (o: number, d: Uint8Array) => { entered(); await new Promise<void>((r) => (release = r)); return mem.write(o, d); } };
  return { slow, inWrite, release: () => release() };
}

async function setup(t: import('node:test').TestContext, size = 16 * MiB) {
  const dir = await tempDir(t, 'tidemark-rct-layer-');
  const disk = join(dir, 'disk');
  await writeFile(disk, '');
  await enableTracking(disk, { blockSize: 4096, regionSize: MiB });
  return { disk, mem: new MemoryDevice(size) };
}

test('a write in flight across a seal is reported on both sides of it', async (t) => {
  const { disk, mem } = await setup(t);
  const { slow, inWrite, release } = blockingWrite(mem);
  const dev = await openTracked(slow, disk, { persistIntervalMs: 0 });
  const before = await dev.seal();
  const w = dev.write(8192, Buffer.alloc(100, 1));
  await inWrite;
  const after = await dev.seal();
  release();
  await w;
  assert.deepEqual(await dev.changes(before, after), [{ offset: 8192, length: 4096 }]);
  assert.deepEqual(await dev.changes(after), [{ offset: 8192, length: 4096 }], 'the data landed after the seal');
  await dev.close();
});

test('concurrent writes to one new region share one .mrt fsync; a marked region costs none', async (t) => {
  const { disk, mem } = await setup(t);
  const dev = await openTracked(keepOpen(mem), disk, { persistIntervalMs: 0 });
  const seq = async () => decodeMrt(await readFile(`${disk}.mrt`), 'm').seq;
  const s0 = await seq();
  await Promise.all(Array.from({ length: 16 }, (_, i) => dev.write(3 * MiB + i * 4096, Buffer.alloc(4096, i))));
  assert.equal(await seq(), s0 + 1, 'one mark for 16 concurrent writes to one region');
  await dev.write(3 * MiB + 500_000, Buffer.alloc(10));
  assert.equal(await seq(), s0 + 1, 'no mark for an already marked region');
  await Promise.all([dev.write(5 * MiB, Buffer.alloc(10)), dev.zero(6 * MiB, MiB + 1), dev.trim(9 * MiB, 10)]);
  assert.ok((await seq()) <= s0 + 3, 'marks for new regions are grouped');
  const m = decodeMrt(await readFile(`${disk}.mrt`), 'm');
  const marked = [...Array(16).keys()].filter((r) => m.bits[r >> 3]! & (1 << (r & 7)));
  assert.deepEqual(marked, [3, 5, 6, 7, 9]);
  await dev.close();
  // clean close resets the table for the next epoch
  const after = decodeMrt(await readFile(`${disk}.mrt`), 'm');
  assert.ok(after.bits.every((b) => b === 0));
});

test('layer passes reads/extents through, rejects I/O after close, keeps the BlockDevice contract', async (t) => {
  const { disk, mem } = await setup(t);
  const dev = await openTracked(keepOpen(mem), disk, { persistIntervalMs: 0 });
  await dev.write(100, Buffer.from('hello'));
  assert.equal((await dev.read(100, 5)).toString(), 'hello');
  assert.equal(dev.size, mem.size);
  await assert.rejects(dev.write(mem.size - 1, Buffer.alloc(2)), /outside the device/);
  await dev.close();
  await dev.close(); // idempotent
  await assert.rejects(dev.write(0, Buffer.alloc(1)), ClosedError);
});

test('status reports granularity, generation, live IDs; NBD ChangeSource view is clipped', async (t) => {
  const { disk, mem } = await setup(t);
  const dev = await openTracked(keepOpen(mem), disk, { persistIntervalMs: 0 });
  const id = await dev.seal();
  await dev.write(4096 * 10, Buffer.alloc(4096 * 3));
  const st = dev.status();
  assert.equal(st.blockSize, 4096);
  assert.equal(st.regionSize, MiB);
  assert.equal(st.generation, 2);
  assert.deepEqual(st.liveIds!.map((x) => x.id), [id]);
  assert.deepEqual(await dev.changesSince(id, 4096 * 11, 100), [{ offset: 4096 * 11, length: 100 }]);
  assert.deepEqual(dev.changedIn(id, 0, 4096 * 10), []);
  assert.equal(await dev.hasId(id), true);
  assert.equal(await dev.hasId('rct:nope'), false);
  assert.deepEqual(await dev.listIds(), [id]);
  await dev.close();
});

test('crash after a seal with a write in flight across it: the write stays reported since the new ID', async (t) => {
  const { disk, mem } = await setup(t);
  const { slow, inWrite, release } = blockingWrite(mem);
  const dev = await openTracked(slow, disk, { persistIntervalMs: 0 });
  await dev.seal();
  const w = dev.write(5 * MiB + 8192, Buffer.alloc(100, 1));
  await inWrite;
  const after = await dev.seal(); // persists and rolls the .mrt over while the write is in flight
  release();
  await w; // lands after the seal; its re-record is only in memory
  await dev.tracker.abandon(); // crash
  const again = await openTracked(keepOpen(mem), disk, { persistIntervalMs: 0 });
  assert.equal(again.status().verdict, 'recovered');
  const got = await again.changes(after);
  assert.ok(got.some((r) => r.offset <= 5 * MiB + 8192 && r.offset + r.length >= 5 * MiB + 8192 + 100), `in-flight write lost: ${JSON.stringify(got)}`);
  await again.close();
});

test('after a crash, regions written before the last persist are answered at fine granularity', async (t) => {
  const { disk, mem } = await setup(t);
  const dev = await openTracked(keepOpen(mem), disk, { persistIntervalMs: 0 });
  const id = await dev.seal();
  await dev.write(2 * MiB + 4096, Buffer.alloc(10, 1)); // region 2
  const id2 = await dev.seal(); // persist: the .mrt now only needs regions written from here on
  await dev.write(7 * MiB + 4096, Buffer.alloc(10, 1)); // region 7
  await dev.tracker.abandon();
  const again = await openTracked(keepOpen(mem), disk, { persistIntervalMs: 0 });
  assert.equal(again.status().verdict, 'recovered');
  assert.deepEqual(await again.changes(id), [{ offset: 2 * MiB + 4096, length: 4096 }, { offset: 7 * MiB, length: MiB }]);
  assert.deepEqual(await again.changes(id, id2), [{ offset: 2 * MiB + 4096, length: 4096 }]);
  await again.close();
});

test('a sparse 3 TiB disk: offsets past 2^32 blocks and 2^41 bytes, persisted and recovered', async (t) => {
  const dir = await tempDir(t, 'tidemark-rct-big-');
  const disk = join(dir, 'disk');
  await writeFile(disk, '');
  await enableTracking(disk, { blockSize: 512 }); // 512 B blocks: block numbers above 2^32
  const size = 3 * 2 ** 40 + 4096;
  const mem = new MemoryDevice(size);
  let dev = await openTracked(keepOpen(mem), disk, { persistIntervalMs: 0 });
  assert.equal(dev.status().regionSize, 128 * MiB, '3 TiB: regions doubled to keep the table at <= 32768 entries');
  const id = await dev.seal();
  await dev.write(size - 1000, Buffer.alloc(1000, 1));
  await dev.zero(2 ** 41 + 512 * 7, 512);
  await dev.close();
  dev = await openTracked(keepOpen(mem), disk, { persistIntervalMs: 0 });
  assert.deepEqual(await dev.changes(id), [{ offset: 2 ** 41 + 512 * 7, length: 512 }, { offset: size - 1024, length: 1024 }]);
  await dev.write(2 ** 41 + 3 * MiB, Buffer.alloc(1));
  await dev.tracker.abandon();
  dev = await openTracked(keepOpen(mem), disk, { persistIntervalMs: 0 });
  const got = await dev.changes(id);
  assert.ok(got.some((r) => r.offset <= 2 ** 41 + 3 * MiB && r.offset + r.length > 2 ** 41 + 3 * MiB), 'crash: the write near 2 TiB is covered');
  assert.ok(got.some((r) => r.offset === size - 1024));
  await dev.close();
});

test('readInto passes through untracked, and is offered exactly when the device has it', async (t) => {
  const { disk, mem } = await setup(t);
  const dev = await openTracked(mem, disk, { persistIntervalMs: 0 });
  assert.equal(typeof dev.readInto, 'function');
  const id = await dev.seal();
  await dev.write(MiB + 10, Buffer.alloc(5000, 7));
  await dev.seal();
  const target = Buffer.alloc(8192 + 4, 0xee);
  await dev.readInto!(target, 2, MiB, 8192);
  const want = Buffer.alloc(8192);
  want.fill(7, 10, 5010);
  assert.ok(target.subarray(2, 8194).equals(want), 'readInto returns the written bytes, zeros around them');
  assert.equal(target[0], 0xee);
  assert.equal(target[8195], 0xee);
  assert.deepEqual(await dev.changes(id), [{ offset: MiB, length: 8192 }], 'only the write is tracked, not the readInto');
  await dev.close();
  const { disk: disk2, mem: mem2 } = await setup(t);
  const without = await openTracked(keepOpen(mem2), disk2, { persistIntervalMs: 0 });
  assert.equal(without.readInto, undefined, 'no readInto when the device has none');
  await without.close();
});

test('periodic persist: with no flush or seal, a crash after the timer ran is answered at fine granularity', async (t) => {
  const { disk, mem } = await setup(t);
  const dev = await openTracked(keepOpen(mem), disk, { persistIntervalMs: 40 });
  const id = await dev.seal();
  await dev.write(3 * MiB + 8192, Buffer.alloc(10, 1)); // region 3, fine block 3 MiB + 8 KiB
  // Wait until the timer has rewritten the .rct (its content changes when the write is persisted).
  const before = await readFile(`${disk}.rct`);
  const deadline = Date.now() + 5000;
  while (Buffer.compare(before, await readFile(`${disk}.rct`)) === 0) {
    assert.ok(Date.now() < deadline, 'the periodic persist never rewrote the .rct');
    await new Promise((r) => setTimeout(r, 20));
  }
  await dev.tracker.abandon(); // crash: nothing flushed, sealed or closed since the write
  const again = await openTracked(keepOpen(mem), disk, { persistIntervalMs: 0 });
  assert.equal(again.status().verdict, 'recovered');
  // Only the fine block: without the periodic persist the answer would be the whole 1 MiB region.
  assert.deepEqual(await again.changes(id), [{ offset: 3 * MiB + 8192, length: 4096 }]);
  await again.close();
});
