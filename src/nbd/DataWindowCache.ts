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
import type { Extent } from '../blockdev/BlockDevice.js';

export class DataWindowCache {
  private readonly windows = new Set<number>();
  private generation = 0;
  /** Lookups in flight by span start: concurrent reads of one window share one extents call. */
  private readonly pending = new Map<number, { since: number; p: Promise<Extent[]> }>();
  /** Counts completed writes: a lookup that began before a write completed must not answer later reads. */
  private writes = 0;

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

  /**
   * The extents of the window-aligned span around [offset, offset+length), from `lookup` (called at most
   * once at a time per span); records the span as all data when it is. The result covers the span.
   */
  async spanExtents(offset: number, length: number, size: number, lookup: (offset: number, length: number) => Promise<Extent[]>): Promise<Extent[]> {
    const span = this.span(offset, length, size);
    const key = span.offset * 2 + (span.length === this.windowSize ? 0 : 1);
    const shared = this.pending.get(key);
    // Join a lookup only if no write or zero completed since it began: otherwise it may predate data the
    // client has already been told is written.
    if (shared && shared.since === this.writes + this.generation) return shared.p;
    const token = this.token();
    const since = this.writes + this.generation;
    const p = lookup(span.offset, span.length).then((ext) => {
      if (ext.length === 1 && ext[0]!.type === 'data') this.store(token, span.offset, span.length, size);
      return ext;
    });
    const entry = { since, p };
    const done = (): void => {
      if (this.pending.get(key) === entry) this.pending.delete(key);
    };
    p.then(done, done);
    this.pending.set(key, entry);
    return p;
  }

  /** Call when a write completes (before it is answered). */
  writeDone(): void {
    this.writes++;
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
