import { CorruptError } from '../errors.js';
import { vhdxChecksum, sealChecksum } from './checksum.js';
import { LOG_DESCRIPTOR_SIZE, LOG_ENTRY_HEADER_SIZE, LOG_SECTOR_SIZE, SIG_LOG_DATA, SIG_LOG_DESC, SIG_LOG_ENTRY, SIG_LOG_ZERO } from './constants.js';
import { guidEq, guidFromBuffer, guidToBuffer } from './guid.js';

/**
 * A log entry: a whole number of 4 KiB sectors, checksummed (CRC-32C, field at 4) over all of them.
 *   Entry header (64 bytes): 0 "loge" | 4 crc32c | 8 u32 EntryLength | 12 u32 Tail | 16 u64 SequenceNumber
 *     24 u32 DescriptorCount | 28 u32 reserved | 32 LogGuid | 48 u64 FlushedFileOffset | 56 u64 LastFileOffset
 *   Descriptors (32 bytes each) follow the header and fill ceil((count + 2) / 128) sectors:
 *     zero: 0 "zero" | 4 u32 reserved | 8 u64 ZeroLength | 16 u64 FileOffset | 24 u64 SequenceNumber
 *     data: 0 "desc" | 4 u32 TrailingBytes (target bytes 4092..4095) | 8 u64 LeadingBytes (target bytes 0..7)
 *           | 16 u64 FileOffset | 24 u64 SequenceNumber
 *   Data sectors, one per data descriptor in order: 0 "data" | 4 u32 SequenceHigh | 8..4091 target bytes 8..4091
 *     | 4092 u32 SequenceLow.
 * FileOffset and ZeroLength are multiples of 4 KiB.
 */
export interface LogZero {
  fileOffset: number;
  length: number;
}
export interface LogWrite {
  fileOffset: number;
  /** Exactly 4096 bytes. */
  data: Buffer;
}
export interface LogEntry {
  sequenceNumber: bigint;
  /** Offset within the log of the first entry of the sequence this entry ends. */
  tail: number;
  logGuid: string;
  flushedFileOffset: number;
  lastFileOffset: number;
  zeros: LogZero[];
  writes: LogWrite[];
}

export function descriptorSectors(count: number): number {
  return Math.ceil((count + 2) / 128);
}

export function logEntryLength(e: Pick<LogEntry, 'zeros' | 'writes'>): number {
  return (descriptorSectors(e.zeros.length + e.writes.length) + e.writes.length) * LOG_SECTOR_SIZE;
}

export function logEntryToBuffer(e: LogEntry): Buffer {
  const count = e.zeros.length + e.writes.length;
  const ds = descriptorSectors(count);
  const len = logEntryLength(e);
  const b = Buffer.alloc(len);
  b.write(SIG_LOG_ENTRY, 0, 'latin1');
  b.writeUInt32LE(len, 8);
  b.writeUInt32LE(e.tail, 12);
  b.writeBigUInt64LE(e.sequenceNumber, 16);
  b.writeUInt32LE(count, 24);
  guidToBuffer(e.logGuid).copy(b, 32);
  b.writeBigUInt64LE(BigInt(e.flushedFileOffset), 48);
  b.writeBigUInt64LE(BigInt(e.lastFileOffset), 56);
  let d = LOG_ENTRY_HEADER_SIZE;
  for (const z of e.zeros) {
    if (z.fileOffset % LOG_SECTOR_SIZE || z.length % LOG_SECTOR_SIZE) throw new RangeError('log zero descriptor not 4 KiB aligned');
    b.write(SIG_LOG_ZERO, d, 'latin1');
    b.writeBigUInt64LE(BigInt(z.length), d + 8);
    b.writeBigUInt64LE(BigInt(z.fileOffset), d + 16);
    b.writeBigUInt64LE(e.sequenceNumber, d + 24);
    d += LOG_DESCRIPTOR_SIZE;
  }
  let s = ds * LOG_SECTOR_SIZE;
  const hi = Number(e.sequenceNumber >> 32n);
  const lo = Number(e.sequenceNumber & 0xffffffffn);
  for (const w of e.writes) {
    if (w.fileOffset % LOG_SECTOR_SIZE || w.data.length !== LOG_SECTOR_SIZE) throw new RangeError('log data descriptor not one aligned 4 KiB sector');
    b.write(SIG_LOG_DESC, d, 'latin1');
    b.writeUInt32LE(w.data.readUInt32LE(4092), d + 4);
    w.data.copy(b, d + 8, 0, 8);
    b.writeBigUInt64LE(BigInt(w.fileOffset), d + 16);
    b.writeBigUInt64LE(e.sequenceNumber, d + 24);
    d += LOG_DESCRIPTOR_SIZE;
    b.write(SIG_LOG_DATA, s, 'latin1');
    b.writeUInt32LE(hi, s + 4);
    w.data.copy(b, s + 8, 8, 4092);
    b.writeUInt32LE(lo, s + 4092);
    s += LOG_SECTOR_SIZE;
  }
  sealChecksum(b, 4);
  return b;
}

/** Peek at an entry header: its length if the first sector looks like an entry of this log, else undefined. */
export function peekLogEntryLength(sector: Buffer, logGuid: string, logLength: number): number | undefined {
  if (sector.length < LOG_ENTRY_HEADER_SIZE || sector.toString('latin1', 0, 4) !== SIG_LOG_ENTRY) return undefined;
  const len = sector.readUInt32LE(8);
  if (len === 0 || len % LOG_SECTOR_SIZE !== 0 || len > logLength) return undefined;
  if (!guidEq(guidFromBuffer(sector, 32), logGuid)) return undefined;
  return len;
}

/**
 * Decode and fully validate one entry (checksum over all sectors, descriptor signatures, sequence numbers,
 * alignment, data sector signatures). `expectedGuid` is the header's LogGuid.
 */
export function logEntryFromBuffer(buf: Buffer, expectedGuid: string, file = 'vhdx', structure = 'log entry'): LogEntry {
  const bad = (why: string): never => {
    throw new CorruptError(file, structure, why);
  };
  if (buf.length < LOG_SECTOR_SIZE) bad('truncated');
  if (buf.toString('latin1', 0, 4) !== SIG_LOG_ENTRY) bad('bad signature (expected "loge")');
  const len = buf.readUInt32LE(8);
  if (len === 0 || len % LOG_SECTOR_SIZE !== 0 || len > buf.length) bad(`entry length ${len} is not a whole number of 4 KiB sectors within the log`);
  const b = Buffer.from(buf.subarray(0, len));
  if (vhdxChecksum(b, 4) !== b.readUInt32LE(4)) bad('checksum mismatch');
  const seq = b.readBigUInt64LE(16);
  if (seq === 0n) bad('sequence number 0');
  const logGuid = guidFromBuffer(b, 32);
  if (!guidEq(logGuid, expectedGuid)) bad('log GUID does not match the header');
  const count = b.readUInt32LE(24);
  const ds = descriptorSectors(count);
  if (ds * LOG_SECTOR_SIZE > len) bad(`${count} descriptors do not fit in ${len} bytes`);
  const e: LogEntry = {
    sequenceNumber: seq,
    tail: b.readUInt32LE(12),
    logGuid,
    flushedFileOffset: Number(b.readBigUInt64LE(48)),
    lastFileOffset: Number(b.readBigUInt64LE(56)),
    zeros: [],
    writes: [],
  };
  let s = ds * LOG_SECTOR_SIZE;
  for (let i = 0; i < count; i++) {
    const d = LOG_ENTRY_HEADER_SIZE + i * LOG_DESCRIPTOR_SIZE;
    const sig = b.toString('latin1', d, d + 4);
    const fileOffset = Number(b.readBigUInt64LE(d + 16));
    if (b.readBigUInt64LE(d + 24) !== seq) bad(`descriptor ${i}: sequence number does not match the entry`);
    if (fileOffset % LOG_SECTOR_SIZE !== 0) bad(`descriptor ${i}: file offset ${fileOffset} is not 4 KiB aligned`);
    if (sig === SIG_LOG_ZERO) {
      const length = Number(b.readBigUInt64LE(d + 8));
      if (length % LOG_SECTOR_SIZE !== 0) bad(`descriptor ${i}: zero length ${length} is not 4 KiB aligned`);
      e.zeros.push({ fileOffset, length });
    } else if (sig === SIG_LOG_DESC) {
      if (s + LOG_SECTOR_SIZE > len) bad(`descriptor ${i}: data sector past the end of the entry`);
      if (b.toString('latin1', s, s + 4) !== SIG_LOG_DATA) bad(`data sector ${e.writes.length}: bad signature (expected "data")`);
      const sh = BigInt(b.readUInt32LE(s + 4));
      const sl = BigInt(b.readUInt32LE(s + 4092));
      if (((sh << 32n) | sl) !== seq) bad(`data sector ${e.writes.length}: sequence number does not match the entry`);
      const data = Buffer.alloc(LOG_SECTOR_SIZE);
      b.copy(data, 0, d + 8, d + 16);
      b.copy(data, 8, s + 8, s + 4092);
      data.writeUInt32LE(b.readUInt32LE(d + 4), 4092);
      e.writes.push({ fileOffset, data });
      s += LOG_SECTOR_SIZE;
    } else {
      bad(`descriptor ${i}: bad signature "${sig}"`);
    }
  }
  return e;
}
