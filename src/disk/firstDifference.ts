/**
 * Index of the first byte where `a` and `b` differ within their common length, or -1 when equal there.
 * Pure; uses memcmp on large slices and only looks at single bytes inside the first differing slice.
 */
export function firstDifference(a: Buffer, b: Buffer): number {
  const n = Math.min(a.length, b.length);
  if (a.compare(b, 0, n, 0, n) === 0) return -1;
  let lo = 0;
  let step = 64 * 1024;
  // Narrow down: find the first differing slice at decreasing slice sizes.
  while (step >= 64) {
    while (lo < n) {
      const end = Math.min(n, lo + step);
      if (a.compare(b, lo, end, lo, end) !== 0) break;
      lo = end;
    }
    step >>= 4;
  }
  for (let i = lo; i < n; i++) if (a[i] !== b[i]) return i;
  return -1; // unreachable: the whole-range compare said they differ
}
