import type { BlockDevice, Capabilities, Extent, WriteIdentity } from './BlockDevice.js';
import { Gate } from './Gate.js';
import { ReadOnlyError } from '../errors.js';

/**
 * Layer: the same device with writes refused. `write`, `zero` and `trim` reject with ReadOnlyError
 * (ClosedError once closed) and never reach `next`; reads (and `readInto` when `next` has it), extents and identity pass through. The layer
 * owns `next`: closing it closes `next`. `flush` is a no-op (nothing was written through the layer).
 */
export function readOnly(next: BlockDevice): BlockDevice {
  return new ReadOnlyDevice(next);
}

class ReadOnlyDevice implements BlockDevice {
  readonly capabilities: Capabilities;
  readonly identity?: () => Promise<WriteIdentity>;
  readonly readInto?: (target: Uint8Array, targetOffset: number, offset: number, length: number) => Promise<void>;
  private closing: Promise<void> | undefined;
  private readonly gate = new Gate('read-only device');

  constructor(private readonly next: BlockDevice) {
    this.capabilities = { ...next.capabilities, readOnly: true };
    if (next.identity) this.identity = () => this.gate.run(() => next.identity!());
    if (next.readInto) this.readInto = (target, targetOffset, offset, length) => this.gate.run(() => next.readInto!(target, targetOffset, offset, length));
  }

  get size(): number {
    return this.next.size;
  }
  get logicalSectorSize(): number {
    return this.next.logicalSectorSize;
  }
  get physicalSectorSize(): number {
    return this.next.physicalSectorSize;
  }

  read(offset: number, length: number): Promise<Buffer> {
    return this.gate.run(() => this.next.read(offset, length));
  }
  async write(): Promise<void> {
    return this.refuse();
  }
  async zero(): Promise<void> {
    return this.refuse();
  }
  async trim(): Promise<void> {
    return this.refuse();
  }
  async flush(): Promise<void> {
    this.gate.check();
  }
  extents(offset: number, length: number): Promise<Extent[]> {
    return this.gate.run(() => this.next.extents(offset, length));
  }
  close(): Promise<void> {
    this.closing ??= (async () => {
      await this.gate.close();
      await this.next.close();
    })();
    return this.closing;
  }

  private refuse(): never {
    this.gate.check();
    throw new ReadOnlyError('read-only device');
  }
}
