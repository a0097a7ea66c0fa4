/**
 * decodeBlobs: decode and verify several blobs cut from one contiguous read of a pack (a restore's
 * read window). Pure (Buffer in, value out); runs inline or in a codec worker (one message per window,
 * not per chunk). Every blob gets the full decodeObject check (header, AES-GCM tag, zstd, length,
 * digest == name): nothing is weakened by batching.
 *
 * Result: the plaintexts back to back in one buffer (transferable) with their lengths, or the first
 * blob that failed and why (the caller raises CorruptObjectError naming it and its pack).
 */
import type { ObjectKind } from './constants.js';
import { OBJECT_HEADER_SIZE } from './constants.js';
import { CorruptObjectError } from './errors.js';
import { decodeObject, type RepoKeys } from './ObjectCodec.js';

/** One blob of the window: its name (digest) and its envelope's place in the window. */
export interface WindowBlob {
  name: string;
  offset: number;
  length: number;
}

export type DecodeBlobsResult = { ok: true; plain: Buffer; lengths: number[] } | { ok: false; blob: number; detail: string };

export function decodeBlobs(window: Uint8Array, blobs: readonly WindowBlob[], kind: ObjectKind, keys: RepoKeys | null, location = ''): DecodeBlobsResult {
  const buf = Buffer.from(window.buffer, window.byteOffset, window.byteLength);
  // Plaintext lengths from the envelope headers (decodeObject checks them against the real output).
  let total = 0;
  for (const b of blobs) if (b.length >= OBJECT_HEADER_SIZE && b.offset + b.length <= buf.length) total += buf.readUInt32LE(b.offset + 8);
  const out = Buffer.allocUnsafeSlow(total);
  const lengths: number[] = [];
  let at = 0;
  for (let i = 0; i < blobs.length; i++) {
    const b = blobs[i];
    try {
      if (b.offset + b.length > buf.length) throw new CorruptObjectError(location, 'chunks', b.name, `the pack ends before the blob (offset ${b.offset}, length ${b.length})`);
      const plain = decodeObject({ location, type: 'chunks', name: b.name }, kind, buf.subarray(b.offset, b.offset + b.length), keys, true, true);
      if (at + plain.length > out.length) throw new CorruptObjectError(location, 'chunks', b.name, 'decodes to more bytes than its header says');
      plain.copy(out, at);
      at += plain.length;
      lengths.push(plain.length);
    } catch (err) {
      if (err instanceof CorruptObjectError) return { ok: false, blob: i, detail: err.detail };
      return { ok: false, blob: i, detail: String(err) };
    }
  }
  return { ok: true, plain: out.subarray(0, at), lengths };
}
