import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import type { BlockDevice, Extent, WriteOptions, ZeroOptions } from '../../src/blockdev/BlockDevice.js';
import { MemoryDevice } from '../../src/blockdev/MemoryDevice.js';
import { SwitchableDevice } from '../../src/blockdev/SwitchableDevice.js';
import { ClosedError, UsageError } from '../../src/errors.js';
import { fcSeed } from '../helpers/tools.js';
import { runContract } from './contract.js';

runContract('SwitchableDevice over MemoryDevice', async (_t, size) => ({ device: new SwitchableDevice(new MemoryDevice(size)) }));

const SIZE = 64 * 1024;
const REGION = 4096;

/** A MemoryDevice whose every operation starts and completes at points the fast-check scheduler picks. */
class ScheduledDevice implements BlockDevice {
  readonly capabilities;
  constructor(readonly inner: MemoryDevice, private readonly s: fc.Scheduler) {
    this.capabilities = inner.capabilities;
  }
  get size() {
    return this.inner.size;
  }
  get logicalSectorSize() {
    return this.inner.logicalSectorSize;
  }
  get physicalSectorSize() {
    return this.inner.physicalSectorSize;
  }
  private async later<T>(label: string, op: () => Promise<T>): Promise<T> {
    await this.s.schedule(Promise.resolve(), `${label} starts`);
    const v = await op();
    await this.s.schedule(Promise.resolve(), `${label} done`);
    return v;
  }
  read(o: number, n: number) {
    return this.later(`read ${o}+${n}`, () => this.inner.read(o, n));
  }
  write(o: number, d: Uint8Array, opts?: WriteOptions) {
    return this.later(`write ${o}+${d.length}`, () => this.inner.write(o, d, opts));
  }
  zero(o: number, n: number, opts?: ZeroOptions) {
    return this.later(`zero ${o}+${n}`, () => this.inner.zero(o, n, opts));
  }
  trim(o: number, n: number) {
    return this.later(`trim ${o}+${n}`, () => this.inner.trim(o, n));
  }
  flush() {
    return this.later('flush', () => this.inner.flush());
  }
  extents(o: number, n: number): Promise<Extent[]> {
    return this.inner.extents(o, n);
  }
  close() {
    return this.inner.close();
  }
}

/** Switch target: a fresh device holding a copy of the old one's content; the old one is closed. */
function copyInto(s: fc.Scheduler) {
  return async (old: BlockDevice): Promise<BlockDevice> => {
    const data = await old.read(0, old.size);
    await s.schedule(Promise.resolve(), 'switch copies');
    const next = new MemoryDevice(old.size);
    await next.write(0, data);
    await old.close();
    return new ScheduledDevice(next, s);
  };
}

const clientOp = fc.oneof(
  fc.record({ kind: fc.constant('write' as const), off: fc.nat(REGION - 1), len: fc.integer({ min: 1, max: 512 }), byte: fc.integer({ min: 1, max: 255 }) }),
  fc.record({ kind: fc.constant('zero' as const), off: fc.nat(REGION - 1), len: fc.integer({ min: 1, max: 512 }) }),
  fc.record({ kind: fc.constant('read' as const), off: fc.nat(REGION - 1), len: fc.integer({ min: 1, max: 512 }) }),
);

test('SwitchableDevice: writes racing switches are never lost, and each client reads its own writes across switches', async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.scheduler(),
      fc.array(fc.array(clientOp, { minLength: 1, maxLength: 12 }), { minLength: 1, maxLength: 4 }),
      fc.integer({ min: 1, max: 4 }),
      async (s, clients, switches) => {
        const dev = new SwitchableDevice(new ScheduledDevice(new MemoryDevice(SIZE), s));
        const model = Buffer.alloc(SIZE);
        // Each client owns one region and waits for each of its operations (like a guest's sequential I/O).
        const runClient = async (ops: typeof clients[number], i: number) => {
          const base = i * REGION;
          for (const op of ops) {
            const len = Math.min(op.len, REGION - op.off);
            const at = base + op.off;
            if (op.kind === 'write') {
              await dev.write(at, Buffer.alloc(len, op.byte));
              model.fill(op.byte, at, at + len);
            } else if (op.kind === 'zero') {
              await dev.zero(at, len);
              model.fill(0, at, at + len);
            } else {
              const got = await dev.read(at, len);
              assert.ok(got.equals(model.subarray(at, at + len)), `client ${i} reads back its writes at ${at}+${len}`);
            }
          }
        };
        const runSwitcher = async () => {
          for (let k = 0; k < switches; k++) {
            await s.schedule(Promise.resolve(), `switch ${k} begins`);
            await dev.switch(copyInto(s));
          }
        };
        const all = Promise.all([...clients.map(runClient), runSwitcher()]);
        await s.waitFor(all);
        const final = dev.read(0, SIZE);
        await s.waitFor(final);
        assert.ok((await final).equals(model), 'the final content holds every acknowledged write');
        const closed = dev.close();
        await s.waitFor(closed);
      },
    ),
    { seed: fcSeed(), numRuns: 150 },
  );
});

test('SwitchableDevice: operations issued during a switch start in issue order (pipelined overlapping writes)', async () => {
  const cmd = fc.oneof(
    { weight: 5, arbitrary: fc.record({ kind: fc.constant('write' as const), off: fc.nat(SIZE - 1), len: fc.integer({ min: 1, max: 2048 }), byte: fc.integer({ min: 1, max: 255 }) }) },
    { weight: 2, arbitrary: fc.record({ kind: fc.constant('read' as const), off: fc.nat(SIZE - 1), len: fc.integer({ min: 1, max: 2048 }) }) },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant('switch' as const) }) },
    { weight: 2, arbitrary: fc.record({ kind: fc.constant('tick' as const) }) },
  );
  await fc.assert(
    fc.asyncProperty(fc.scheduler(), fc.array(cmd, { minLength: 1, maxLength: 40 }), async (s, cmds) => {
      // A plain MemoryDevice applies a write when it is called: the order of calls is the order of effect.
      const dev = new SwitchableDevice(new MemoryDevice(SIZE));
      const model = Buffer.alloc(SIZE);
      const pending: Promise<unknown>[] = [];
      const issue = async () => {
        for (const c of cmds) {
          if (c.kind === 'tick') await s.schedule(Promise.resolve(), 'tick');
          else if (c.kind === 'switch') {
            pending.push(dev.switch(async (old) => {
              await s.schedule(Promise.resolve(), 'switch opens the next device');
              const next = new MemoryDevice(SIZE);
              await next.write(0, await old.read(0, SIZE));
              await old.close();
              return next;
            }));
          } else if (c.kind === 'write') {
            const len = Math.min(c.len, SIZE - c.off);
            pending.push(dev.write(c.off, Buffer.alloc(len, c.byte)));
            model.fill(c.byte, c.off, c.off + len);
          } else {
            const len = Math.min(c.len, SIZE - c.off);
            const want = Buffer.from(model.subarray(c.off, c.off + len));
            pending.push(dev.read(c.off, len).then((got) => assert.ok(got.equals(want), `a read issued after a write sees it (${c.off}+${len})`)));
          }
        }
        await Promise.all(pending);
      };
      await s.waitFor(issue());
      assert.ok((await dev.read(0, SIZE)).equals(model), 'the last issued write wins everywhere');
      await dev.close();
    }),
    { seed: fcSeed(), numRuns: 200 },
  );
});

test('SwitchableDevice: a failed switch keeps the old device; a size mismatch is refused; close rejects queued operations', async () => {
  const a = new MemoryDevice(SIZE);
  const dev = new SwitchableDevice(a);
  await dev.write(0, Buffer.alloc(10, 7));
  await assert.rejects(dev.switch(async () => {
    throw new Error('open failed');
  }), /open failed/);
  assert.equal(dev.current, a);
  await dev.write(10, Buffer.alloc(10, 8)); // resumed after the failure
  await assert.rejects(dev.switch(async () => new MemoryDevice(SIZE * 2)), UsageError);
  assert.equal(dev.current, a);
  assert.ok((await dev.read(0, 20)).equals(Buffer.concat([Buffer.alloc(10, 7), Buffer.alloc(10, 8)])));

  // Explicit pause (a group fork pauses every disk first): operations wait until resume.
  await dev.pause();
  let done = false;
  const w = dev.write(100, Buffer.alloc(4, 9)).then(() => (done = true));
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(done, false, 'no operation starts while paused');
  assert.equal((await a.read(100, 4)).every((b) => b === 0), true);
  dev.resume();
  await w;
  assert.ok((await a.read(100, 4)).equals(Buffer.alloc(4, 9)));
  assert.throws(() => dev.resume(), UsageError);

  await dev.pause();
  const queued = dev.write(0, Buffer.alloc(1, 1));
  await dev.close();
  await assert.rejects(queued, ClosedError);
  await assert.rejects(dev.read(0, 1), ClosedError);
});
