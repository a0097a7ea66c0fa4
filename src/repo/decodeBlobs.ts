/**
 * decodeBlobs: decode and verify several blobs cut from one contiguous read of a pack (a restore's
 * read window). Pure (buffers in, value out); runs inline or in a codec worker (one message per window,
 * not per chunk). Every blob gets the full check of any read (openObject: header, AES-GCM tag, zstd,
 * length; then digest == name): nothing is weakened by batching.
 *
 * The plaintexts are written back to back into `plain`, the caller's memory (restore's windows and
 * plaintext areas are SharedArrayBuffers reused for the whole restore, so a worker writes where the
 * main thread then reads: no allocation, transfer or garbage per window). Compressed blobs decompress
 * straight into it; stored ones are copied (a memcpy, cheap next to the digest, and it keeps every
 * chunk at a chunk-size multiple of `plain`: aligned for O_DIRECT writes, adjacent chunks adjacent in
 * memory). The result gives each blob's plaintext length — or the first blob that failed and why
 * (the caller raises CorruptObjectError naming it and its pack).
 */
import type { ObjectKind } from './constants.js';
import { CorruptObjectError } from './errors.js';
import { checkObjectName, openObject, type RepoKeys } from './ObjectCodec.js';

/** One blob of the window: its name (digest) and its envelope's place in the window. */
export interface WindowBlob {
  name: string;
  offset: number;
  length: number;
}

/** `lengths[i]`: blob i's plaintext length; the plaintexts are back to back from `plain[0]`. */
export type DecodeBlobsResult = { ok: true; lengths: number[] } | { ok: false; blob: number; detail: string };

export function decodeBlobs(window: Uint8Array, blobs: readonly WindowBlob[], plain: Uint8Array, kind: ObjectKind, keys: RepoKeys | null, location = ''): DecodeBlobsResult {
  const out = Buffer.from(plain.buffer, plain.byteOffset, plain.byteLength);
  const lengths: number[] = [];
  let at = 0;
  for (let i = 0; i < blobs.length; i++) {
    const b = blobs[i];
    const ref = { location, type: 'chunks', name: b.name };
    try {
      if (b.offset < 0 || b.offset + b.length > window.length) throw new CorruptObjectError(location, 'chunks', b.name, `the pack ends before the blob (offset ${b.offset}, length ${b.length})`);
      const p = openObject(ref, kind, window.subarray(b.offset, b.offset + b.length), keys, out.subarray(at));
      checkObjectName(ref, p, keys);
      if (p.buffer !== out.buffer) p.copy(out, at); // stored: still in the window (room was checked by openObject)
      lengths.push(p.length);
      at += p.length;
    } catch (err) {
      if (err instanceof CorruptObjectError) return { ok: false, blob: i, detail: err.detail };
      return { ok: false, blob: i, detail: String(err) };
    }
  }
  return { ok: true, lengths };
}
