/**
 * Reusable buffers for READ replies. Touching freshly allocated memory costs a page fault per 4 KiB, which
 * for large sequential reads costs more than the read itself; recycling buffers once the socket has
 * written them avoids it. Buffers are grouped by power-of-two size (64 KiB .. 32 MiB); at most
 * `maxBytes` of idle buffers are kept.
 *
 * Contract: a buffer given out by `take` must not be used after it is passed to `give`.
 */
export class BufferPool {
  private readonly free = new Map<number, Buffer[]>();
  private idleBytes = 0;

  constructor(private readonly maxBytes = 64 * 1024 * 1024) {}

  private static classOf(length: number): number {
    let size = 64 * 1024;
    while (size < length) size *= 2;
    return size;
  }

  /** A buffer of at least `length` bytes (contents undefined). */
  take(length: number): Buffer {
    const size = BufferPool.classOf(length);
    const list = this.free.get(size);
    const b = list?.pop();
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
