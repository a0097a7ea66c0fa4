import { METADATA_TABLE_SIZE } from './constants.js';
import { guidEq } from './guid.js';
import type { MetadataEntry } from './MetadataTable.js';

/**
 * Pure: where a system metadata item of `length` bytes goes when its content is replaced (relinkVhdx
 * rewrites the parent locator). Returns the new table entries, same order and flags, with the item's
 * offset and length changed:
 * - in place when the new bytes fit between the item's offset and the next item (or the region end);
 * - otherwise at the first gap of the region (after the 64 KiB table) that holds them.
 * Items never overlap afterwards. Throws RangeError when the item is absent or no gap is large enough.
 */
export function placeMetadataItem(entries: MetadataEntry[], regionLength: number, itemId: string, length: number): MetadataEntry[] {
  const i = entries.findIndex((e) => !e.isUser && guidEq(e.itemId, itemId));
  if (i < 0) throw new RangeError(`metadata item {${itemId}} is not in the table`);
  if (!Number.isInteger(length) || length <= 0) throw new RangeError(`metadata item length ${length} must be positive`);
  const others = entries.filter((e, j) => j !== i && e.length > 0).sort((a, b) => a.offset - b.offset);
  const endOfGapAt = (start: number): number => Math.min(regionLength, ...others.filter((o) => o.offset >= start).map((o) => o.offset));
  const overlapsOther = (start: number): boolean => others.some((o) => start < o.offset + o.length && o.offset < start + length);
  const old = entries[i]!;
  let offset: number | undefined;
  if (old.length > 0 && !overlapsOther(old.offset) && old.offset + length <= endOfGapAt(old.offset)) offset = old.offset;
  else {
    for (const start of [METADATA_TABLE_SIZE, ...others.map((o) => o.offset + o.length)].sort((a, b) => a - b)) {
      if (start < METADATA_TABLE_SIZE || overlapsOther(start)) continue;
      if (start + length <= endOfGapAt(start)) {
        offset = start;
        break;
      }
    }
  }
  if (offset === undefined) throw new RangeError(`no room for ${length} bytes of metadata item {${itemId}} in a ${regionLength}-byte metadata region`);
  return entries.map((e, j) => (j === i ? { ...e, offset, length } : { ...e }));
}
