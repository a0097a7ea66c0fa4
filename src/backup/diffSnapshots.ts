/**
 * diffSnapshots: which byte ranges differ between two restore points of a disk, from their index
 * trees alone (no chunk is read). Identical subtrees (same digest) are skipped, so the cost is
 * proportional to the pages that changed.
 */
import type { Range } from '../rct/Range.js';
import { ZERO_DIGEST } from '../repo/constants.js';
import { readIndexPage, treeDepth } from '../repo/IndexTree.js';
import type { DiskEntry } from '../repo/Manifest.js';
import type { Repository } from '../repo/Repository.js';
import { UsageError } from '../errors.js';

export interface SnapshotDiff {
  /** Differing byte ranges (whole chunks, clipped to the larger size), ascending, merged. */
  ranges: Range[];
  changedBytes: number;
  changedChunks: number;
  sizeA: number;
  sizeB: number;
}

export async function diffDisks(repo: Repository, a: DiskEntry, b: DiskEntry): Promise<SnapshotDiff> {
  if (a.chunkSize !== b.chunkSize || a.fanout !== b.fanout) {
    throw new UsageError(`the two disks were backed up with different chunk sizes or fanouts (${a.chunkSize}/${a.fanout} vs ${b.chunkSize}/${b.fanout}); their indexes cannot be compared`);
  }
  const cs = a.chunkSize;
  const F = a.fanout;
  const size = Math.max(a.size, b.size);
  const da = treeDepth(a);
  const db = treeDepth(b);
  const ranges: Range[] = [];
  let chunks = 0;
  const mark = (i: number): void => {
    chunks++;
    const off = i * cs;
    const len = Math.min(cs, size - off);
    const last = ranges[ranges.length - 1];
    if (last && last.offset + last.length === off) last.length += len;
    else ranges.push({ offset: off, length: len });
  };
  // A page of level L has F entries, each covering F^L chunks (level 0: chunk digests). A node above a
  // tree's depth stands for a virtual page whose slot 0 holds the real root (the rest zero).
  const entriesOf = async (d: string, level: number, depth: number): Promise<string[]> => {
    if (level > depth) return [d];
    return readIndexPage(repo, d, level, F);
  };
  const walk = async (x: string, y: string, level: number, first: number): Promise<void> => {
    if (x === y) return; // same page (or both all-zero): nothing differs below
    const [ex, ey] = await Promise.all([entriesOf(x, level, da), entriesOf(y, level, db)]);
    const span = F ** level;
    for (let s = 0; s < F; s++) {
      const nx = ex[s] ?? ZERO_DIGEST;
      const ny = ey[s] ?? ZERO_DIGEST;
      if (nx === ny) continue;
      const start = first + s * span;
      if (start * cs >= size) break;
      if (level === 0) mark(start);
      else await walk(nx, ny, level - 1, start);
    }
  };
  await walk(a.indexRoot, b.indexRoot, Math.max(da, db), 0);
  return { ranges, changedBytes: ranges.reduce((n, r) => n + r.length, 0), changedChunks: chunks, sizeA: a.size, sizeB: b.size };
}
