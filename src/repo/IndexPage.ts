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

export function encodeIndexPage(page: IndexPage): Buffer {
  let count = page.entries.length;
  while (count > 0 && page.entries[count - 1] === ZERO_DIGEST) count--;
  const buf = Buffer.alloc(INDEX_HEADER_SIZE + count * DIGEST_SIZE);
  buf.writeUInt32LE(INDEX_MAGIC, 0);
  buf[4] = INDEX_VERSION;
  buf[5] = page.level;
  buf.writeUInt32LE(count, 8);
  for (let i = 0; i < count; i++) buf.write(page.entries[i], INDEX_HEADER_SIZE + i * DIGEST_SIZE, 'hex');
  return buf;
}

/** Decode a page; returns a description of the problem instead when the bytes are not a valid page. */
export function decodeIndexPage(buf: Buffer, expectLevel: number, fanout: number): IndexPage | string {
  if (buf.length < INDEX_HEADER_SIZE) return 'index page shorter than its header';
  if (buf.readUInt32LE(0) !== INDEX_MAGIC) return 'bad index page magic';
  if (buf[4] !== INDEX_VERSION) return `unknown index page version ${buf[4]}`;
  if (buf[5] !== expectLevel) return `index page has level ${buf[5]}, expected ${expectLevel}`;
  const count = buf.readUInt32LE(8);
  if (count > fanout) return `index page holds ${count} entries, more than the fanout ${fanout}`;
  if (buf.length !== INDEX_HEADER_SIZE + count * DIGEST_SIZE) return `index page is ${buf.length} bytes, ${count} entries need ${INDEX_HEADER_SIZE + count * DIGEST_SIZE}`;
  const entries = new Array<string>(count);
  for (let i = 0; i < count; i++) entries[i] = buf.toString('hex', INDEX_HEADER_SIZE + i * DIGEST_SIZE, INDEX_HEADER_SIZE + (i + 1) * DIGEST_SIZE);
  return { level: expectLevel, entries };
}
