/**
 * Pure codecs for the transmission phase: the 28-byte request header, simple replies and structured reply
 * chunks (compact headers only). Buffers in, values out; no I/O.
 *
 * Reply encoders return only headers (and small fixed payloads): data buffers are written after them
 * unchanged, so a READ reply costs no copy of the data.
 */
import {
  REPLY_FLAG_DONE,
  REPLY_TYPE_BLOCK_STATUS,
  REPLY_TYPE_ERROR,
  REPLY_TYPE_NONE,
  REPLY_TYPE_OFFSET_DATA,
  REPLY_TYPE_OFFSET_HOLE,
  REQUEST_HEADER_SIZE,
  REQUEST_MAGIC,
  SIMPLE_REPLY_MAGIC,
  STRUCTURED_REPLY_MAGIC,
} from './protocol.js';

export interface RequestHeader {
  /** False when the header does not start with NBD_REQUEST_MAGIC: the stream is out of sync. */
  magicOk: boolean;
  flags: number;
  type: number;
  /** Opaque 64-bit cookie echoed in every reply. */
  handle: bigint;
  /** Byte offset. Values above 2^53 are not exact but always exceed any export size. */
  offset: number;
  length: number;
}

const TWO32 = 4294967296;

/** Decode a request header at `off`; the caller guarantees 28 bytes are present. */
export function decodeRequestHeader(buf: Buffer, off = 0): RequestHeader {
  return {
    magicOk: buf.readUInt32BE(off) === REQUEST_MAGIC,
    flags: buf.readUInt16BE(off + 4),
    type: buf.readUInt16BE(off + 6),
    handle: buf.readBigUInt64BE(off + 8),
    offset: buf.readUInt32BE(off + 16) * TWO32 + buf.readUInt32BE(off + 20),
    length: buf.readUInt32BE(off + 24),
  };
}

/** Encode a request header (client side: tests and benchmarks). */
export function encodeRequestHeader(type: number, flags: number, handle: bigint, offset: number, length: number): Buffer {
  const b = Buffer.alloc(REQUEST_HEADER_SIZE);
  b.writeUInt32BE(REQUEST_MAGIC, 0);
  b.writeUInt16BE(flags, 4);
  b.writeUInt16BE(type, 6);
  b.writeBigUInt64BE(handle, 8);
  b.writeUInt32BE(Math.floor(offset / TWO32), 16);
  b.writeUInt32BE(offset % TWO32, 20);
  b.writeUInt32BE(length, 24);
  return b;
}

/** Bytes of a simple reply header. */
export const SIMPLE_REPLY_SIZE = 16;
/** Bytes of an OFFSET_DATA chunk header (chunk header plus the offset) before its data. */
export const OFFSET_DATA_HEADER_SIZE = 28;

/** A 16-byte simple reply header; for a successful READ the data follows it. */
export function encodeSimpleReply(error: number, handle: bigint): Buffer {
  return writeSimpleReply(Buffer.allocUnsafe(SIMPLE_REPLY_SIZE), 0, error, handle);
}

/** `encodeSimpleReply` into b[at, at+16) (so a READ's data can follow it in the same buffer); returns b. */
export function writeSimpleReply(b: Buffer, at: number, error: number, handle: bigint): Buffer {
  b.writeUInt32BE(SIMPLE_REPLY_MAGIC, at);
  b.writeUInt32BE(error, at + 4);
  b.writeBigUInt64BE(handle, at + 8);
  return b;
}

function chunkHeader(b: Buffer, flags: number, type: number, handle: bigint, length: number, at = 0): void {
  b.writeUInt32BE(STRUCTURED_REPLY_MAGIC, at);
  b.writeUInt16BE(flags, at + 4);
  b.writeUInt16BE(type, at + 6);
  b.writeBigUInt64BE(handle, at + 8);
  b.writeUInt32BE(length, at + 16);
}

/** NBD_REPLY_TYPE_NONE with DONE: success of a command with no reply payload. */
export function encodeNoneChunk(handle: bigint): Buffer {
  const b = Buffer.allocUnsafe(20);
  chunkHeader(b, REPLY_FLAG_DONE, REPLY_TYPE_NONE, handle, 0);
  return b;
}

/** Header (20 bytes) plus offset (8 bytes) of an OFFSET_DATA chunk; `dataLength` data bytes follow. */
export function encodeOffsetDataHeader(done: boolean, handle: bigint, offset: number, dataLength: number): Buffer {
  return writeOffsetDataHeader(Buffer.allocUnsafe(OFFSET_DATA_HEADER_SIZE), 0, done, handle, offset, dataLength);
}

/** `encodeOffsetDataHeader` into b[at, at+28) (so the data can follow it in the same buffer); returns b. */
export function writeOffsetDataHeader(b: Buffer, at: number, done: boolean, handle: bigint, offset: number, dataLength: number): Buffer {
  chunkHeader(b, done ? REPLY_FLAG_DONE : 0, REPLY_TYPE_OFFSET_DATA, handle, 8 + dataLength, at);
  b.writeUInt32BE(Math.floor(offset / TWO32), at + 20);
  b.writeUInt32BE(offset % TWO32, at + 24);
  return b;
}

/** A whole OFFSET_HOLE chunk: `size` bytes at `offset` read as zeros. */
export function encodeOffsetHole(done: boolean, handle: bigint, offset: number, size: number): Buffer {
  const b = Buffer.allocUnsafe(32);
  chunkHeader(b, done ? REPLY_FLAG_DONE : 0, REPLY_TYPE_OFFSET_HOLE, handle, 12);
  b.writeUInt32BE(Math.floor(offset / TWO32), 20);
  b.writeUInt32BE(offset % TWO32, 24);
  b.writeUInt32BE(size, 28);
  return b;
}

/** A whole BLOCK_STATUS chunk for one context: descriptors are (length, flags) pairs. */
export function encodeBlockStatus(done: boolean, handle: bigint, contextId: number, descriptors: ReadonlyArray<{ length: number; flags: number }>): Buffer {
  const b = Buffer.allocUnsafe(24 + 8 * descriptors.length);
  chunkHeader(b, done ? REPLY_FLAG_DONE : 0, REPLY_TYPE_BLOCK_STATUS, handle, 4 + 8 * descriptors.length);
  b.writeUInt32BE(contextId, 20);
  let p = 24;
  for (const d of descriptors) {
    b.writeUInt32BE(d.length, p);
    b.writeUInt32BE(d.flags >>> 0, p + 4);
    p += 8;
  }
  return b;
}

/** A whole NBD_REPLY_TYPE_ERROR chunk (always final here) with a human-readable message. */
export function encodeErrorChunk(handle: bigint, error: number, message: string): Buffer {
  let m = Buffer.from(message, 'utf8');
  if (m.length > 4096) m = m.subarray(0, 4096);
  const b = Buffer.allocUnsafe(26 + m.length);
  chunkHeader(b, REPLY_FLAG_DONE, REPLY_TYPE_ERROR, handle, 6 + m.length);
  b.writeUInt32BE(error, 20);
  b.writeUInt16BE(m.length, 24);
  m.copy(b, 26);
  return b;
}

/** What a client sees at the head of a reply (tests). */
export type ReplyHeader =
  | { kind: 'simple'; error: number; handle: bigint; size: 16 }
  | { kind: 'structured'; flags: number; type: number; handle: bigint; length: number; size: 20 };

/** Decode a reply header at `off` (client side); null when incomplete; throws on unknown magic. */
export function decodeReplyHeader(buf: Buffer, off = 0): ReplyHeader | null {
  if (buf.length - off < 4) return null;
  const magic = buf.readUInt32BE(off);
  if (magic === SIMPLE_REPLY_MAGIC) {
    if (buf.length - off < 16) return null;
    return { kind: 'simple', error: buf.readUInt32BE(off + 4), handle: buf.readBigUInt64BE(off + 8), size: 16 };
  }
  if (magic === STRUCTURED_REPLY_MAGIC) {
    if (buf.length - off < 20) return null;
    return {
      kind: 'structured',
      flags: buf.readUInt16BE(off + 4),
      type: buf.readUInt16BE(off + 6),
      handle: buf.readBigUInt64BE(off + 8),
      length: buf.readUInt32BE(off + 16),
      size: 20,
    };
  }
  throw new Error(`bad reply magic 0x${magic.toString(16)}`);
}
