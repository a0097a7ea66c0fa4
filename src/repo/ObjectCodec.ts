/**
 * The object envelope: how every chunk, index page, manifest and lock is stored. Pure (Buffer in,
 * Buffer out). Layout (little-endian), see docs/design.md (repo section):
 *
 *   0  u32 magic "TMOB"   4 u8 version   5 u8 kind   6 u8 flags (1 zstd, 2 aes-256-gcm)   7 u8 0
 *   8  u32 plaintext length   12 u32 body length
 *   16 [12-byte nonce]  body  [16-byte GCM tag]      (nonce and tag only when encrypted)
 *
 * Order of operations: compress, then encrypt (AES-256-GCM, fresh random nonce, the 16 header bytes as
 * associated data). The object's name is its digest: SHA-256 of the plaintext, or HMAC-SHA256 with the
 * repository's id key when encrypted (so names reveal nothing about content). `decodeObject` checks all
 * of it and throws CorruptObjectError naming the object on any mismatch.
 */
import * as crypto from 'node:crypto';
import { createCipheriv, createDecipheriv, createHash, createHmac, randomBytes } from 'node:crypto';
import {
  FLAG_AES_GCM,
  FLAG_ZSTD,
  GCM_NONCE_SIZE,
  GCM_TAG_SIZE,
  MAX_OBJECT_PLAIN,
  OBJECT_HEADER_SIZE,
  OBJECT_MAGIC,
  OBJECT_VERSION,
  type ObjectKind,
} from './constants.js';
import { CorruptObjectError } from './errors.js';
import { zstd } from './zstd.js';

/** The master key's two halves. */
export interface RepoKeys {
  /** AES-256-GCM key for object bodies. */
  encKey: Buffer;
  /** HMAC-SHA256 key for object names. */
  idKey: Buffer;
}

export interface EncodeOptions {
  keys?: RepoKeys | null;
  /** zstd level; 0 or absent zstd stores plaintext. */
  zstdLevel?: number;
}

/** Where an object lives, for error messages. */
export interface ObjectRef {
  location: string;
  type: string;
  name: string;
}

/** The name of an object holding `plain`. */
export function objectDigest(plain: Uint8Array, keys?: RepoKeys | null): string {
  if (keys) return createHmac('sha256', keys.idKey).update(plain).digest('hex');
  // crypto.hash (Node >= 20.12) skips the Hash object: measurably faster for 32 KiB chunks.
  return oneShotHash ? oneShotHash('sha256', plain, 'hex') : createHash('sha256').update(plain).digest('hex');
}

const oneShotHash = (crypto as { hash?: (algorithm: string, data: Uint8Array, encoding: 'hex') => string }).hash;

/** Objects at least this large are probed: their first PROBE_BYTES are compressed first. */
const PROBE_FROM = 16 * 1024;
const PROBE_BYTES = 4096;
/** A probe that saves less than this fraction: the object is taken as incompressible and stored. */
const PROBE_MIN_SAVING = 0.03;
/**
 * The probe's zstd level: 1 judges like the default level 3 (it keeps Huffman-coded literals, which
 * negative levels drop) at two thirds of the time (measured 6.4 vs 9.7 µs per random 4 KiB).
 */
const PROBE_LEVEL = 1;
let probeScratch: Buffer | null = null;

/**
 * zstd-compress `plain` into `into`, which has room for compressBound(plain.length) bytes: nothing is
 * thrown for data that does not shrink (a zstd "does not fit" error costs more than the compression:
 * measured 15-20 µs per failed 32 KiB attempt). Resolves the compressed length, or -1 to store `plain`
 * as is (it did not get smaller). Large objects are probed first: when neither their first nor their
 * last 4 KiB shrink by 3%, the rest is not tried (random or already-compressed data then costs two
 * probes, ~13 µs, instead of a full attempt, ~27 µs per 32 KiB). Both ends, because a write that ends
 * inside a chunk leaves new random data at its head and old text after.
 */
function compressBody(plain: Uint8Array, level: number, into: Uint8Array): number {
  if (!zstd || plain.length < 64) return -1;
  if (plain.length >= PROBE_FROM) {
    probeScratch ??= Buffer.allocUnsafe(zstd.compressBound(PROBE_BYTES));
    const shrinks = (part: Uint8Array): boolean => zstd!.compressInto(probeScratch!, part, PROBE_LEVEL) <= PROBE_BYTES * (1 - PROBE_MIN_SAVING);
    if (!shrinks(plain.subarray(0, PROBE_BYTES)) && !shrinks(plain.subarray(plain.length - PROBE_BYTES))) return -1;
  }
  const n = zstd.compressInto(into, plain, level);
  return n < plain.length ? n : -1;
}

/** Room compressBody needs for `n` plaintext bytes. */
const bodyRoom = (n: number): number => (zstd && n >= 64 ? Math.max(n, zstd.compressBound(n)) : n);

export function encodeObject(kind: ObjectKind, plain: Uint8Array, opts: EncodeOptions = {}): Buffer {
  if (plain.length > MAX_OBJECT_PLAIN) throw new RangeError(`object of ${plain.length} bytes exceeds ${MAX_OBJECT_PLAIN}`);
  const level = opts.zstdLevel ?? 0;
  const header = (flags: number, bodyLength: number, into = Buffer.allocUnsafe(OBJECT_HEADER_SIZE)): Buffer => {
    into.writeUInt32LE(OBJECT_MAGIC, 0);
    into[4] = OBJECT_VERSION;
    into[5] = kind;
    into[6] = flags;
    into[7] = 0;
    into.writeUInt32LE(plain.length, 8);
    into.writeUInt32LE(bodyLength, 12);
    return into;
  };
  if (!opts.keys) {
    // One buffer: header, then the compressed body written in place, or the plaintext.
    const out = Buffer.allocUnsafe(OBJECT_HEADER_SIZE + (level ? bodyRoom(plain.length) : plain.length));
    const n = level ? compressBody(plain, level, out.subarray(OBJECT_HEADER_SIZE)) : -1;
    if (n < 0) {
      out.set(plain, OBJECT_HEADER_SIZE);
      return header(0, plain.length, out.length === OBJECT_HEADER_SIZE + plain.length ? out : out.subarray(0, OBJECT_HEADER_SIZE + plain.length));
    }
    header(FLAG_ZSTD, n, out);
    // A small result is copied out: the pack keeps the blob until it is durable.
    return n < plain.length / 2 ? Buffer.from(out.subarray(0, OBJECT_HEADER_SIZE + n)) : out.subarray(0, OBJECT_HEADER_SIZE + n);
  }
  let flags = FLAG_AES_GCM;
  let body: Uint8Array = plain;
  if (level) {
    const scratch = Buffer.allocUnsafe(bodyRoom(plain.length));
    const n = compressBody(plain, level, scratch);
    if (n >= 0) {
      body = scratch.subarray(0, n);
      flags |= FLAG_ZSTD;
    }
  }
  const head = header(flags, body.length);
  const nonce = randomBytes(GCM_NONCE_SIZE);
  const cipher = createCipheriv('aes-256-gcm', opts.keys.encKey, nonce);
  cipher.setAAD(head);
  const ct = Buffer.concat([cipher.update(body), cipher.final()]);
  return Buffer.concat([head, nonce, ct, cipher.getAuthTag()]);
}

/**
 * Decode and verify an object: header, authentication, decompression, length and digest == name.
 * `checkName: false` skips the digest check (for objects not named by digest). `share`: a stored
 * (uncompressed, unencrypted) plaintext may be returned as a view of `bytes` instead of a copy (the
 * caller copies or drops it before `bytes` changes).
 */
export function decodeObject(ref: ObjectRef, kind: ObjectKind, bytes: Uint8Array, keys?: RepoKeys | null, checkName = true, share = false): Buffer {
  let plain = openObject(ref, kind, bytes, keys);
  if (!share && plain.buffer === bytes.buffer) plain = Buffer.from(plain);
  if (checkName) checkObjectName(ref, plain, keys);
  return plain;
}

/**
 * Every check of decodeObject but the digest, copying as little as it can. The plaintext is a view of
 * `bytes` when the object is stored (unencrypted, uncompressed); with `into`, a compressed or encrypted
 * object's plaintext is written at the start of `into` and the result is a view of it (restore decodes
 * straight into shared buffers); otherwise a new buffer. CorruptObjectError names the object on any
 * mismatch, also when the plaintext would not fit `into`.
 */
export function openObject(ref: ObjectRef, kind: ObjectKind, bytes: Uint8Array, keys?: RepoKeys | null, into?: Uint8Array): Buffer {
  const bad = (detail: string): CorruptObjectError => new CorruptObjectError(ref.location, ref.type, ref.name, detail);
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (buf.length < OBJECT_HEADER_SIZE) throw bad(`${buf.length} bytes is shorter than the ${OBJECT_HEADER_SIZE}-byte header`);
  if (buf.readUInt32LE(0) !== OBJECT_MAGIC) throw bad('bad magic (not a Tidemark object)');
  if (buf[4] !== OBJECT_VERSION) throw bad(`unknown object version ${buf[4]}`);
  if (buf[5] !== kind) throw bad(`holds object kind ${buf[5]}, expected ${kind}`);
  const flags = buf[6];
  if (flags & ~(FLAG_ZSTD | FLAG_AES_GCM) || buf[7] !== 0) throw bad(`unknown flags 0x${flags.toString(16)}`);
  const plainLen = buf.readUInt32LE(8);
  const bodyLen = buf.readUInt32LE(12);
  if (plainLen > MAX_OBJECT_PLAIN) throw bad(`claims ${plainLen} plaintext bytes`);
  const encrypted = (flags & FLAG_AES_GCM) !== 0;
  if (encrypted !== !!keys) throw bad(encrypted ? 'is encrypted but the repository is not' : 'is not encrypted but the repository is');
  const expectLen = OBJECT_HEADER_SIZE + bodyLen + (encrypted ? GCM_NONCE_SIZE + GCM_TAG_SIZE : 0);
  if (buf.length !== expectLen) throw bad(`is ${buf.length} bytes, header says ${expectLen}`);
  if (into && into.length < plainLen) throw bad(`claims ${plainLen} plaintext bytes, more than a chunk can hold (${into.length})`);
  const target = into ? Buffer.from(into.buffer, into.byteOffset, into.byteLength) : null;
  let body: Buffer;
  if (keys) {
    const nonce = buf.subarray(OBJECT_HEADER_SIZE, OBJECT_HEADER_SIZE + GCM_NONCE_SIZE);
    const ct = buf.subarray(OBJECT_HEADER_SIZE + GCM_NONCE_SIZE, buf.length - GCM_TAG_SIZE);
    try {
      const d = createDecipheriv('aes-256-gcm', keys.encKey, nonce);
      d.setAAD(buf.subarray(0, OBJECT_HEADER_SIZE));
      d.setAuthTag(buf.subarray(buf.length - GCM_TAG_SIZE));
      const head = d.update(ct);
      const tail = d.final();
      body = tail.length === 0 ? head : Buffer.concat([head, tail]);
    } catch {
      throw bad('authentication failed (AES-GCM tag mismatch)');
    }
  } else {
    body = buf.subarray(OBJECT_HEADER_SIZE);
  }
  let plain: Buffer;
  if (flags & FLAG_ZSTD) {
    if (!zstd) throw bad('is zstd-compressed but the zstd-napi addon is not available in this build');
    try {
      plain = target ? target.subarray(0, zstd.decompressInto(target, body)) : zstd.decompress(body);
    } catch (err) {
      throw bad(`zstd decompression failed (${(err as Error).message})`);
    }
  } else if (keys && target) {
    plain = target.subarray(0, body.copy(target, 0, 0, Math.min(body.length, target.length)));
  } else {
    plain = body;
  }
  if (plain.length !== plainLen) throw bad(`decodes to ${plain.length} bytes, header says ${plainLen}`);
  return plain;
}

/** CorruptObjectError unless `plain`'s digest is the object's name. */
export function checkObjectName(ref: ObjectRef, plain: Uint8Array, keys?: RepoKeys | null): void {
  const d = objectDigest(plain, keys);
  if (d !== ref.name) throw new CorruptObjectError(ref.location, ref.type, ref.name, `content digest ${d.slice(0, 16)}… does not match its name`);
}
