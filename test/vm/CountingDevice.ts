import type { BlockDevice, Capabilities, Extent, WriteOptions, ZeroOptions } from '../../src/blockdev/BlockDevice.js';

export type DeviceOp = 'read' | 'write' | 'zero' | 'trim' | 'flush' | 'extents';

/**
 * A pass-through BlockDevice layer that counts every call and records the ranges that changed
 * content (write, zero, trim). Tests wrap the device an NBD server serves to see what a guest did.
 */
export class CountingDevice implements BlockDevice {
  readonly counts: Record<DeviceOp, number> = { read: 0, write: 0, zero: 0, trim: 0, flush: 0, extents: 0 };
  /** Ranges passed to write/zero/trim, in call order (recorded before the call, kept if it fails). */
  readonly mutations: Array<{ op: 'write' | 'zero' | 'trim'; offset: number; length: number }> = [];

  constructor(readonly next: BlockDevice) {}

  get size(): number {
    return this.next.size;
  }
  get logicalSectorSize(): number {
    return this.next.logicalSectorSize;
  }
  get physicalSectorSize(): number {
    return this.next.physicalSectorSize;
  }
  get capabilities(): Capabilities {
    return this.next.capabilities;
  }

  read(offset: number, length: number): Promise<Buffer> {
    this.counts.read++;
    return this.next.read(offset, length);
  }
  write(offset: number, data: Uint8Array, opts?: WriteOptions): Promise<void> {
    this.counts.write++;
    this.mutations.push({ op: 'write', offset, length: data.length });
    return this.next.write(offset, data, opts);
  }
  zero(offset: number, length: number, opts?: ZeroOptions): Promise<void> {
    this.counts.zero++;
    this.mutations.push({ op: 'zero', offset, length });
    return this.next.zero(offset, length, opts);
  }
  trim(offset: number, length: number, opts?: WriteOptions): Promise<void> {
    this.counts.trim++;
    this.mutations.push({ op: 'trim', offset, length });
    return this.next.trim(offset, length, opts);
  }
  flush(): Promise<void> {
    this.counts.flush++;
    return this.next.flush();
  }
  extents(offset: number, length: number): Promise<Extent[]> {
    this.counts.extents++;
    return this.next.extents(offset, length);
  }
  close(): Promise<void> {
    return this.next.close();
  }
}
