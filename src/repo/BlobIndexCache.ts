/**
 * A local cache of the BlobIndex (the (kind, digest) -> (pack, offset, length) table), so a backup or
 * restore does not read and parse every pack index object of the repository at start-up: it reads one
 * file, then only the pack index objects written since (by anyone), and checks the rest by name.
 *
 * Why it is safe: pack index objects are immutable and content-addressed, so a cache built from a set
 * of them by name is exact for those names. It is used only when every name it lists is still in the
 * repository's listing (a prune that removed one invalidates it: the table is rebuilt); names listed but
 * not cached are read and added as usual. It holds only what durable pack indexes say (it is written
 * from the table after a flush, when the table equals loaded + written indexes). Damage or a torn write
 * fails its checksum (and, encrypted, its AES-GCM tag) and the table is rebuilt from the repository:
 * the cache can cost a reload, never a wrong answer.
 *
 * File `<dir>/blobindex`: SHA-256 of the rest (32 bytes) ‖ object envelope of kind 7 (blobIndexCache;
 * encrypted like any object in an encrypted repository, never compressed) whose plaintext is, all
 * integers little-endian:
 *
 *   0  u32 magic "TMBC"   4 u8 version 1   5..7 zero
 *   8  u32 names (pack index objects)   12 u32 packs   16 u32 records   20 u32 slots   24 u32 distinct
 *   28 u32 run words
 *   32 names x 32 bytes (binary object names), packs x 32 bytes (pack ids)
 *      run words x u32: per pack, its pair count n, then n x (u32 first record, u32 records)
 *      records x 48 bytes (12 int32: digest words, kind, pack number, offset, length: BlobIndex's layout)
 *      slots x 4 bytes (int32: record number + 1, 0 empty)
 *
 * Written with temp + rename (no fsync: a cache lost or torn in a crash is only rebuilt). Little-endian
 * hosts only (the arrays are written as they are in memory); elsewhere there is no cache.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readFile, rename, unlink, writeFile } from 'node:fs/promises';
import { endianness } from 'node:os';
import { join } from 'node:path';
import { DIGEST_SIZE, ObjectKind } from './constants.js';
import { BLOB_INDEX_STRIDE, BlobIndex } from './BlobIndex.js';
import { decodeObject, encodeObject, type RepoKeys } from './ObjectCodec.js';

const MAGIC = 0x43424d54; // "TMBC"
const VERSION = 1;
const HEADER = 32;
const FILE = 'blobindex';
const HEX64 = /^[0-9a-f]{64}$/;

/** Whether this host can use the cache (its layout is the little-endian in-memory one). */
export const CACHE_SUPPORTED = endianness() === 'LE';

export interface CachedTable {
  /** The pack index objects the table was built from. */
  names: string[];
  index: BlobIndex;
}

/** The cache plaintext of a table built from `names` (pure; copies the table's arrays). */
export function encodeBlobIndexCache(names: readonly string[], index: BlobIndex): Buffer {
  for (const n of names) if (!HEX64.test(n)) throw new TypeError(`cache: pack index name ${n} is not a 64-digit hex digest`);
  const p = index.parts();
  for (const id of p.ids) if (!HEX64.test(id)) throw new TypeError(`cache: pack id ${id} is not a 64-digit hex digest`);
  let runWords = 0;
  for (const r of p.runs) runWords += 1 + r.length;
  const head = Buffer.alloc(HEADER);
  head.writeUInt32LE(MAGIC, 0);
  head[4] = VERSION;
  head.writeUInt32LE(names.length, 8);
  head.writeUInt32LE(p.ids.length, 12);
  head.writeUInt32LE(p.records.length / BLOB_INDEX_STRIDE, 16);
  head.writeUInt32LE(p.slots.length, 20);
  head.writeUInt32LE(p.distinct, 24);
  head.writeUInt32LE(runWords, 28);
  const ids = Buffer.from([...names, ...p.ids].join(''), 'hex');
  const runs = new Uint32Array(runWords);
  let w = 0;
  for (const r of p.runs) {
    runs[w++] = r.length / 2;
    for (const x of r) runs[w++] = x;
  }
  const view = (a: Int32Array | Uint32Array): Buffer => Buffer.from(a.buffer, a.byteOffset, a.byteLength);
  return Buffer.concat([head, ids, view(runs), view(p.records), view(p.slots)]);
}

/** Parse a cache plaintext; a description of the problem instead when it is not a valid one. */
export function decodeBlobIndexCache(plain: Buffer): CachedTable | string {
  if (plain.length < HEADER || plain.readUInt32LE(0) !== MAGIC) return 'not a blob index cache';
  if (plain[4] !== VERSION) return `cache version ${plain[4]} is not supported`;
  const nNames = plain.readUInt32LE(8);
  const nPacks = plain.readUInt32LE(12);
  const nRecords = plain.readUInt32LE(16);
  const nSlots = plain.readUInt32LE(20);
  const distinct = plain.readUInt32LE(24);
  const runWords = plain.readUInt32LE(28);
  const want = HEADER + (nNames + nPacks) * DIGEST_SIZE + runWords * 4 + nRecords * BLOB_INDEX_STRIDE * 4 + nSlots * 4;
  if (plain.length !== want) return `cache is ${plain.length} bytes, its header says ${want}`;
  let at = HEADER;
  const hex = (n: number): string[] => {
    const out = new Array<string>(n);
    for (let i = 0; i < n; i++, at += DIGEST_SIZE) out[i] = plain.toString('hex', at, at + DIGEST_SIZE);
    return out;
  };
  const names = hex(nNames);
  const ids = hex(nPacks);
  // Copied into fresh (aligned) arrays: the table owns them and grows them later.
  const words = (n: number, T: typeof Int32Array | typeof Uint32Array): Int32Array | Uint32Array => {
    const a = new T(n);
    Buffer.from(a.buffer).set(plain.subarray(at, at + n * 4));
    at += n * 4;
    return a;
  };
  const runWordsArr = words(runWords, Uint32Array);
  const runs: number[][] = [];
  for (let w = 0; w < runWordsArr.length; ) {
    const pairs = runWordsArr[w++];
    if (w + pairs * 2 > runWordsArr.length) return 'cache run list overruns its words';
    runs.push(Array.from(runWordsArr.subarray(w, w + pairs * 2)));
    w += pairs * 2;
  }
  const records = words(nRecords * BLOB_INDEX_STRIDE, Int32Array) as Int32Array;
  const slots = words(nSlots, Int32Array) as Int32Array;
  const index = BlobIndex.fromParts({ records, slots, distinct, ids, runs });
  if (typeof index === 'string') return `cache table: ${index}`;
  return { names, index };
}

/** The bytes of `<dir>/blobindex`; null when missing or unreadable (never rejects). */
export async function readBlobIndexCacheFile(dir: string): Promise<Buffer | null> {
  if (!CACHE_SUPPORTED) return null;
  return readFile(join(dir, FILE)).catch(() => null);
}

/** Check and decode a cache file's bytes (checksum, envelope, layout); null when damaged or not ours. */
export function openBlobIndexCache(file: Buffer, dir: string, keys: RepoKeys | null): CachedTable | null {
  try {
    if (file.length < DIGEST_SIZE) return null;
    const body = file.subarray(DIGEST_SIZE);
    if (!createHash('sha256').update(body).digest().equals(file.subarray(0, DIGEST_SIZE))) return null;
    const plain = decodeObject({ location: dir, type: 'cache', name: FILE }, ObjectKind.blobIndexCache, body, keys, false, true);
    const t = decodeBlobIndexCache(plain);
    return typeof t === 'string' ? null : t;
  } catch {
    return null;
  }
}

/** Write `<dir>/blobindex` holding `plain` (encodeBlobIndexCache's), temp + rename. Rejects on I/O errors. */
export async function writeBlobIndexCache(dir: string, keys: RepoKeys | null, plain: Buffer): Promise<void> {
  if (!CACHE_SUPPORTED) return;
  const body = encodeObject(ObjectKind.blobIndexCache, plain, { keys });
  const sum = createHash('sha256').update(body).digest();
  await mkdir(dir, { recursive: true });
  const tmp = join(dir, `${FILE}.${randomBytes(6).toString('hex')}.tmp`);
  try {
    await writeFile(tmp, Buffer.concat([sum, body]));
    await rename(tmp, join(dir, FILE));
  } catch (err) {
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
}
