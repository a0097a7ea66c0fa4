import type { BlockDevice, Extent } from '../blockdev/BlockDevice.js';
import { firstDifference } from './firstDifference.js';
import { isZero } from './nonZeroRuns.js';
import { EXTENT_WINDOW } from './walkExtents.js';

export interface CompareResult {
  /** Same size and the same bytes everywhere. */
  equal: boolean;
  /**
   * Byte offset of the first difference. For disks of different sizes with equal common content it is
   * the smaller size (the first byte one disk has and the other has not).
   */
  firstDifference?: number;
  sizeA: number;
  sizeB: number;
}

export interface CompareOptions {
  /** Bytes per read (default 8 MiB). */
  chunkSize?: number;
  /** Chunk pairs read ahead (default 3). Memory use is about 2 × chunkSize × readAhead. */
  readAhead?: number;
  onProgress?: (done: number, total: number) => void;
}

interface Piece {
  offset: number;
  length: number;
  /** Which sides must be read: a side whose extent is a hole or zero reads as zeros without I/O. */
  readA: boolean;
  readB: boolean;
}

/**
 * Compare two devices byte by byte and find the first difference. Ranges that are holes or zero
 * extents on both sides are skipped without reading; a range that is data on one side only is read
 * on that side and checked for zeros. Reads run ahead (bounded) while earlier chunks are compared.
 */
export async function compareDevices(a: BlockDevice, b: BlockDevice, opts: CompareOptions = {}): Promise<CompareResult> {
  const chunkSize = opts.chunkSize ?? 8 * 1024 * 1024;
  const readAhead = Math.max(1, opts.readAhead ?? 3);
  const common = Math.min(a.size, b.size);
  const total = Math.max(a.size, b.size);
  const result = (first?: number): CompareResult =>
    first === undefined ? { equal: true, sizeA: a.size, sizeB: b.size } : { equal: false, firstDifference: first, sizeA: a.size, sizeB: b.size };

  const queue: Array<{ piece: Piece; data: Promise<[Buffer | null, Buffer | null]> }> = [];
  const fetch = (p: Piece) => ({
    piece: p,
    data: Promise.all([p.readA ? a.read(p.offset, p.length) : null, p.readB ? b.read(p.offset, p.length) : null]),
  });
  // After an early return, reads still in flight are waited for (their errors ignored), so the caller
  // may close the devices as soon as this resolves.
  const drain = () => Promise.allSettled(queue.map((q) => q.data));

  const check = async (): Promise<number | undefined> => {
    const { piece, data } = queue.shift()!;
    const [da, db] = await data;
    let at = -1;
    if (da && db) at = firstDifference(da, db);
    else if (da) at = isZero(da) ? -1 : firstNonZero(da);
    else if (db) at = isZero(db) ? -1 : firstNonZero(db);
    opts.onProgress?.(piece.offset + piece.length, total);
    return at >= 0 ? piece.offset + at : undefined;
  };

  try {
    for await (const piece of pieces(a, b, common, chunkSize)) {
      if (!piece.readA && !piece.readB) {
        // Nothing to read; but earlier queued pieces must be checked first to keep the first difference first.
        while (queue.length > 0) {
          const d = await check();
          if (d !== undefined) return result(d);
        }
        opts.onProgress?.(piece.offset + piece.length, total);
        continue;
      }
      queue.push(fetch(piece));
      while (queue.length > readAhead) {
        const d = await check();
        if (d !== undefined) return result(d);
      }
    }
    while (queue.length > 0) {
      const d = await check();
      if (d !== undefined) return result(d);
    }
  } finally {
    await drain();
  }
  if (a.size !== b.size) return result(common);
  opts.onProgress?.(total, total);
  return result();
}

function firstNonZero(buf: Buffer): number {
  for (let i = 0; i < buf.length; i++) if (buf[i] !== 0) return i;
  return -1;
}

/** Lazily cut [0, end) into pieces by both devices' extents and by chunk boundaries. */
async function* extentPairs(a: BlockDevice, b: BlockDevice, end: number): AsyncGenerator<{ offset: number; length: number; dataA: boolean; dataB: boolean }> {
  for (let pos = 0; pos < end; ) {
    const len = Math.min(EXTENT_WINDOW, end - pos);
    const [ea, eb] = await Promise.all([a.extents(pos, len), b.extents(pos, len)]);
    let i = 0;
    let j = 0;
    let cur = pos;
    while (cur < pos + len) {
      const xa = ea[i] as Extent | undefined;
      const xb = eb[j] as Extent | undefined;
      if (!xa || !xb) throw new Error(`extents of [${pos}, +${len}) do not cover the range`);
      const stop = Math.min(xa.offset + xa.length, xb.offset + xb.length);
      yield { offset: cur, length: stop - cur, dataA: xa.type === 'data', dataB: xb.type === 'data' };
      cur = stop;
      if (xa.offset + xa.length === stop) i++;
      if (xb.offset + xb.length === stop) j++;
    }
    pos += len;
  }
}

async function* pieces(a: BlockDevice, b: BlockDevice, end: number, chunkSize: number): AsyncGenerator<Piece> {
  for await (const r of extentPairs(a, b, end)) {
    if (!r.dataA && !r.dataB) {
      yield { offset: r.offset, length: r.length, readA: false, readB: false };
      continue;
    }
    for (let pos = r.offset; pos < r.offset + r.length; ) {
      const next = Math.min(r.offset + r.length, (Math.floor(pos / chunkSize) + 1) * chunkSize);
      yield { offset: pos, length: next - pos, readA: r.dataA, readB: r.dataB };
      pos = next;
    }
  }
}
