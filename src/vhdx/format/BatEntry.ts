import { MiB } from './constants.js';

/**
 * A BAT entry (u64 LE): bits 0-2 State, bits 3-19 reserved (0), bits 20-63 FileOffsetMB.
 * Decoded without BigInt: the offset in MiB is hi32 * 2^12 + (lo32 >>> 20).
 */
export interface BatEntry {
  state: number;
  /** Byte offset in the file (a multiple of 1 MiB), 0 when none. */
  fileOffset: number;
}

export const BAT_ENTRY_SIZE = 8;

export function batEntryFromBuffer(b: Buffer, at: number): BatEntry {
  const lo = b.readUInt32LE(at);
  const hi = b.readUInt32LE(at + 4);
  const mb = hi * 4096 + (lo >>> 20);
  return { state: lo & 7, fileOffset: mb * MiB };
}

/** Raw reserved bits 3-19 (must be zero). */
export function batEntryReserved(b: Buffer, at: number): number {
  return (b.readUInt32LE(at) >>> 3) & 0x1ffff;
}

export function batEntryToBuffer(e: BatEntry, b: Buffer = Buffer.alloc(8), at = 0): Buffer {
  if (e.fileOffset % MiB !== 0 || e.fileOffset < 0 || !Number.isSafeInteger(e.fileOffset)) throw new RangeError(`BAT file offset ${e.fileOffset} is not a multiple of 1 MiB`);
  const mb = e.fileOffset / MiB;
  const lo = ((mb % 4096) * 2 ** 20 + (e.state & 7)) >>> 0;
  const hi = Math.floor(mb / 4096);
  b.writeUInt32LE(lo, at);
  b.writeUInt32LE(hi, at + 4);
  return b;
}
