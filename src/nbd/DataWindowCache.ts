/**
 * Remembers which fixed-size windows of an export are entirely allocated data, so a structured READ of a
 * fully allocated disk does not ask the device for extents on every request (SEEK_DATA/SEEK_HOLE per read
 * would otherwise cost as much as the read itself).
 *
 * Only "all data" is cached, because only ZERO and TRIM can turn data into something else: a WRITE can
 * never make an all-data window stale. Safety rule: a zero/trim removes its windows when it starts and
 * again when it ends, and bumps a generation both times; a lookup result is stored only if no zero/trim
 * started or ended while it ran. So once a zero/trim has been answered, no later READ can see a cached
 * "data" for its range (and reading zeros as data is still correct, only slower).
 *
 * One cache per export, shared by all its connections (they share the device).
 */
export class DataWindowCache {
  private readonly windows = new Set<number>();
  private generation = 0;

  constructor(readonly windowSize = 4 * 1024 * 1024) {}

  /** True when every window touching [offset, offset+length) is known to be all data. */
  isAllData(offset: number, length: number): boolean {
    if (length === 0) return false;
    const first = Math.floor(offset / this.windowSize);
    const last = Math.floor((offset + length - 1) / this.windowSize);
    for (let w = first; w <= last; w++) if (!this.windows.has(w)) return false;
    return true;
  }

  /** The window-aligned span around [offset, offset+length), clipped to `size`: what to look up. */
  span(offset: number, length: number, size: number): { offset: number; length: number } {
    const start = Math.floor(offset / this.windowSize) * this.windowSize;
    const end = Math.min(size, Math.ceil((offset + length) / this.windowSize) * this.windowSize);
    return { offset: start, length: end - start };
  }

  /** Take a token before an extents lookup; pass it to `store` with the result. */
  token(): number {
    return this.generation;
  }

  /** Record that [offset, offset+length) (window-aligned, or ending at the export end) is all data. */
  store(token: number, offset: number, length: number, size: number): void {
    if (token !== this.generation) return;
    const first = Math.floor(offset / this.windowSize);
    const endW = offset + length >= size ? Math.ceil(size / this.windowSize) : Math.floor((offset + length) / this.windowSize);
    if (offset % this.windowSize !== 0) return;
    for (let w = first; w < endW; w++) this.windows.add(w);
  }

  /** Call at the start and at the end of every zero/trim of [offset, offset+length). */
  invalidate(offset: number, length: number): void {
    this.generation++;
    if (length === 0 || this.windows.size === 0) return;
    const first = Math.floor(offset / this.windowSize);
    const last = Math.floor((offset + length - 1) / this.windowSize);
    if (last - first > this.windows.size) {
      for (const w of this.windows) if (w >= first && w <= last) this.windows.delete(w);
    } else {
      for (let w = first; w <= last; w++) this.windows.delete(w);
    }
  }
}
