import { crc32c } from '@node-rs/crc32';
import { CorruptError } from '../errors.js';
import { MRT_HEADER_SIZE, MRT_MAGIC, MRT_SLOT_ALIGN, MRT_VERSION } from './constants.js';

/** One slot of a `.mrt` file: which coarse regions may have been written since the .rct epoch began. */
export interface MrtSlot {
  tracker: string;
  seq: number;
  regionSize: number;
  regionCount: number;
  /** One bit per region, LSB first; length ceil(regionCount / 8). */
  bits: Uint8Array;
}

/** Slot size for a region count: header + bitmap, rounded up to 4096 bytes (whole sectors). */
export function mrtSlotSize(regionCount: number): number {
  return Math.ceil((MRT_HEADER_SIZE + Math.ceil(regionCount / 8)) / MRT_SLOT_ALIGN) * MRT_SLOT_ALIGN;
}

/** Encode one slot (layout: docs/design.md (rct section)). */
export function encodeMrtSlot(s: MrtSlot): Buffer {
  const size = mrtSlotSize(s.regionCount);
  const out = Buffer.alloc(size);
  out.write(MRT_MAGIC, 0, 'latin1');
  out.writeUInt32LE(MRT_VERSION, 8);
  out.writeUInt32LE(MRT_HEADER_SIZE, 12);
  Buffer.from(s.tracker, 'hex').copy(out, 16);
  out.writeBigUInt64LE(BigInt(s.seq), 32);
  out.writeBigUInt64LE(BigInt(s.regionSize), 40);
  out.writeUInt32LE(s.regionCount, 48);
  out.writeUInt32LE(size, 52);
  Buffer.from(s.bits.buffer, s.bits.byteOffset, Math.ceil(s.regionCount / 8)).copy(out, MRT_HEADER_SIZE);
  out.writeUInt32LE(crc32c(out), 56);
  return out;
}

/** Decode one slot; returns an Error describing why it is invalid instead of throwing. */
function tryDecodeSlot(buf: Buffer): MrtSlot | string {
  if (buf.length < MRT_HEADER_SIZE) return 'too short';
  if (buf.toString('latin1', 0, 8) !== MRT_MAGIC) return 'bad signature';
  if (buf.readUInt32LE(8) !== MRT_VERSION) return `unsupported version ${buf.readUInt32LE(8)}`;
  if (buf.readUInt32LE(12) !== MRT_HEADER_SIZE) return 'bad header size';
  const regionCount = buf.readUInt32LE(48);
  const size = buf.readUInt32LE(52);
  if (size !== buf.length || size !== mrtSlotSize(regionCount)) return `slot size ${size} does not match ${regionCount} regions`;
  const stored = buf.readUInt32LE(56);
  const copy = Buffer.from(buf);
  copy.writeUInt32LE(0, 56);
  if (crc32c(copy) !== stored) return 'checksum mismatch';
  const seq = buf.readBigUInt64LE(32);
  const regionSize = buf.readBigUInt64LE(40);
  if (seq > BigInt(Number.MAX_SAFE_INTEGER) || regionSize > BigInt(Number.MAX_SAFE_INTEGER) || regionSize === 0n) return 'impossible sequence or region size';
  return {
    tracker: buf.toString('hex', 16, 32),
    seq: Number(seq),
    regionSize: Number(regionSize),
    regionCount,
    bits: new Uint8Array(buf.subarray(MRT_HEADER_SIZE, MRT_HEADER_SIZE + Math.ceil(regionCount / 8))),
  };
}

/**
 * Decode a `.mrt` file: two equal slots; the valid one with the higher sequence wins. A torn or
 * corrupt slot is ignored when the other is valid (that is what the double buffer is for). Throws
 * CorruptError when neither slot is valid.
 */
export function decodeMrt(buf: Buffer, file: string): MrtSlot {
  if (buf.length === 0 || buf.length % (2 * MRT_SLOT_ALIGN) !== 0) throw new CorruptError(file, 'mrt file', `length ${buf.length} is not two whole slots`);
  const half = buf.length / 2;
  const a = tryDecodeSlot(buf.subarray(0, half));
  const b = tryDecodeSlot(buf.subarray(half));
  if (typeof a === 'string' && typeof b === 'string') throw new CorruptError(file, 'mrt slots', `slot 0: ${a}; slot 1: ${b}`);
  if (typeof a === 'string') return b as MrtSlot;
  if (typeof b === 'string') return a;
  return a.seq >= b.seq ? a : b;
}
