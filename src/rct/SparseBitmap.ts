import { PAGE_BITS, PAGE_BYTES } from './constants.js';

/**
 * A bitmap over up to 2^53 bits, stored as 4 KiB pages allocated on first set. Pure, no I/O.
 * Bit i stands for fine block i. Memory: PAGE_BYTES per touched page (+ map overhead).
 */
export class SparseBitmap {
  private pages = new Map<number, Uint8Array>();

  /** Set bits [first, end). */
  setRange(first: number, end: number): void {
    let bit = first;
    while (bit < end) {
      const pi = Math.floor(bit / PAGE_BITS);
      const pageStart = pi * PAGE_BITS;
      const stop = Math.min(end, pageStart + PAGE_BITS);
      let page = this.pages.get(pi);
      if (!page) {
        page = new Uint8Array(PAGE_BYTES);
        this.pages.set(pi, page);
      }
      let i = bit - pageStart;
      const iend = stop - pageStart;
      // leading bits up to a byte boundary, whole bytes, trailing bits
      while (i < iend && (i & 7) !== 0) { page[i >> 3]! |= 1 << (i & 7); i++; }
      if (iend - i >= 8) {
        const b0 = i >> 3;
        const b1 = iend >> 3;
        page.fill(0xff, b0, b1);
        i = b1 << 3;
      }
      while (i < iend) { page[i >> 3]! |= 1 << (i & 7); i++; }
      bit = stop;
    }
  }

  get(bit: number): boolean {
    const page = this.pages.get(Math.floor(bit / PAGE_BITS));
    if (!page) return false;
    const i = bit % PAGE_BITS;
    return (page[i >> 3]! & (1 << (i & 7))) !== 0;
  }

  /** this |= other. */
  orWith(other: SparseBitmap): void {
    for (const [pi, src] of other.pages) {
      const dst = this.pages.get(pi);
      if (!dst) this.pages.set(pi, Uint8Array.from(src));
      else for (let i = 0; i < PAGE_BYTES; i++) dst[i]! |= src[i]!;
    }
  }

  /** Drop every bit at or beyond `end` (used when sizes are clipped). */
  clearFrom(end: number): void {
    for (const [pi, page] of this.pages) {
      const start = pi * PAGE_BITS;
      if (start >= end) this.pages.delete(pi);
      else if (start + PAGE_BITS > end) for (let b = end - start; b < PAGE_BITS; b++) page[b >> 3]! &= ~(1 << (b & 7));
    }
  }

  /**
   * Runs of set bits within [from, to), in order, as [start, end) pairs, across all `maps` OR-ed together
   * (so a query over several generations never materialises their union).
   */
  static runs(maps: readonly SparseBitmap[], from: number, to: number): Array<[number, number]> {
    const out: Array<[number, number]> = [];
    if (to <= from || maps.length === 0) return out;
    const pageIdx = new Set<number>();
    const firstPage = Math.floor(from / PAGE_BITS);
    const lastPage = Math.floor((to - 1) / PAGE_BITS);
    for (const m of maps) {
      if (lastPage - firstPage + 1 <= m.pages.size) { for (let p = firstPage; p <= lastPage; p++) if (m.pages.has(p)) pageIdx.add(p); }
      else for (const p of m.pages.keys()) if (p >= firstPage && p <= lastPage) pageIdx.add(p);
    }
    const sorted = [...pageIdx].sort((a, b) => a - b);
    const merged = new Uint8Array(PAGE_BYTES);
    let runStart = -1;
    let runEnd = -1;
    const push = (s: number, e: number) => {
      if (runEnd === s) runEnd = e;
      else {
        if (runStart >= 0) out.push([runStart, runEnd]);
        runStart = s;
        runEnd = e;
      }
    };
    for (const pi of sorted) {
      merged.fill(0);
      for (const m of maps) {
        const p = m.pages.get(pi);
        if (p) for (let i = 0; i < PAGE_BYTES; i++) merged[i]! |= p[i]!;
      }
      const base = pi * PAGE_BITS;
      const lo = Math.max(from, base) - base;
      const hi = Math.min(to, base + PAGE_BITS) - base;
      let i = lo;
      while (i < hi) {
        const byte = merged[i >> 3]!;
        if ((i & 7) === 0 && i + 8 <= hi && (byte === 0 || byte === 0xff)) {
          if (byte === 0xff) push(base + i, base + i + 8);
          i += 8;
          continue;
        }
        if (byte & (1 << (i & 7))) push(base + i, base + i + 1);
        i++;
      }
    }
    if (runStart >= 0) out.push([runStart, runEnd]);
    return out;
  }

  isEmpty(): boolean {
    return this.pages.size === 0;
  }

  /** Bytes of page storage in use. */
  get memoryBytes(): number {
    return this.pages.size * PAGE_BYTES;
  }

  /** Pages in index order (for the .rct codec); the arrays are the live pages, not copies. */
  pageEntries(): Array<[number, Uint8Array]> {
    return [...this.pages.entries()].sort((a, b) => a[0] - b[0]);
  }

  static fromPages(entries: Iterable<[number, Uint8Array]>): SparseBitmap {
    const b = new SparseBitmap();
    for (const [pi, page] of entries) if (page.some((x) => x !== 0)) b.pages.set(pi, Uint8Array.from(page));
    return b;
  }
}
