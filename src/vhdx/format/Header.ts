import { CorruptError } from '../errors.js';
import { vhdxChecksum, sealChecksum } from './checksum.js';
import { HEADER_SIZE, MiB, SIG_HEADER } from './constants.js';
import { guidFromBuffer, guidToBuffer } from './guid.js';

/**
 * A VHDX header (one of two slots at 64 KiB and 128 KiB), checksummed over 4 KiB:
 *   0 "head" | 4 crc32c | 8 u64 SequenceNumber | 16 FileWriteGuid | 32 DataWriteGuid | 48 LogGuid
 *   64 u16 LogVersion (0) | 66 u16 Version (1) | 68 u32 LogLength | 72 u64 LogOffset | rest reserved (0)
 */
export interface VhdxHeader {
  sequenceNumber: bigint;
  fileWriteGuid: string;
  dataWriteGuid: string;
  logGuid: string;
  logVersion: number;
  version: number;
  logLength: number;
  logOffset: number;
}

export function headerToBuffer(h: VhdxHeader): Buffer {
  const b = Buffer.alloc(HEADER_SIZE);
  b.write(SIG_HEADER, 0, 'latin1');
  b.writeBigUInt64LE(h.sequenceNumber, 8);
  guidToBuffer(h.fileWriteGuid).copy(b, 16);
  guidToBuffer(h.dataWriteGuid).copy(b, 32);
  guidToBuffer(h.logGuid).copy(b, 48);
  b.writeUInt16LE(h.logVersion, 64);
  b.writeUInt16LE(h.version, 66);
  b.writeUInt32LE(h.logLength, 68);
  b.writeBigUInt64LE(BigInt(h.logOffset), 72);
  sealChecksum(b, 4);
  return b;
}

/** Decode and validate one header slot. Throws CorruptError naming `structure` (e.g. "header 1"). */
export function headerFromBuffer(buf: Buffer, file = 'vhdx', structure = 'header'): VhdxHeader {
  if (buf.length < HEADER_SIZE) throw new CorruptError(file, structure, 'truncated');
  const b = Buffer.from(buf.subarray(0, HEADER_SIZE));
  if (b.toString('latin1', 0, 4) !== SIG_HEADER) throw new CorruptError(file, structure, 'bad signature (expected "head")');
  const crc = b.readUInt32LE(4);
  if (vhdxChecksum(b, 4) !== crc) throw new CorruptError(file, structure, 'checksum mismatch');
  const h: VhdxHeader = {
    sequenceNumber: b.readBigUInt64LE(8),
    fileWriteGuid: guidFromBuffer(b, 16),
    dataWriteGuid: guidFromBuffer(b, 32),
    logGuid: guidFromBuffer(b, 48),
    logVersion: b.readUInt16LE(64),
    version: b.readUInt16LE(66),
    logLength: b.readUInt32LE(68),
    logOffset: Number(b.readBigUInt64LE(72)),
  };
  if (h.version !== 1) throw new CorruptError(file, structure, `unsupported version ${h.version} (expected 1)`);
  if (h.logVersion !== 0) throw new CorruptError(file, structure, `unsupported log version ${h.logVersion} (expected 0)`);
  if (h.logLength % MiB !== 0) throw new CorruptError(file, structure, `log length ${h.logLength} is not a multiple of 1 MiB`);
  if (h.logOffset % MiB !== 0 || h.logOffset < MiB) throw new CorruptError(file, structure, `log offset ${h.logOffset} is not a multiple of 1 MiB past the header section`);
  if (!Number.isSafeInteger(h.logOffset)) throw new CorruptError(file, structure, 'log offset out of range');
  return h;
}

/**
 * Pick the current header from two slots: the valid one with the larger sequence number.
 * One bad slot falls back to the other; two bad slots throw the first slot's error.
 */
export function pickHeader(slots: [Buffer, Buffer], file = 'vhdx'): { header: VhdxHeader; slot: 0 | 1; errors: string[] } {
  const parsed: Array<VhdxHeader | Error> = slots.map((s, i) => {
    try {
      return headerFromBuffer(s, file, `header ${i + 1}`);
    } catch (e) {
      return e as Error;
    }
  });
  const [a, b] = parsed as [VhdxHeader | Error, VhdxHeader | Error];
  const errors = parsed.filter((p): p is Error => p instanceof Error).map((e) => e.message);
  if (a instanceof Error && b instanceof Error) throw new CorruptError(file, 'headers', `both header slots are invalid (${errors.join('; ')})`);
  if (a instanceof Error) return { header: b as VhdxHeader, slot: 1, errors };
  if (b instanceof Error) return { header: a, slot: 0, errors };
  if (a.sequenceNumber === b.sequenceNumber) {
    // Identical sequence numbers are only acceptable if the headers agree.
    if (headerToBuffer(a).equals(headerToBuffer(b))) return { header: a, slot: 0, errors };
    throw new CorruptError(file, 'headers', 'both header slots carry the same sequence number but differ');
  }
  return a.sequenceNumber > b.sequenceNumber ? { header: a, slot: 0, errors } : { header: b, slot: 1, errors };
}
