/**
 * Index page codec (pure). A page is one node of a disk's index tree: up to `fanout` 32-byte digests.
 * At level 0 (leaf) entry i is the digest of chunk (first + i); at level L > 0 it is the digest of the
 * level L-1 page covering the next fanout^L chunks. ZERO_DIGEST marks an all-zero chunk or subtree.
 *
 *   0  u32 magic "TMIX"   4 u8 version (1)   5 u8 level   6 u16 0   8 u32 count   12 u32 0
 *   16 count x 32-byte digests (trailing ZERO entries are omitted, so count <= fanout)
 *
 * A page is stored as an `index` object (envelope, compressed, maybe encrypted) named by its digest,
 * so the tree is a Merkle tree: a root digest pins every page and chunk below it.
 */
import { DIGEST_SIZE, INDEX_HEADER_SIZE, INDEX_MAGIC, INDEX_VERSION, ZERO_DIGEST } from './constants.js';

export interface IndexPage {
  level: number;
  /** Hex digests; length <= fanout (missing tail entries are ZERO). */
  entries: string[];
}

/**
 * Encode a page from its digests as bytes: `digests` holds `fanout` x 32 bytes (or fewer), entry i at
 * i x 32; trailing all-zero entries are omitted. The writer's path: no hex strings per entry.
 */
export function encodeIndexPageBytes(level: number, digests: Uint8Array): Buffer {
  let count = Math.floor(digests.length / DIGEST_SIZE);
  while (count > 0 && isZeroEntry(digests, count - 1)) count--;
  const buf = Buffer.allocUnsafe(INDEX_HEADER_SIZE + count * DIGEST_SIZE);
  buf.fill(0, 0, INDEX_HEADER_SIZE);
  buf.writeUInt32LE(INDEX_MAGIC, 0);
  buf[4] = INDEX_VERSION;
  buf[5] = level;
  buf.writeUInt32LE(count, 8);
  buf.set(digests.subarray(0, count * DIGEST_SIZE), INDEX_HEADER_SIZE);
  return buf;
}

export function encodeIndexPage(page: IndexPage): Buffer {
  let count = page.entries.length;
  while (count > 0 && page.entries[count - 1] === ZERO_DIGEST) count--;
  const digests = Buffer.alloc(count * DIGEST_SIZE);
  for (let i = 0; i < count; i++) digests.write(page.entries[i], i * DIGEST_SIZE, 'hex');
  return encodeIndexPageBytes(page.level, digests);
}

/**
 * Decode a page into its digests as bytes: a new `fanout` x 32-byte buffer, zero-padded past the
 * stored entries. Returns a description of the problem instead when the bytes are not a valid page.
 */
export function decodeIndexPageBytes(buf: Buffer, expectLevel: number, fanout: number): Buffer | string {
  const count = checkIndexPage(buf, expectLevel, fanout);
  if (typeof count === 'string') return count;
  const out = Buffer.alloc(fanout * DIGEST_SIZE);
  buf.copy(out, 0, INDEX_HEADER_SIZE, INDEX_HEADER_SIZE + count * DIGEST_SIZE);
  return out;
}

/** Decode a page; returns a description of the problem instead when the bytes are not a valid page. */
export function decodeIndexPage(buf: Buffer, expectLevel: number, fanout: number): IndexPage | string {
  const count = checkIndexPage(buf, expectLevel, fanout);
  if (typeof count === 'string') return count;
  const entries = new Array<string>(count);
  for (let i = 0; i < count; i++) entries[i] = buf.toString('hex', INDEX_HEADER_SIZE + i * DIGEST_SIZE, INDEX_HEADER_SIZE + (i + 1) * DIGEST_SIZE);
  return { level: expectLevel, entries };
}

/** The entry count of a valid page, or what is wrong with it. */
function checkIndexPage(buf: Buffer, expectLevel: number, fanout: number): number | string {
  if (buf.length < INDEX_HEADER_SIZE) return 'index page shorter than its header';
  if (buf.readUInt32LE(0) !== INDEX_MAGIC) return 'bad index page magic';
  if (buf[4] !== INDEX_VERSION) return `unknown index page version ${buf[4]}`;
  if (buf[5] !== expectLevel) return `index page has level ${buf[5]}, expected ${expectLevel}`;
  const count = buf.readUInt32LE(8);
  if (count > fanout) return `index page holds ${count} entries, more than the fanout ${fanout}`;
  if (buf.length !== INDEX_HEADER_SIZE + count * DIGEST_SIZE) return `index page is ${buf.length} bytes, ${count} entries need ${INDEX_HEADER_SIZE + count * DIGEST_SIZE}`;
  return count;
}

/** Are bytes [from, to) of `bytes` all zero? (A zero digest, or a page of zero digests.) */
export function isAllZero(bytes: Uint8Array, from = 0, to = bytes.length): boolean {
  for (let j = from; j < to; j++) if (bytes[j] !== 0) return false;
  return true;
}

/** Is entry `i` of `digests` all zero bytes (ZERO_DIGEST)? */
function isZeroEntry(digests: Uint8Array, i: number): boolean {
  return isAllZero(digests, i * DIGEST_SIZE, (i + 1) * DIGEST_SIZE);
}
