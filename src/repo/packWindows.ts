/**
 * packWindows: blobs to read, cut into *windows* that one ranged read of a pack each covers. Pure.
 *
 * The items are sorted by (pack, offset); a window holds blobs of one pack, in order, each starting at
 * or after the end of the one before (a blob listed twice starts a new window), at most `gap` bytes
 * apart, spanning at most `span` bytes from the first blob's start to the last one's end (a single
 * larger blob is a window of its own), and at most `maxBlobs` blobs. Restore reads chunk windows
 * this way, an incremental's index-page prefetch (Repository.getIndexPages) page windows.
 */
import type { BlobLocation } from './PackStore.js';

export interface WindowLimits {
  gap: number;
  span: number;
  maxBlobs?: number;
}

export function packWindows<T>(items: readonly T[], locOf: (item: T) => BlobLocation, limits: WindowLimits): T[][] {
  const sorted = [...items].sort((x, y) => {
    const a = locOf(x);
    const b = locOf(y);
    return a.pack < b.pack ? -1 : a.pack > b.pack ? 1 : a.offset - b.offset;
  });
  const maxBlobs = limits.maxBlobs ?? Infinity;
  const out: T[][] = [];
  let win: T[] = [];
  for (const item of sorted) {
    const loc = locOf(item);
    if (win.length > 0) {
      const first = locOf(win[0]);
      const prev = locOf(win[win.length - 1]);
      const prevEnd = prev.offset + prev.length;
      if (loc.pack !== first.pack || loc.offset < prevEnd || loc.offset - prevEnd > limits.gap || loc.offset + loc.length - first.offset > limits.span || win.length >= maxBlobs) {
        out.push(win);
        win = [];
      }
    }
    win.push(item);
  }
  if (win.length > 0) out.push(win);
  return out;
}
