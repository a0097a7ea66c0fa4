import type { BlockDevice, Capabilities, Extent, WriteOptions, ZeroOptions } from '../../../src/blockdev/BlockDevice.js';
import { MemoryDevice } from '../../../src/blockdev/MemoryDevice.js';

export interface Call {
  op: string;
  offset: number;
  length: number;
  opts?: WriteOptions | ZeroOptions;
}

/**
 * A MemoryDevice wrapper for server tests: records every call, can hold calls at a gate, tracks which writes
 * are durable (a write becomes durable at a later flush, or at once with FUA), and counts concurrency.
 */
export class ProbeDevice implements BlockDevice {
  readonly inner: MemoryDevice;
  readonly calls: Call[] = [];
  /** When set, each call awaits it before running. */
  hold: ((c: Call) => Promise<void> | undefined) | undefined;
  /** When set, each call awaits it after computing its result (a stale answer delivered late). */
  holdAfter: ((c: Call) => Promise<void> | undefined) | undefined;
  running = 0;
  maxRunning = 0;
  /** Offsets written but not yet flushed. */
  readonly volatile = new Set<number>();
  readonly durable = new Set<number>();
  readonly capabilities: Capabilities;

  constructor(size: number, caps: Partial<Capabilities> = {}) {
    this.inner = new MemoryDevice(size);
    this.capabilities = { ...this.inner.capabilities, ...caps };
  }
  get size(): number {
    return this.inner.size;
  }
  get logicalSectorSize(): number {
    return 512;
  }
  get physicalSectorSize(): number {
    return 4096;
  }

  private async run<T>(c: Call, f: () => Promise<T>): Promise<T> {
    this.calls.push(c);
    this.running++;
    this.maxRunning = Math.max(this.maxRunning, this.running);
    try {
      await this.hold?.(c);
      const r = await f();
      await this.holdAfter?.(c);
      return r;
    } finally {
      this.running--;
    }
  }

  read(offset: number, length: number): Promise<Buffer> {
    return this.run({ op: 'read', offset, length }, () => this.inner.read(offset, length));
  }
  write(offset: number, data: Uint8Array, opts?: WriteOptions): Promise<void> {
    return this.run({ op: 'write', offset, length: data.length, opts }, async () => {
      if (this.capabilities.readOnly) throw new (await import('../../../src/errors.js')).ReadOnlyError('probe');
      await this.inner.write(offset, data);
      if (opts?.fua) this.durable.add(offset);
      else this.volatile.add(offset);
    });
  }
  zero(offset: number, length: number, opts?: ZeroOptions): Promise<void> {
    return this.run({ op: 'zero', offset, length, opts }, () => this.inner.zero(offset, length, opts));
  }
  trim(offset: number, length: number, opts?: WriteOptions): Promise<void> {
    return this.run({ op: 'trim', offset, length, opts }, () => this.inner.trim(offset, length));
  }
  flush(): Promise<void> {
    const pending = [...this.volatile];
    return this.run({ op: 'flush', offset: 0, length: 0 }, async () => {
      for (const o of pending) {
        this.volatile.delete(o);
        this.durable.add(o);
      }
    });
  }
  extents(offset: number, length: number): Promise<Extent[]> {
    return this.run({ op: 'extents', offset, length }, () => this.inner.extents(offset, length));
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}
