/**
 * Reusable buffers for READ replies and WRITE payloads. Touching freshly allocated memory costs a page
 * fault per 4 KiB, which for large sequential I/O costs more than the I/O itself; recycling buffers once
 * they are no longer used avoids it. Buffers come in size classes of a power of two (64 KiB .. 32 MiB)
 * plus `HEADROOM` bytes, so a reply header fits in front of a power-of-two data length without doubling
 * the buffer; at most `maxBytes` of idle buffers are kept.
 *
 * Contract: a buffer given out by `take` must not be used after it is passed to `give`. Contents of a
 * taken buffer are whatever its last user left: callers overwrite every byte they send.
 */
export class BufferPool {
  /** Spare bytes on top of each power-of-two class (room for a reply header before the data). */
  static readonly HEADROOM = 64;
  private readonly free = new Map<number, Buffer[]>();
  private idleBytes = 0;

  constructor(private readonly maxBytes = 64 * 1024 * 1024) {}

  private static classOf(length: number): number {
    let size = 64 * 1024;
    while (size + BufferPool.HEADROOM < length) size *= 2;
    return size + BufferPool.HEADROOM;
  }

  /** A buffer of at least `length` bytes (contents undefined). */
  take(length: number): Buffer {
    const size = BufferPool.classOf(length);
    const b = this.free.get(size)?.pop();
    if (b) {
      this.idleBytes -= b.length;
      return b;
    }
    return Buffer.allocUnsafeSlow(size);
  }

  /** Return a buffer obtained from `take`. */
  give(b: Buffer): void {
    if (this.idleBytes + b.length > this.maxBytes) return;
    let list = this.free.get(b.length);
    if (!list) this.free.set(b.length, (list = []));
    list.push(b);
    this.idleBytes += b.length;
  }

  /** Bytes held idle (for tests). */
  get idle(): number {
    return this.idleBytes;
  }
}
