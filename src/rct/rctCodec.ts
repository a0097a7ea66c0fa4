import { crc32c } from '@node-rs/crc32';
import { CorruptError } from '../errors.js';
import { MAX_BLOCK_SIZE, MIN_BLOCK_SIZE, PAGE_BITS, PAGE_BYTES, RCT_HEADER_SIZE, RCT_MAGIC, RCT_VERSION } from './constants.js';

/** How the tracker recognises writers other than itself (see docs/design.md (rct section), "Identity checks"). */
export type IdentityKind = 'none' | 'device' | 'file';
const KINDS: IdentityKind[] = ['none', 'device', 'file'];

export const RCT_FLAG_CLEAN = 1;
export const RCT_FLAG_UNBOUND = 2;

/** Everything a `.rct` file holds. Pure data. */
export interface RctFileState {
  tracker: string;
  diskSize: number;
  blockSize: number;
  /** Configured .mrt region size; 0 = automatic from the disk size. */
  regionSize: number;
  clean: boolean;
  /** Enabled but never opened: size and identity not yet recorded, no IDs. */
  unbound: boolean;
  generation: number;
  persistSeq: number;
  leaseUntil: number;
  createdAt: number;
  identityKind: IdentityKind;
  identities: string[];
  invalidation: { reason: string; at: number; previousTracker: string | null } | null;
  ids: Array<{ gen: number; nonce: string; createdAt: number; pages: Array<[number, Uint8Array]> }>;
}

function u64(buf: Buffer, off: number, v: number): void {
  buf.writeBigUInt64LE(BigInt(v), off);
}
function r64(buf: Buffer, off: number, file: string, what: string): number {
  const v = buf.readBigUInt64LE(off);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new CorruptError(file, 'rct header', `${what} ${v} is out of range`);
  return Number(v);
}

/** Encode a `.rct` file (layout: docs/design.md (rct section)). */
export function encodeRct(s: RctFileState): Buffer {
  const parts: Buffer[] = [];
  for (const id of s.identities) {
    const b = Buffer.from(id, 'utf8');
    const len = Buffer.alloc(2);
    len.writeUInt16LE(b.length);
    parts.push(len, b);
  }
  const inv = s.invalidation ? Buffer.from(JSON.stringify(s.invalidation), 'utf8') : Buffer.alloc(0);
  const invLen = Buffer.alloc(2);
  invLen.writeUInt16LE(inv.length);
  parts.push(invLen, inv);
  for (const id of s.ids) {
    const h = Buffer.alloc(28);
    u64(h, 0, id.gen);
    Buffer.from(id.nonce, 'hex').copy(h, 8);
    u64(h, 16, id.createdAt);
    h.writeUInt32LE(id.pages.length, 24);
    parts.push(h);
    for (const [pi, page] of id.pages) {
      const ph = Buffer.alloc(4);
      ph.writeUInt32LE(pi);
      parts.push(ph, Buffer.from(page.buffer, page.byteOffset, PAGE_BYTES));
    }
  }
  const body = Buffer.concat(parts);
  const out = Buffer.alloc(RCT_HEADER_SIZE + body.length);
  out.write(RCT_MAGIC, 0, 'latin1');
  out.writeUInt32LE(RCT_VERSION, 8);
  out.writeUInt32LE(RCT_HEADER_SIZE, 12);
  Buffer.from(s.tracker, 'hex').copy(out, 16);
  u64(out, 32, s.diskSize);
  out.writeUInt32LE(s.blockSize, 40);
  out.writeUInt32LE((s.clean ? RCT_FLAG_CLEAN : 0) | (s.unbound ? RCT_FLAG_UNBOUND : 0), 44);
  u64(out, 48, s.generation);
  u64(out, 56, s.persistSeq);
  u64(out, 64, s.leaseUntil);
  u64(out, 72, s.createdAt);
  u64(out, 80, s.regionSize);
  out.writeUInt32LE(s.ids.length, 88);
  out.writeUInt32LE(KINDS.indexOf(s.identityKind), 92);
  out.writeUInt32LE(s.identities.length, 96);
  out.writeUInt32LE(body.length, 100);
  body.copy(out, RCT_HEADER_SIZE);
  out.writeUInt32LE(crc32c(out), 124);
  return out;
}

/** Decode and validate a `.rct` file; throws CorruptError naming the file and structure. */
export function decodeRct(buf: Buffer, file: string): RctFileState {
  const bad = (structure: string, detail: string) => new CorruptError(file, structure, detail);
  if (buf.length < RCT_HEADER_SIZE) throw bad('rct header', `file is ${buf.length} bytes, shorter than the ${RCT_HEADER_SIZE}-byte header`);
  if (buf.toString('latin1', 0, 8) !== RCT_MAGIC) throw bad('rct header', 'bad signature (not a Tidemark .rct file)');
  const version = buf.readUInt32LE(8);
  if (version !== RCT_VERSION) throw bad('rct header', `unsupported version ${version}`);
  if (buf.readUInt32LE(12) !== RCT_HEADER_SIZE) throw bad('rct header', 'bad header size');
  const bodyLen = buf.readUInt32LE(100);
  if (RCT_HEADER_SIZE + bodyLen !== buf.length) throw bad('rct header', `length ${buf.length} does not match header (${RCT_HEADER_SIZE + bodyLen})`);
  const stored = buf.readUInt32LE(124);
  const copy = Buffer.from(buf);
  copy.writeUInt32LE(0, 124);
  if (crc32c(copy) !== stored) throw bad('rct file', 'checksum mismatch');
  const flags = buf.readUInt32LE(44);
  const blockSize = buf.readUInt32LE(40);
  if (blockSize < MIN_BLOCK_SIZE || blockSize > MAX_BLOCK_SIZE || (blockSize & (blockSize - 1)) !== 0) throw bad('rct header', `block size ${blockSize} is not a power of two in [${MIN_BLOCK_SIZE}, ${MAX_BLOCK_SIZE}]`);
  const kind = KINDS[buf.readUInt32LE(92)];
  if (!kind) throw bad('rct header', 'unknown identity kind');
  const s: RctFileState = {
    tracker: buf.toString('hex', 16, 32),
    diskSize: r64(buf, 32, file, 'disk size'),
    blockSize,
    clean: (flags & RCT_FLAG_CLEAN) !== 0,
    unbound: (flags & RCT_FLAG_UNBOUND) !== 0,
    generation: r64(buf, 48, file, 'generation'),
    persistSeq: r64(buf, 56, file, 'sequence'),
    leaseUntil: r64(buf, 64, file, 'lease'),
    createdAt: r64(buf, 72, file, 'creation time'),
    regionSize: r64(buf, 80, file, 'region size'),
    identityKind: kind,
    identities: [],
    invalidation: null,
    ids: [],
  };
  const idCount = buf.readUInt32LE(88);
  const identityCount = buf.readUInt32LE(96);
  let p = RCT_HEADER_SIZE;
  const need = (n: number, what: string) => {
    if (p + n > buf.length) throw bad(what, 'runs past the end of the file');
  };
  for (let i = 0; i < identityCount; i++) {
    need(2, 'identity');
    const n = buf.readUInt16LE(p);
    need(2 + n, 'identity');
    s.identities.push(buf.toString('utf8', p + 2, p + 2 + n));
    p += 2 + n;
  }
  need(2, 'invalidation note');
  const invLen = buf.readUInt16LE(p);
  need(2 + invLen, 'invalidation note');
  if (invLen > 0) {
    try {
      s.invalidation = JSON.parse(buf.toString('utf8', p + 2, p + 2 + invLen));
    } catch {
      throw bad('invalidation note', 'not valid JSON');
    }
  }
  p += 2 + invLen;
  const blocks = Math.ceil(s.diskSize / s.blockSize);
  let prevGen = 0;
  for (let i = 0; i < idCount; i++) {
    need(28, `ID record ${i}`);
    const gen = r64(buf, p, file, 'ID generation');
    if (gen <= prevGen || gen >= s.generation) throw bad(`ID record ${i}`, `generation ${gen} out of order or not below the current generation ${s.generation}`);
    prevGen = gen;
    const id = { gen, nonce: buf.toString('hex', p + 8, p + 16), createdAt: r64(buf, p + 16, file, 'ID time'), pages: [] as Array<[number, Uint8Array]> };
    const pages = buf.readUInt32LE(p + 24);
    p += 28;
    let prevPage = -1;
    for (let j = 0; j < pages; j++) {
      need(4 + PAGE_BYTES, `ID record ${i} page ${j}`);
      const pi = buf.readUInt32LE(p);
      if (pi <= prevPage || pi * PAGE_BITS >= Math.max(blocks, 1)) throw bad(`ID record ${i} page ${j}`, `page index ${pi} out of order or past the disk end`);
      prevPage = pi;
      id.pages.push([pi, new Uint8Array(buf.subarray(p + 4, p + 4 + PAGE_BYTES))]);
      p += 4 + PAGE_BYTES;
    }
    s.ids.push(id);
  }
  if (p !== buf.length) throw bad('rct file', `${buf.length - p} trailing bytes`);
  return s;
}
