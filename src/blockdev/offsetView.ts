import type { BlockDevice, Capabilities, Extent, WriteIdentity, WriteOptions, ZeroOptions } from './BlockDevice.js';
import { checkRange } from './checkRange.js';
import { Gate } from './Gate.js';

export interface OffsetViewOptions {
  /** Close `next` when the view is closed (default true). Set false for several views of one device. */
  closeNext?: boolean;
}

/**
 * Layer: bytes [offset, offset+length) of `next` as a device of `length` bytes (a partition, a raw
 * image embedded in a container). Requests are checked against the view's size (OutOfRangeError) and
 * shifted by `offset`; extents are shifted back. Throws OutOfRangeError at once when the window does not
 * fit in `next`. `readInto` is offered when `next` has it. Identity passes through: it describes the whole underlying device.
 */
export function offsetView(next: BlockDevice, offset: number, length: number, opts: OffsetViewOptions = {}): BlockDevice {
  checkRange(offset, length, next.size);
  return new OffsetView(next, offset, length, opts.closeNext ?? true);
}

class OffsetView implements BlockDevice {
  readonly capabilities: Capabilities;
  readonly identity?: () => Promise<WriteIdentity>;
  readonly readInto?: (target: Uint8Array, targetOffset: number, offset: number, length: number) => Promise<void>;
  private closing: Promise<void> | undefined;
  private readonly gate = new Gate('offset view');

  constructor(
    private readonly next: BlockDevice,
    private readonly start: number,
    readonly size: number,
    private readonly closeNext: boolean,
  ) {
    this.capabilities = { ...next.capabilities };
    if (next.identity) this.identity = () => this.gate.run(() => next.identity!());
    if (next.readInto) {
      this.readInto = (target, targetOffset, offset, length) =>
        this.gate.run(() => this.checked(offset, length, () => next.readInto!(target, targetOffset, this.start + offset, length)));
    }
  }

  get logicalSectorSize(): number {
    return this.next.logicalSectorSize;
  }
  get physicalSectorSize(): number {
    return this.next.physicalSectorSize;
  }

  read(offset: number, length: number): Promise<Buffer> {
    return this.gate.run(() => this.checked(offset, length, () => this.next.read(this.start + offset, length)));
  }
  write(offset: number, data: Uint8Array, opts?: WriteOptions): Promise<void> {
    return this.gate.run(() => this.checked(offset, data.length, () => this.next.write(this.start + offset, data, opts)));
  }
  zero(offset: number, length: number, opts?: ZeroOptions): Promise<void> {
    return this.gate.run(() => this.checked(offset, length, () => this.next.zero(this.start + offset, length, opts)));
  }
  trim(offset: number, length: number, opts?: WriteOptions): Promise<void> {
    return this.gate.run(() => this.checked(offset, length, () => this.next.trim(this.start + offset, length, opts)));
  }
  flush(): Promise<void> {
    return this.gate.run(() => this.next.flush());
  }
  extents(offset: number, length: number): Promise<Extent[]> {
    return this.gate.run(() =>
      this.checked(offset, length, async () => (await this.next.extents(this.start + offset, length)).map((e) => ({ ...e, offset: e.offset - this.start }))),
    );
  }
  close(): Promise<void> {
    this.closing ??= (async () => {
      await this.gate.close();
      if (this.closeNext) await this.next.close();
      else await this.next.flush();
    })();
    return this.closing;
  }

  private checked<T>(offset: number, length: number, op: () => Promise<T>): Promise<T> {
    checkRange(offset, length, this.size);
    return op();
  }
}
