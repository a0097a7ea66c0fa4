/** Granule used to find zeros in data: output stays sparse at this granularity (a file system page). */
export const ZERO_GRANULE = 4096;

const ZEROS = Buffer.alloc(1024 * 1024);

/** True when every byte of buf[start, end) is zero. */
export function isZero(buf: Buffer, start = 0, end = buf.length): boolean {
  for (let pos = start; pos < end; pos += ZEROS.length) {
    const n = Math.min(ZEROS.length, end - pos);
    if (ZEROS.compare(buf, pos, pos + n, 0, n) !== 0) return false;
  }
  return true;
}

/**
 * The runs of `buf` holding non-zero bytes, as [start, end) pairs, at `granule` resolution: a granule
 * (aligned to `base + k * granule` in the caller's address space, so output alignment is stable) is
 * part of a run when any of its bytes is non-zero. Adjacent non-zero granules merge into one run.
 * Pure; costs one memcmp per granule.
 */
export function nonZeroRuns(buf: Buffer, granule = ZERO_GRANULE, base = 0): Array<[number, number]> {
  const runs: Array<[number, number]> = [];
  if (isZero(buf)) return runs;
  let runStart = -1;
  // First granule boundary after `base` in the caller's address space.
  let pos = 0;
  while (pos < buf.length) {
    const next = Math.min(buf.length, pos + granule - ((base + pos) % granule));
    const zero = ZEROS.compare(buf, pos, next, 0, next - pos) === 0;
    if (!zero && runStart < 0) runStart = pos;
    if (zero && runStart >= 0) {
      runs.push([runStart, pos]);
      runStart = -1;
    }
    pos = next;
  }
  if (runStart >= 0) runs.push([runStart, buf.length]);
  return runs;
}
