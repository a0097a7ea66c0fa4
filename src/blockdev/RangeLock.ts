/**
 * A FIFO lock over byte ranges: `acquire(start, end)` resolves once every earlier holder or waiter of an
 * overlapping range has released. Non-overlapping ranges never wait for each other. Used to make
 * multi-step changes (read-modify-write, copy-up, metadata + data) to one range serial, so overlapping
 * concurrent writes land whole, in arrival order. Deadlock-free: an entry only waits for earlier ones.
 */
export class RangeLock {
  private entries: Array<{ start: number; end: number; done: Promise<void> }> = [];

  /** Wait for [start, end) and return its release function (call it exactly once, in a finally). */
  async acquire(start: number, end: number): Promise<() => void> {
    const earlier = this.entries.filter((e) => e.start < end && start < e.end).map((e) => e.done);
    let release!: () => void;
    const entry = { start, end, done: new Promise<void>((resolve) => (release = resolve)) };
    this.entries.push(entry);
    await Promise.all(earlier);
    return () => {
      this.entries = this.entries.filter((e) => e !== entry);
      release();
    };
  }

  /** Run `op` holding [start, end). */
  async with<T>(start: number, end: number, op: () => Promise<T>): Promise<T> {
    const release = await this.acquire(start, end);
    try {
      return await op();
    } finally {
      release();
    }
  }
}
