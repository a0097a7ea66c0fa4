import type { BlockDevice, Capabilities, Extent, WriteOptions, ZeroOptions } from './BlockDevice.js';
import { checkTarget } from './checkRange.js';
import { ClosedError, UsageError } from '../errors.js';

/**
 * A device that forwards to a *current* device which can be replaced while I/O is running: the layer a
 * server puts under a running guest so that a checkpoint can fork its disk (switch to a new child) and
 * merge it back (switch to the parent) without losing or reordering a single request.
 *
 * Contract:
 * - `pause()` stops admitting: operations called from then on are queued (FIFO, not started). It
 *   resolves once every operation admitted before it has settled and the current device has been
 *   flushed — so everything acknowledged to a client is durable in the current device, and nothing is in
 *   flight. Pauses nest (a counter); the device resumes when the last `resume()` balances them.
 * - `resume()` starts the queued operations in the order they were called, synchronously, before any
 *   operation called later can start: the order of issue is kept across a pause.
 * - `switch(fn)`: pause, `next = await fn(current)`, make `next` current, resume. `fn` receives the
 *   drained, flushed current device (and usually closes it); the next device must have the same size and
 *   sector sizes (else UsageError, the old device stays). When `fn` throws, the old device stays current
 *   and the error is rethrown (after resuming).
 * - Operations are forwarded one-to-one (no splitting): each runs wholly on one device.
 * - `close()` waits for admitted operations, then closes the current device; queued operations are
 *   rejected with ClosedError. The device owns its current device.
 * Capabilities are those of the device current at construction (the next ones must offer the same).
 */
export class SwitchableDevice implements BlockDevice {
  readonly capabilities: Capabilities;
  private inflight = 0;
  private idleWaiters: Array<() => void> = [];
  private pauses = 0;
  private queue: Array<{ start: () => void; fail: (err: unknown) => void }> = [];
  private closing: Promise<void> | undefined;
  private switching: Promise<unknown> = Promise.resolve();

  constructor(private dev: BlockDevice, private readonly what = 'switchable device') {
    this.capabilities = { ...dev.capabilities };
  }

  /** The device operations reach now. */
  get current(): BlockDevice {
    return this.dev;
  }
  get paused(): boolean {
    return this.pauses > 0;
  }
  get size(): number {
    return this.dev.size;
  }
  get logicalSectorSize(): number {
    return this.dev.logicalSectorSize;
  }
  get physicalSectorSize(): number {
    return this.dev.physicalSectorSize;
  }

  read(offset: number, length: number): Promise<Buffer> {
    return this.admit(() => this.dev.read(offset, length));
  }
  readInto(target: Uint8Array, targetOffset: number, offset: number, length: number): Promise<void> {
    try {
      checkTarget(target, targetOffset, length);
    } catch (err) {
      return Promise.reject(err);
    }
    return this.admit(async () => {
      const d = this.dev;
      if (d.readInto) return d.readInto(target, targetOffset, offset, length);
      target.set(await d.read(offset, length), targetOffset);
    });
  }
  write(offset: number, data: Uint8Array, opts?: WriteOptions): Promise<void> {
    return this.admit(() => this.dev.write(offset, data, opts));
  }
  zero(offset: number, length: number, opts?: ZeroOptions): Promise<void> {
    return this.admit(() => this.dev.zero(offset, length, opts));
  }
  trim(offset: number, length: number, opts?: WriteOptions): Promise<void> {
    return this.admit(() => this.dev.trim(offset, length, opts));
  }
  flush(): Promise<void> {
    return this.admit(() => this.dev.flush());
  }
  extents(offset: number, length: number): Promise<Extent[]> {
    return this.admit(() => this.dev.extents(offset, length));
  }

  /** Stop admitting, wait for in-flight operations, flush the current device (see the class comment). */
  async pause(): Promise<void> {
    if (this.closing) throw new ClosedError(this.what);
    this.pauses++;
    try {
      await this.drained();
      await this.dev.flush();
    } catch (err) {
      this.resume();
      throw err;
    }
  }

  /** Balance one `pause()`; the last one starts the queued operations in call order. */
  resume(): void {
    if (this.pauses === 0) throw new UsageError(`${this.what}: resume() without pause()`);
    if (--this.pauses > 0) return;
    const q = this.queue;
    this.queue = [];
    for (const op of q) op.start();
  }

  /**
   * Replace the current device (see the class comment). Switches are serialised: a second switch runs
   * after the first one has finished.
   */
  switch(fn: (current: BlockDevice) => Promise<BlockDevice>): Promise<void> {
    const run = this.switching.then(async () => {
      await this.pause();
      try {
        const old = this.dev;
        const next = await fn(old);
        if (next !== old && (next.size !== old.size || next.logicalSectorSize !== old.logicalSectorSize)) {
          await next.close().catch(() => undefined);
          throw new UsageError(`${this.what}: the new device has size ${next.size} (sector ${next.logicalSectorSize}), the current one ${old.size} (sector ${old.logicalSectorSize})`);
        }
        this.dev = next;
      } finally {
        this.resume();
      }
    });
    this.switching = run.catch(() => undefined);
    return run;
  }

  close(): Promise<void> {
    this.closing ??= (async () => {
      const q = this.queue;
      this.queue = [];
      for (const op of q) op.fail(new ClosedError(this.what));
      await this.switching;
      await this.drained();
      await this.dev.close();
    })();
    return this.closing;
  }

  private admit<T>(op: () => Promise<T>): Promise<T> {
    if (this.closing) return Promise.reject(new ClosedError(this.what));
    if (this.pauses === 0) return this.track(op);
    return new Promise<T>((resolve, reject) => {
      this.queue.push({ start: () => this.track(op).then(resolve, reject), fail: reject });
    });
  }

  private track<T>(op: () => Promise<T>): Promise<T> {
    this.inflight++;
    let p: Promise<T>;
    try {
      p = op();
    } catch (err) {
      p = Promise.reject(err);
    }
    return p.finally(() => {
      if (--this.inflight === 0) {
        const w = this.idleWaiters;
        this.idleWaiters = [];
        for (const f of w) f();
      }
    });
  }

  private drained(): Promise<void> {
    if (this.inflight === 0) return Promise.resolve();
    return new Promise((r) => this.idleWaiters.push(r));
  }
}
