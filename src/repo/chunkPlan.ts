/**
 * Which chunks a backup must read: pure helpers turning byte ranges (changed ranges from RCT, data
 * extents) into sorted, merged chunk-number intervals.
 */
import { DiskMismatchError } from './errors.js';

/** Half-open chunk interval [start, end). */
export interface ChunkInterval {
  start: number;
  end: number;
}

/**
 * The chunks overlapping any of `ranges` (bytes), as sorted disjoint intervals. Throws
 * DiskMismatchError for a range outside the disk.
 */
export function chunksCovering(ranges: ReadonlyArray<{ offset: number; length: number }>, size: number, chunkSize: number): ChunkInterval[] {
  const iv: ChunkInterval[] = [];
  for (const r of ranges) {
    if (!Number.isSafeInteger(r.offset) || !Number.isSafeInteger(r.length) || r.offset < 0 || r.length < 0 || r.offset + r.length > size) {
      throw new DiskMismatchError(`changed range [${r.offset}, +${r.length}) is outside the disk (size ${size}); the change list does not belong to this disk`, { offset: r.offset, length: r.length, size });
    }
    if (r.length === 0) continue;
    iv.push({ start: Math.floor(r.offset / chunkSize), end: Math.ceil((r.offset + r.length) / chunkSize) });
  }
  iv.sort((a, b) => a.start - b.start);
  const out: ChunkInterval[] = [];
  for (const x of iv) {
    const last = out[out.length - 1];
    if (last && x.start <= last.end) last.end = Math.max(last.end, x.end);
    else out.push({ ...x });
  }
  return out;
}

export function* chunkIndexes(intervals: ReadonlyArray<ChunkInterval>): Generator<number> {
  for (const iv of intervals) for (let i = iv.start; i < iv.end; i++) yield i;
}

export function intervalsLength(intervals: ReadonlyArray<ChunkInterval>): number {
  return intervals.reduce((n, iv) => n + iv.end - iv.start, 0);
}

/**
 * The intervals cut into read units of at most `maxChunks` chunks: a backup reads each unit with one
 * read (an RCT-changed 64 KiB write spans 2-3 chunks: one read, not three; a full backup reads 1 MiB
 * at a time instead of 32 KiB).
 */
export function* readUnits(intervals: ReadonlyArray<ChunkInterval>, maxChunks: number): Generator<ChunkInterval> {
  const n = Math.max(1, Math.floor(maxChunks));
  for (const iv of intervals) for (let s = iv.start; s < iv.end; s += n) yield { start: s, end: Math.min(iv.end, s + n) };
}
