import type { Extent } from './BlockDevice.js';

/** Append an extent to a list, merging it with the last one when contiguous and of the same type. */
export function pushExtent(list: Extent[], e: Extent): void {
  if (e.length <= 0) return;
  const last = list[list.length - 1];
  if (last && last.type === e.type && last.offset + last.length === e.offset) last.length += e.length;
  else list.push({ ...e });
}
