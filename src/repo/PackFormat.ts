/**
 * Pure codecs for pack files and pack index objects (Buffer in, value out; no I/O). Byte layouts are
 * in docs/design.md (repo section, "Pack file" and "Pack index").
 *
 * Pack file:   blob 0 ‖ blob 1 ‖ … ‖ blob n-1 ‖ header envelope ‖ u32 LE header envelope length ‖ "TMPK"
 *   Each blob is a complete object envelope (ObjectCodec: own zstd flag, own nonce and GCM tag), so a
 *   blob is read and verified on its own with one ranged read. The header is an envelope of kind
 *   `packHeader` (encrypted like any object in an encrypted repository) whose plaintext lists each
 *   blob's kind, length and digest in file order (offsets are the running sum). A pack's name is the
 *   hex SHA-256 of the whole file, so damage anywhere is detectable without keys.
 *
 * Pack index:  the plaintext of a `packindex` object: for each pack, its id and the (digest, kind,
 *   offset, length) of its blobs. It is what lets a reader find a blob without opening every pack.
 */
import { createHash } from 'node:crypto';
import {
  DIGEST_SIZE,
  ObjectKind,
  PACK_HEADER_ENTRY_SIZE,
  PACK_HEADER_MAGIC,
  PACK_HEADER_SIZE,
  PACK_INDEX_ENTRY_SIZE,
  PACK_INDEX_HEADER_SIZE,
  PACK_INDEX_MAGIC,
  PACK_INDEX_PACK_SIZE,
  PACK_INDEX_VERSION,
  PACK_MAGIC,
  PACK_TRAILER_SIZE,
  PACK_VERSION,
} from './constants.js';
import { decodeObject, encodeObject, type RepoKeys } from './ObjectCodec.js';

/** A blob kind a pack may hold. */
export type BlobKind = typeof ObjectKind.chunk | typeof ObjectKind.indexPage;

export interface PackEntry {
  kind: BlobKind;
  /** Hex digest of the blob's plaintext (its object name). */
  digest: string;
  /** Byte offset of the blob's envelope inside the pack. */
  offset: number;
  /** Envelope length in bytes. */
  length: number;
}

export interface PackIndexPack {
  /** Hex SHA-256 of the pack file (its name). */
  id: string;
  entries: PackEntry[];
}

const HEX64 = /^[0-9a-f]{64}$/;

function isBlobKind(k: number): k is BlobKind {
  return k === ObjectKind.chunk || k === ObjectKind.indexPage;
}

/** The name of a pack: hex SHA-256 of its bytes. */
export function packId(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/**
 * A pack built a blob at a time (pure: no I/O), so its bytes can be written out as it fills: `add`
 * returns each blob's entry (its offset is the running sum), `finish` the tail that ends the pack and the
 * pack's name (the SHA-256 of every byte added, then of the tail, kept running). The pack's bytes are
 * exactly the added blobs in order followed by the tail.
 */
export class PackBuilder {
  readonly entries: PackEntry[] = [];
  /** Bytes of the blobs added so far (the offset of the next one). */
  size = 0;
  private readonly hash = createHash('sha256');
  private done = false;

  constructor(private readonly keys: RepoKeys | null) {}

  add(kind: BlobKind, digest: string, bytes: Uint8Array): PackEntry {
    if (this.done) throw new Error('PackBuilder: add after finish');
    const e: PackEntry = { kind, digest, offset: this.size, length: bytes.length };
    this.entries.push(e);
    this.hash.update(bytes);
    this.size += bytes.length;
    return e;
  }

  /** The tail (header envelope + trailer) and the pack's name. Call once. */
  finish(): { id: string; tail: Buffer } {
    if (this.done) throw new Error('PackBuilder: finish called twice');
    this.done = true;
    const tail = encodePackTail(this.entries, this.keys);
    return { id: this.hash.update(tail).digest('hex'), tail };
  }
}

/**
 * A whole pack (pure): the encoded blobs back to back from offset 0, then the tail naming them; its
 * entries (offsets into the pack) and its name.
 */
export function encodePack(blobs: ReadonlyArray<{ kind: BlobKind; digest: string; bytes: Buffer }>, keys: RepoKeys | null): { id: string; entries: PackEntry[]; bytes: Buffer } {
  const b = new PackBuilder(keys);
  for (const x of blobs) b.add(x.kind, x.digest, x.bytes);
  const { id, tail } = b.finish();
  return { id, entries: b.entries, bytes: Buffer.concat([...blobs.map((x) => x.bytes), tail]) };
}

/**
 * The tail of a pack: header envelope + trailer, for blobs laid out in `entries` order from offset 0.
 */
export function encodePackTail(entries: ReadonlyArray<Pick<PackEntry, 'kind' | 'digest' | 'length'>>, keys: RepoKeys | null): Buffer {
  const plain = Buffer.alloc(PACK_HEADER_SIZE + entries.length * PACK_HEADER_ENTRY_SIZE);
  plain.writeUInt32LE(PACK_HEADER_MAGIC, 0);
  plain[4] = PACK_VERSION;
  plain.writeUInt32LE(entries.length, 8);
  let p = PACK_HEADER_SIZE;
  for (const e of entries) {
    plain[p] = e.kind;
    plain.writeUInt32LE(e.length, p + 4);
    Buffer.from(e.digest, 'hex').copy(plain, p + 8);
    p += PACK_HEADER_ENTRY_SIZE;
  }
  const header = encodeObject(ObjectKind.packHeader, plain, { keys });
  const trailer = Buffer.alloc(PACK_TRAILER_SIZE);
  trailer.writeUInt32LE(header.length, 0);
  trailer.writeUInt32LE(PACK_MAGIC, 4);
  return Buffer.concat([header, trailer]);
}

/**
 * Parse a whole pack's header (the pack bytes are given in full). Returns the entries with offsets, or
 * a description of what is wrong (bad trailer, header that fails authentication, entries that do not
 * fit the file). `ref` names the pack in the CorruptObjectError a failing header decode throws; this
 * function catches it and returns its message.
 */
export function decodePack(bytes: Uint8Array, keys: RepoKeys | null, location: string, name: string): PackEntry[] | string {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (buf.length < PACK_TRAILER_SIZE) return `pack is ${buf.length} bytes, shorter than its trailer`;
  if (buf.readUInt32LE(buf.length - 4) !== PACK_MAGIC) return 'pack trailer magic is not "TMPK"';
  const hlen = buf.readUInt32LE(buf.length - 8);
  if (hlen > buf.length - PACK_TRAILER_SIZE) return `pack header length ${hlen} exceeds the file`;
  const hstart = buf.length - PACK_TRAILER_SIZE - hlen;
  let plain: Buffer;
  try {
    plain = decodeObject({ location, type: 'packs', name }, ObjectKind.packHeader, buf.subarray(hstart, hstart + hlen), keys, false);
  } catch (err) {
    return `pack header: ${(err as Error).message}`;
  }
  if (plain.length < PACK_HEADER_SIZE || plain.readUInt32LE(0) !== PACK_HEADER_MAGIC) return 'pack header magic is not "TMPH"';
  if (plain[4] !== PACK_VERSION) return `pack header version ${plain[4]} is not supported`;
  const count = plain.readUInt32LE(8);
  if (plain.length !== PACK_HEADER_SIZE + count * PACK_HEADER_ENTRY_SIZE) return `pack header of ${plain.length} bytes cannot hold ${count} entries`;
  const out: PackEntry[] = [];
  let offset = 0;
  for (let i = 0, p = PACK_HEADER_SIZE; i < count; i++, p += PACK_HEADER_ENTRY_SIZE) {
    const kind = plain[p];
    if (!isBlobKind(kind) || plain[p + 1] !== 0 || plain[p + 2] !== 0 || plain[p + 3] !== 0) return `pack header entry ${i} has kind ${kind}`;
    const length = plain.readUInt32LE(p + 4);
    out.push({ kind, digest: plain.subarray(p + 8, p + 8 + DIGEST_SIZE).toString('hex'), offset, length });
    offset += length;
  }
  if (offset !== hstart) return `pack blobs end at ${offset} but the header starts at ${hstart}`;
  return out;
}

/** Encode a pack index plaintext. */
export function encodePackIndex(packs: ReadonlyArray<PackIndexPack>): Buffer {
  let n = 0;
  for (const p of packs) n += p.entries.length;
  const buf = Buffer.alloc(PACK_INDEX_HEADER_SIZE + packs.length * PACK_INDEX_PACK_SIZE + n * PACK_INDEX_ENTRY_SIZE);
  buf.writeUInt32LE(PACK_INDEX_MAGIC, 0);
  buf[4] = PACK_INDEX_VERSION;
  buf.writeUInt32LE(packs.length, 8);
  let o = PACK_INDEX_HEADER_SIZE;
  for (const p of packs) {
    if (!HEX64.test(p.id)) throw new TypeError(`encodePackIndex: bad pack id ${p.id}`);
    Buffer.from(p.id, 'hex').copy(buf, o);
    buf.writeUInt32LE(p.entries.length, o + 32);
    o += PACK_INDEX_PACK_SIZE;
    for (const e of p.entries) {
      if (!HEX64.test(e.digest)) throw new TypeError(`encodePackIndex: bad digest ${e.digest}`);
      Buffer.from(e.digest, 'hex').copy(buf, o);
      buf[o + 32] = e.kind;
      buf.writeUInt32LE(e.offset, o + 36);
      buf.writeUInt32LE(e.length, o + 40);
      o += PACK_INDEX_ENTRY_SIZE;
    }
  }
  return buf;
}

/**
 * Receives one pack of a pack index plaintext from scanPackIndex: its id (hex), and its `count`
 * entries, PACK_INDEX_ENTRY_SIZE bytes each from `buf[at]` (digest 32, kind 1, reserved 3, offset u32 LE,
 * length u32 LE; the kinds already checked). `buf` is only valid during the call.
 */
export type PackIndexVisitor = (id: string, buf: Buffer, at: number, count: number) => void;

/**
 * Validate a pack index plaintext, then hand each of its packs to `visit` in order (pure; no object or
 * string per entry). Returns a description of the first defect — and then visits nothing — or null.
 * decodePackIndex is this plus one object per entry, so both give the same verdict on every input.
 */
export function scanPackIndex(plain: Uint8Array, visit: PackIndexVisitor): string | null {
  const buf = Buffer.from(plain.buffer, plain.byteOffset, plain.byteLength);
  if (buf.length < PACK_INDEX_HEADER_SIZE || buf.readUInt32LE(0) !== PACK_INDEX_MAGIC) return 'pack index magic is not "TMPI"';
  if (buf[4] !== PACK_INDEX_VERSION) return `pack index version ${buf[4]} is not supported`;
  const packCount = buf.readUInt32LE(8);
  let o = PACK_INDEX_HEADER_SIZE;
  for (let i = 0; i < packCount; i++) {
    if (o + PACK_INDEX_PACK_SIZE > buf.length) return `pack index truncated in pack ${i}`;
    const count = buf.readUInt32LE(o + 32);
    const start = o;
    const id = (): string => buf.toString('hex', start, start + 32);
    o += PACK_INDEX_PACK_SIZE;
    if (o + count * PACK_INDEX_ENTRY_SIZE > buf.length) return `pack index truncated in the entries of pack ${id()}`;
    for (let j = 0; j < count; j++, o += PACK_INDEX_ENTRY_SIZE) {
      const kind = buf[o + 32];
      if (!isBlobKind(kind)) return `pack index entry ${j} of pack ${id()} has kind ${kind}`;
    }
  }
  if (o !== buf.length) return `pack index has ${buf.length - o} trailing bytes`;
  o = PACK_INDEX_HEADER_SIZE;
  for (let i = 0; i < packCount; i++) {
    const count = buf.readUInt32LE(o + 32);
    visit(buf.toString('hex', o, o + 32), buf, o + PACK_INDEX_PACK_SIZE, count);
    o += PACK_INDEX_PACK_SIZE + count * PACK_INDEX_ENTRY_SIZE;
  }
  return null;
}

/** Decode a pack index plaintext; a string describes what is wrong (scanPackIndex's verdict). */
export function decodePackIndex(plain: Uint8Array): PackIndexPack[] | string {
  const out: PackIndexPack[] = [];
  const bad = scanPackIndex(plain, (id, buf, at, count) => {
    const entries: PackEntry[] = [];
    for (let j = 0; j < count; j++, at += PACK_INDEX_ENTRY_SIZE) {
      entries.push({ digest: buf.toString('hex', at, at + 32), kind: buf[at + 32] as BlobKind, offset: buf.readUInt32LE(at + 36), length: buf.readUInt32LE(at + 40) });
    }
    out.push({ id, entries });
  });
  return bad ?? out;
}
