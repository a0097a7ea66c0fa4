/**
 * Pure codecs for the fixed-newstyle handshake: the server greeting, option requests and option replies.
 * Buffers in, values out; no I/O. Decoders of client data throw NbdOptionFormatError with what is wrong.
 */
import { NbdOptionFormatError } from './errors.js';
import {
  FLAG_FIXED_NEWSTYLE,
  FLAG_NO_ZEROES,
  IHAVEOPT,
  INFO_BLOCK_SIZE,
  INFO_DESCRIPTION,
  INFO_EXPORT,
  INFO_NAME,
  MAX_STRING,
  NBD_MAGIC,
  OPTION_HEADER_SIZE,
  OPTION_REPLY_MAGIC,
  REP_INFO,
  REP_META_CONTEXT,
  REP_SERVER,
} from './protocol.js';

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** The 18-byte server greeting: NBDMAGIC, IHAVEOPT, handshake flags (FIXED_NEWSTYLE | NO_ZEROES). */
export function encodeGreeting(): Buffer {
  const b = Buffer.alloc(18);
  b.writeBigUInt64BE(NBD_MAGIC, 0);
  b.writeBigUInt64BE(IHAVEOPT, 8);
  b.writeUInt16BE(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES, 16);
  return b;
}

export interface OptionHeader {
  /** False when the first 8 bytes are not IHAVEOPT: the stream cannot be trusted any more. */
  magicOk: boolean;
  option: number;
  length: number;
}

/** Decode the 16-byte option header at `off` (caller guarantees 16 bytes are present). */
export function decodeOptionHeader(buf: Buffer, off = 0): OptionHeader {
  return {
    magicOk: buf.readBigUInt64BE(off) === IHAVEOPT,
    option: buf.readUInt32BE(off + 8),
    length: buf.readUInt32BE(off + 12),
  };
}

/** Encode an option request (used by tests and tools acting as a client). */
export function encodeOptionRequest(option: number, data: Buffer = Buffer.alloc(0)): Buffer {
  const b = Buffer.alloc(OPTION_HEADER_SIZE + data.length);
  b.writeBigUInt64BE(IHAVEOPT, 0);
  b.writeUInt32BE(option, 8);
  b.writeUInt32BE(data.length, 12);
  data.copy(b, OPTION_HEADER_SIZE);
  return b;
}

/** Encode one option reply: magic, option, reply type, length, data. */
export function encodeOptionReply(option: number, type: number, data: Buffer = Buffer.alloc(0)): Buffer {
  const b = Buffer.alloc(20 + data.length);
  b.writeBigUInt64BE(OPTION_REPLY_MAGIC, 0);
  b.writeUInt32BE(option >>> 0, 8);
  b.writeUInt32BE(type >>> 0, 12);
  b.writeUInt32BE(data.length, 16);
  data.copy(b, 20);
  return b;
}

export interface OptionReply {
  option: number;
  type: number;
  data: Buffer;
}

/** Decode one option reply at `off`; returns null when incomplete. Throws on a bad magic. */
export function decodeOptionReply(buf: Buffer, off = 0): { reply: OptionReply; size: number } | null {
  if (buf.length - off < 20) return null;
  if (buf.readBigUInt64BE(off) !== OPTION_REPLY_MAGIC) throw new Error('bad option reply magic');
  const length = buf.readUInt32BE(off + 16);
  if (buf.length - off < 20 + length) return null;
  return {
    reply: { option: buf.readUInt32BE(off + 8), type: buf.readUInt32BE(off + 12), data: buf.subarray(off + 20, off + 20 + length) },
    size: 20 + length,
  };
}

/** NBD_REP_SERVER payload: name length, name, then a human-readable description. */
export function encodeServerReply(option: number, name: string, description = ''): Buffer {
  const n = Buffer.from(name, 'utf8');
  const d = Buffer.from(description, 'utf8');
  const data = Buffer.alloc(4 + n.length + d.length);
  data.writeUInt32BE(n.length, 0);
  n.copy(data, 4);
  d.copy(data, 4 + n.length);
  return encodeOptionReply(option, REP_SERVER, data);
}

/** NBD_REP_INFO / NBD_INFO_EXPORT: size and transmission flags. */
export function encodeInfoExport(option: number, size: number, flags: number): Buffer {
  const data = Buffer.alloc(12);
  data.writeUInt16BE(INFO_EXPORT, 0);
  data.writeBigUInt64BE(BigInt(size), 2);
  data.writeUInt16BE(flags, 10);
  return encodeOptionReply(option, REP_INFO, data);
}

/** NBD_REP_INFO carrying a string (NBD_INFO_NAME or NBD_INFO_DESCRIPTION). */
export function encodeInfoString(option: number, infoType: typeof INFO_NAME | typeof INFO_DESCRIPTION, text: string): Buffer {
  const s = Buffer.from(text, 'utf8');
  const data = Buffer.alloc(2 + s.length);
  data.writeUInt16BE(infoType, 0);
  s.copy(data, 2);
  return encodeOptionReply(option, REP_INFO, data);
}

export interface BlockSizes {
  minimum: number;
  preferred: number;
  maximum: number;
}

/** NBD_REP_INFO / NBD_INFO_BLOCK_SIZE. */
export function encodeInfoBlockSize(option: number, sizes: BlockSizes): Buffer {
  const data = Buffer.alloc(14);
  data.writeUInt16BE(INFO_BLOCK_SIZE, 0);
  data.writeUInt32BE(sizes.minimum, 2);
  data.writeUInt32BE(sizes.preferred, 6);
  data.writeUInt32BE(sizes.maximum, 10);
  return encodeOptionReply(option, REP_INFO, data);
}

/** NBD_REP_META_CONTEXT: context id and name. */
export function encodeMetaContextReply(option: number, id: number, name: string): Buffer {
  const s = Buffer.from(name, 'utf8');
  const data = Buffer.alloc(4 + s.length);
  data.writeUInt32BE(id, 0);
  s.copy(data, 4);
  return encodeOptionReply(option, REP_META_CONTEXT, data);
}

/** Reply to NBD_OPT_EXPORT_NAME: size, flags, and 124 zero bytes unless NO_ZEROES was negotiated. */
export function encodeExportNameReply(size: number, flags: number, noZeroes: boolean): Buffer {
  const b = Buffer.alloc(noZeroes ? 10 : 134);
  b.writeBigUInt64BE(BigInt(size), 0);
  b.writeUInt16BE(flags, 8);
  return b;
}

/** Decode a protocol string: valid UTF-8, no NUL, at most 4096 bytes. */
export function decodeString(option: number, bytes: Buffer, what: string): string {
  if (bytes.length > MAX_STRING) throw new NbdOptionFormatError(option, `${what} is ${bytes.length} bytes; the limit is ${MAX_STRING}`);
  let s: string;
  try {
    s = utf8.decode(bytes);
  } catch {
    throw new NbdOptionFormatError(option, `${what} is not valid UTF-8`);
  }
  if (s.includes('\0')) throw new NbdOptionFormatError(option, `${what} contains a NUL character`);
  return s;
}

export interface InfoRequest {
  name: string;
  /** NBD_INFO_* types asked for, duplicates removed, in request order. */
  infos: number[];
}

/** Decode NBD_OPT_INFO / NBD_OPT_GO data: name length, name, count, count x 16-bit info types. */
export function decodeInfoRequest(option: number, data: Buffer): InfoRequest {
  if (data.length < 6) throw new NbdOptionFormatError(option, `data is ${data.length} bytes; at least 6 are needed`);
  const nameLen = data.readUInt32BE(0);
  if (nameLen > data.length - 6) throw new NbdOptionFormatError(option, `export name length ${nameLen} runs past the option data (${data.length} bytes)`);
  const name = decodeString(option, data.subarray(4, 4 + nameLen), 'export name');
  const count = data.readUInt16BE(4 + nameLen);
  if (data.length !== 6 + nameLen + 2 * count) {
    throw new NbdOptionFormatError(option, `${count} information requests need ${6 + nameLen + 2 * count} bytes of data, got ${data.length}`);
  }
  const infos: number[] = [];
  for (let i = 0; i < count; i++) {
    const t = data.readUInt16BE(6 + nameLen + 2 * i);
    if (!infos.includes(t)) infos.push(t);
  }
  return { name, infos };
}

/** Encode NBD_OPT_INFO / NBD_OPT_GO data (client side; tests). */
export function encodeInfoRequest(name: string, infos: number[] = []): Buffer {
  const n = Buffer.from(name, 'utf8');
  const b = Buffer.alloc(6 + n.length + 2 * infos.length);
  b.writeUInt32BE(n.length, 0);
  n.copy(b, 4);
  b.writeUInt16BE(infos.length, 4 + n.length);
  infos.forEach((t, i) => b.writeUInt16BE(t, 6 + n.length + 2 * i));
  return b;
}

export interface MetaContextRequest {
  exportName: string;
  queries: string[];
}

/** Decode NBD_OPT_LIST_META_CONTEXT / NBD_OPT_SET_META_CONTEXT data. */
export function decodeMetaContextRequest(option: number, data: Buffer): MetaContextRequest {
  let pos = 0;
  const need = (n: number, what: string): void => {
    if (data.length - pos < n) throw new NbdOptionFormatError(option, `${what} runs past the option data (${data.length} bytes)`);
  };
  need(4, 'export name length');
  const nameLen = data.readUInt32BE(pos);
  pos += 4;
  need(nameLen, 'export name');
  const exportName = decodeString(option, data.subarray(pos, pos + nameLen), 'export name');
  pos += nameLen;
  need(4, 'query count');
  const count = data.readUInt32BE(pos);
  pos += 4;
  // Each query needs at least its 4-byte length: bound the count by the data before looping.
  if (count > (data.length - pos) / 4) throw new NbdOptionFormatError(option, `${count} queries cannot fit in ${data.length - pos} bytes`);
  const queries: string[] = [];
  for (let i = 0; i < count; i++) {
    need(4, `query ${i} length`);
    const len = data.readUInt32BE(pos);
    pos += 4;
    need(len, `query ${i}`);
    queries.push(decodeString(option, data.subarray(pos, pos + len), `query ${i}`));
    pos += len;
  }
  if (pos !== data.length) throw new NbdOptionFormatError(option, `${data.length - pos} trailing bytes after the queries`);
  return { exportName, queries };
}

/** Encode NBD_OPT_*_META_CONTEXT data (client side; tests). */
export function encodeMetaContextRequest(exportName: string, queries: string[]): Buffer {
  const parts: Buffer[] = [];
  const u32 = (n: number): Buffer => {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(n, 0);
    return b;
  };
  const n = Buffer.from(exportName, 'utf8');
  parts.push(u32(n.length), n, u32(queries.length));
  for (const q of queries) {
    const qb = Buffer.from(q, 'utf8');
    parts.push(u32(qb.length), qb);
  }
  return Buffer.concat(parts);
}
