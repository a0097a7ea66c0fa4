import { randomBytes } from 'node:crypto';

/**
 * Microsoft GUIDs on disk: data1 (u32 LE), data2 (u16 LE), data3 (u16 LE), data4 (8 bytes as is).
 * In memory Tidemark uses the canonical lower-case text form without braces.
 */
export const ZERO_GUID = '00000000-0000-0000-0000-000000000000';

const RE = /^\{?([0-9a-f]{8})-([0-9a-f]{4})-([0-9a-f]{4})-([0-9a-f]{4})-([0-9a-f]{12})\}?$/i;

export function isGuid(text: string): boolean {
  return RE.test(text);
}

/** Parse "xxxxxxxx-xxxx-..." (braces optional) into the 16 on-disk bytes. Throws on bad text. */
export function guidToBuffer(text: string): Buffer {
  const m = RE.exec(text);
  if (!m) throw new Error(`not a GUID: ${text}`);
  const b = Buffer.alloc(16);
  b.writeUInt32LE(parseInt(m[1]!, 16), 0);
  b.writeUInt16LE(parseInt(m[2]!, 16), 4);
  b.writeUInt16LE(parseInt(m[3]!, 16), 6);
  Buffer.from(m[4]! + m[5]!, 'hex').copy(b, 8);
  return b;
}

/** Decode 16 on-disk bytes at `off` into canonical text. */
export function guidFromBuffer(buf: Buffer, off = 0): string {
  const d1 = buf.readUInt32LE(off).toString(16).padStart(8, '0');
  const d2 = buf.readUInt16LE(off + 4).toString(16).padStart(4, '0');
  const d3 = buf.readUInt16LE(off + 6).toString(16).padStart(4, '0');
  const d4 = buf.subarray(off + 8, off + 16).toString('hex');
  return `${d1}-${d2}-${d3}-${d4.slice(0, 4)}-${d4.slice(4)}`;
}

/** A random (version 4) GUID. */
export function newGuid(): string {
  const b = randomBytes(16);
  b[6] = (b[6]! & 0x0f) | 0x40;
  b[8] = (b[8]! & 0x3f) | 0x80;
  const h = b.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

export function guidEq(a: string, b: string): boolean {
  return a.replace(/[{}]/g, '').toLowerCase() === b.replace(/[{}]/g, '').toLowerCase();
}
