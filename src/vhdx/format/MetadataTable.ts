import { CorruptError, VhdxUnsupportedError } from '../errors.js';
import {
  META_FILE_PARAMETERS, META_FLAG_IS_REQUIRED, META_FLAG_IS_USER, META_FLAG_IS_VIRTUAL_DISK, META_LOGICAL_SECTOR_SIZE,
  META_PAGE83, META_PARENT_LOCATOR, META_PHYSICAL_SECTOR_SIZE, META_VIRTUAL_DISK_SIZE, METADATA_MAX_ENTRIES,
  METADATA_TABLE_SIZE, MiB, SIG_METADATA,
} from './constants.js';
import { guidEq, guidFromBuffer, guidToBuffer } from './guid.js';

/**
 * The metadata table: the first 64 KiB of the metadata region.
 *   0 "metadata" | 8 u16 reserved | 10 u16 EntryCount (<= 2047) | 12 20 bytes reserved
 *   then entries of 32 bytes: 0 ItemId | 16 u32 Offset (from region start, >= 64 KiB; 0 iff Length 0)
 *   20 u32 Length (<= 1 MiB) | 24 u32 flags (bit0 IsUser, bit1 IsVirtualDisk, bit2 IsRequired) | 28 u32 reserved
 */
export interface MetadataEntry {
  itemId: string;
  offset: number;
  length: number;
  isUser: boolean;
  isVirtualDisk: boolean;
  isRequired: boolean;
}

export const KNOWN_METADATA = [
  META_FILE_PARAMETERS, META_VIRTUAL_DISK_SIZE, META_PAGE83, META_LOGICAL_SECTOR_SIZE, META_PHYSICAL_SECTOR_SIZE, META_PARENT_LOCATOR,
];

export function metadataTableToBuffer(entries: MetadataEntry[]): Buffer {
  if (entries.length > METADATA_MAX_ENTRIES) throw new RangeError('too many metadata entries');
  const b = Buffer.alloc(METADATA_TABLE_SIZE);
  b.write(SIG_METADATA, 0, 'latin1');
  b.writeUInt16LE(entries.length, 10);
  entries.forEach((e, i) => {
    const o = 32 + i * 32;
    guidToBuffer(e.itemId).copy(b, o);
    b.writeUInt32LE(e.offset, o + 16);
    b.writeUInt32LE(e.length, o + 20);
    b.writeUInt32LE((e.isUser ? META_FLAG_IS_USER : 0) | (e.isVirtualDisk ? META_FLAG_IS_VIRTUAL_DISK : 0) | (e.isRequired ? META_FLAG_IS_REQUIRED : 0), o + 24);
  });
  return b;
}

/** Decode and validate the table; `regionLength` bounds item offsets. */
export function metadataTableFromBuffer(buf: Buffer, regionLength: number, file = 'vhdx'): MetadataEntry[] {
  const structure = 'metadata table';
  if (buf.length < METADATA_TABLE_SIZE) throw new CorruptError(file, structure, 'truncated');
  if (buf.toString('latin1', 0, 8) !== SIG_METADATA) throw new CorruptError(file, structure, 'bad signature (expected "metadata")');
  const count = buf.readUInt16LE(10);
  if (count > METADATA_MAX_ENTRIES) throw new CorruptError(file, structure, `entry count ${count} exceeds ${METADATA_MAX_ENTRIES}`);
  const out: MetadataEntry[] = [];
  for (let i = 0; i < count; i++) {
    const o = 32 + i * 32;
    const flags = buf.readUInt32LE(o + 24);
    const e: MetadataEntry = {
      itemId: guidFromBuffer(buf, o),
      offset: buf.readUInt32LE(o + 16),
      length: buf.readUInt32LE(o + 20),
      isUser: (flags & META_FLAG_IS_USER) !== 0,
      isVirtualDisk: (flags & META_FLAG_IS_VIRTUAL_DISK) !== 0,
      isRequired: (flags & META_FLAG_IS_REQUIRED) !== 0,
    };
    const name = `metadata entry ${i} {${e.itemId}}`;
    if (e.length > MiB) throw new CorruptError(file, name, `length ${e.length} exceeds 1 MiB`);
    if (e.length === 0 ? e.offset !== 0 : e.offset < METADATA_TABLE_SIZE) throw new CorruptError(file, name, `offset ${e.offset} lies inside the metadata table`);
    if (e.offset + e.length > regionLength) throw new CorruptError(file, name, `item [${e.offset}, +${e.length}) runs past the metadata region (${regionLength} bytes)`);
    for (const [j, other] of out.entries()) {
      if (guidEq(other.itemId, e.itemId) && other.isUser === e.isUser) throw new CorruptError(file, name, `duplicates entry ${j}`);
      if (e.length > 0 && other.length > 0 && e.offset < other.offset + other.length && other.offset < e.offset + e.length) {
        throw new CorruptError(file, name, `overlaps entry ${j}`);
      }
    }
    if (e.isRequired && !e.isUser && !KNOWN_METADATA.some((k) => guidEq(k, e.itemId))) {
      throw new VhdxUnsupportedError(file, `required metadata item {${e.itemId}}`);
    }
    out.push(e);
  }
  return out;
}
