import { CorruptError, VhdxUnsupportedError } from '../errors.js';
import { vhdxChecksum, sealChecksum } from './checksum.js';
import { HEADER_SECTION_SIZE, MiB, REGION_BAT, REGION_METADATA, REGION_REQUIRED, REGION_TABLE_SIZE, SIG_REGION } from './constants.js';
import { guidEq, guidFromBuffer, guidToBuffer } from './guid.js';

/**
 * The region table (two identical copies at 192 KiB and 256 KiB), checksummed over 64 KiB:
 *   0 "regi" | 4 crc32c | 8 u32 EntryCount (<= 2047) | 12 u32 reserved
 *   then EntryCount entries of 32 bytes: 0 Guid | 16 u64 FileOffset | 24 u32 Length | 28 u32 flags (bit 0 Required)
 * FileOffset and Length are multiples of 1 MiB; regions lie past the header section and never overlap.
 */
export interface RegionEntry {
  guid: string;
  fileOffset: number;
  length: number;
  required: boolean;
}

export interface RegionTable {
  entries: RegionEntry[];
}

export const MAX_REGION_ENTRIES = 2047;

export function regionTableToBuffer(t: RegionTable): Buffer {
  if (t.entries.length > MAX_REGION_ENTRIES) throw new RangeError('too many region table entries');
  const b = Buffer.alloc(REGION_TABLE_SIZE);
  b.write(SIG_REGION, 0, 'latin1');
  b.writeUInt32LE(t.entries.length, 8);
  t.entries.forEach((e, i) => {
    const o = 16 + i * 32;
    guidToBuffer(e.guid).copy(b, o);
    b.writeBigUInt64LE(BigInt(e.fileOffset), o + 16);
    b.writeUInt32LE(e.length, o + 24);
    b.writeUInt32LE(e.required ? REGION_REQUIRED : 0, o + 28);
  });
  sealChecksum(b, 4);
  return b;
}

/** Decode and validate a region table copy (signature, checksum, count, alignment, overlaps, required regions). */
export function regionTableFromBuffer(buf: Buffer, file = 'vhdx', structure = 'region table'): RegionTable {
  if (buf.length < REGION_TABLE_SIZE) throw new CorruptError(file, structure, 'truncated');
  const b = Buffer.from(buf.subarray(0, REGION_TABLE_SIZE));
  if (b.toString('latin1', 0, 4) !== SIG_REGION) throw new CorruptError(file, structure, 'bad signature (expected "regi")');
  if (vhdxChecksum(b, 4) !== b.readUInt32LE(4)) throw new CorruptError(file, structure, 'checksum mismatch');
  const count = b.readUInt32LE(8);
  if (count > MAX_REGION_ENTRIES) throw new CorruptError(file, structure, `entry count ${count} exceeds ${MAX_REGION_ENTRIES}`);
  const entries: RegionEntry[] = [];
  for (let i = 0; i < count; i++) {
    const o = 16 + i * 32;
    const off = b.readBigUInt64LE(o + 16);
    const e: RegionEntry = {
      guid: guidFromBuffer(b, o),
      fileOffset: Number(off),
      length: b.readUInt32LE(o + 24),
      required: (b.readUInt32LE(o + 28) & REGION_REQUIRED) !== 0,
    };
    const name = `${structure} entry ${i}`;
    if (off > BigInt(Number.MAX_SAFE_INTEGER)) throw new CorruptError(file, name, 'file offset out of range');
    if (e.fileOffset % MiB !== 0 || e.fileOffset < HEADER_SECTION_SIZE) throw new CorruptError(file, name, `file offset ${e.fileOffset} is not a multiple of 1 MiB past the header section`);
    if (e.length === 0 || e.length % MiB !== 0) throw new CorruptError(file, name, `length ${e.length} is not a positive multiple of 1 MiB`);
    for (const [j, other] of entries.entries()) {
      if (e.fileOffset < other.fileOffset + other.length && other.fileOffset < e.fileOffset + e.length) {
        throw new CorruptError(file, name, `overlaps entry ${j}`);
      }
      if (guidEq(e.guid, other.guid)) throw new CorruptError(file, name, `duplicate region {${e.guid}}`);
    }
    const known = guidEq(e.guid, REGION_BAT) || guidEq(e.guid, REGION_METADATA);
    if (!known && e.required) throw new VhdxUnsupportedError(file, `required region {${e.guid}} in the ${structure}`);
    entries.push(e);
  }
  if (!entries.some((e) => guidEq(e.guid, REGION_BAT))) throw new CorruptError(file, structure, 'no BAT region');
  if (!entries.some((e) => guidEq(e.guid, REGION_METADATA))) throw new CorruptError(file, structure, 'no metadata region');
  return { entries };
}

export function findRegion(t: RegionTable, guid: string): RegionEntry {
  const e = t.entries.find((r) => guidEq(r.guid, guid));
  if (!e) throw new Error(`region {${guid}} missing`);
  return e;
}
