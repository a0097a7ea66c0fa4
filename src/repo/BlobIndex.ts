/**
 * BlobIndex: the in-memory table (kind, digest) -> (pack, offset, length) of a repository's packed blobs,
 * built from its pack index objects at the start of every backup, restore, verify and prune.
 *
 * How it works. Every entry added (duplicates included: per-pack lists must keep them) is one 48-byte
 * record in a single Int32Array, in insertion order: the digest as 8 words (read little-endian from the
 * digest bytes, whatever the platform), kind, pack number (into a table of pack ids), offset, length
 * (u32s kept as their int32 bits). An open-addressing table (linear probing, power-of-two size, at most
 * half full) of record numbers + 1 (0: empty) maps (kind, digest) to the FIRST record of that blob: a
 * blob found in several packs is located in the first one added, like the Map this replaced. Both
 * arrays grow by doubling (PackStore sizes them once from the pack indexes' byte sizes); trim() drops
 * the records' slack. That is 48 B per entry plus 8-16 B of table per distinct blob and no JS object or
 * string per entry: ~8 MiB and ~40-60 ms for 131 072 blobs, where the Map of objects and key strings
 * took ~27 MiB and ~300-400 ms (bench/repo.ts).
 *
 * Per-pack lists (prune, verify, stats) are the runs of records added under each pack id, materialised
 * as BlobLocation objects only when asked (packLists()).
 *
 * Digests are uniformly random (SHA-256 / HMAC-SHA256), but the slot hash mixes all eight words anyway,
 * so structured digests (tests, damaged input) cost probes, never correctness.
 */
import { DIGEST_SIZE, ObjectKind, PACK_INDEX_ENTRY_SIZE } from './constants.js';
import { scanPackIndex, type BlobKind, type PackEntry, type PackIndexPack } from './PackFormat.js';

/** Where a blob is: its pack and its entry. */
export interface BlobLocation extends PackEntry {
  pack: string;
}

/** Words per record: digest (8), kind, pack number, offset, length. */
export const BLOB_INDEX_STRIDE = 12;
const STRIDE = BLOB_INDEX_STRIDE;
const W_KIND = 8;
const W_PACK = 9;
const W_OFFSET = 10;
const W_LENGTH = 11;
/** Value of a lowercase hex digit by char code; -1: not one (uppercase too: digests are lowercase). */
const NIBBLE = new Int8Array(128).fill(-1);
for (let c = 0; c < 16; c++) NIBBLE['0123456789abcdef'.charCodeAt(c)] = c;

/** What BlobIndex.parts() gives and fromParts() takes. */
export interface BlobIndexParts {
  /** STRIDE (12) int32 words per record: digest words (8), kind, pack number, offset, length. */
  records: Int32Array;
  /** Open-addressing table: record number + 1, 0 empty; a power of two long. */
  slots: Int32Array;
  distinct: number;
  ids: readonly string[];
  /** Per pack number: [start, count, ...] runs of its records. */
  runs: ReadonlyArray<readonly number[]>;
}

export class BlobIndex {
  /** Records, STRIDE words each, in insertion order (offset and length stored as their int32 bits). */
  private rec: Int32Array;
  /** Records used. */
  private count = 0;
  /** Open addressing: record number + 1 of the first record of each (kind, digest); 0 = empty. */
  private slots: Int32Array;
  private mask: number;
  /** Distinct (kind, digest) pairs in `slots`. */
  private distinct = 0;
  private ids: string[] = [];
  private packNos = new Map<string, number>();
  /** Per pack number: [start, count, start, count, ...] runs of its records, in the order added. */
  private runs: number[][] = [];
  /** Bumped by every change (invalidates the materialised per-pack lists). */
  private version = 0;
  private view: PackListView | null = null;
  /** A digest being looked up: as bytes (binary lookups, hex output) and as words. */
  private readonly scratch = Buffer.alloc(DIGEST_SIZE);
  private readonly key = new Int32Array(8);

  /** `capacity`: entries to make room for at once (the arrays grow by doubling beyond it). */
  constructor(capacity = 256) {
    const cap = Math.max(16, capacity);
    this.rec = new Int32Array(cap * STRIDE);
    let slots = 32;
    while (slots < cap * 2) slots *= 2;
    this.slots = new Int32Array(slots);
    this.mask = slots - 1;
  }

  /** Distinct blobs ((kind, digest) pairs). */
  get size(): number {
    return this.distinct;
  }

  /** Entries added, duplicates included (the sum of the per-pack list lengths). */
  get entries(): number {
    return this.count;
  }

  /** Packs known (with or without entries). */
  get packCount(): number {
    return this.ids.length;
  }

  /** Bytes held by the table's arrays (records + slots); excludes the pack id strings. */
  get byteSize(): number {
    return this.rec.byteLength + this.slots.byteLength;
  }

  /**
   * Add the blobs of every pack named by a pack index plaintext, without an object or string per entry.
   * Validates first: a defective plaintext adds nothing and returns decodePackIndex's description of
   * the defect; null when added.
   */
  addPackIndex(plain: Uint8Array): string | null {
    const view = new DataView(plain.buffer, plain.byteOffset, plain.byteLength);
    return scanPackIndex(plain, (id, buf, at, n) => {
      const no = this.packNo(id);
      this.reserve(n);
      while ((this.distinct + n) * 2 > this.slots.length) this.grow();
      // commit(), inlined with everything in locals: this loop is the whole cost of loading an index.
      const rec = this.rec;
      const slots = this.slots;
      const mask = this.mask;
      const start = this.count;
      let added = 0;
      for (let r = start, end = start + n; r < end; r++, at += PACK_INDEX_ENTRY_SIZE) {
        const k = r * STRIDE;
        for (let w = 0; w < 8; w++) rec[k + w] = view.getInt32(at + 4 * w, true);
        const kind = view.getUint8(at + 32);
        rec[k + W_KIND] = kind;
        rec[k + W_PACK] = no;
        rec[k + W_OFFSET] = view.getInt32(at + 36, true);
        rec[k + W_LENGTH] = view.getInt32(at + 40, true);
        for (let s = BlobIndex.hash(rec, k, kind) & mask; ; s = (s + 1) & mask) {
          const v = slots[s];
          if (v === 0) {
            slots[s] = r + 1;
            added++;
            break;
          }
          if (BlobIndex.same(rec, (v - 1) * STRIDE, k)) break; // first wins
        }
      }
      this.count = start + n;
      this.distinct += added;
      this.addRun(no, start, n);
    });
  }

  /**
   * Add a pack's entries (an entry whose blob is already known is kept in the pack's list only).
   * Throws a TypeError, adding nothing, if a digest is not 64 lowercase hex digits or a kind not a blob's.
   */
  addPack(p: PackIndexPack): void {
    for (const e of p.entries) {
      if (!this.parse(e.digest) || (e.kind !== ObjectKind.chunk && e.kind !== ObjectKind.indexPage)) throw new TypeError(`BlobIndex.addPack: bad entry ${e.kind}/${e.digest} in pack ${p.id}`);
    }
    const no = this.packNo(p.id);
    this.reserve(p.entries.length);
    const start = this.count;
    for (const e of p.entries) {
      this.parse(e.digest);
      this.rec.set(this.key, this.count * STRIDE);
      this.commit(e.kind, no, e.offset, e.length);
    }
    this.addRun(no, start, p.entries.length);
  }

  /** Add the entries `from` holds for pack `id` (in its order), without materialising them. */
  copyPack(from: BlobIndex, id: string): void {
    if (from === this) throw new TypeError('BlobIndex.copyPack: copying a pack into its own index');
    const src = from.packNos.get(id);
    if (src === undefined) return;
    const no = this.packNo(id);
    const runs = from.runs[src];
    for (let i = 0; i < runs.length; i += 2) {
      const n = runs[i + 1];
      this.reserve(n);
      const start = this.count;
      for (let k = runs[i] * STRIDE, end = (runs[i] + n) * STRIDE; k < end; k += STRIDE) {
        this.rec.set(from.rec.subarray(k, k + 8), this.count * STRIDE);
        this.commit(from.rec[k + W_KIND], no, from.rec[k + W_OFFSET], from.rec[k + W_LENGTH]);
      }
      this.addRun(no, start, n);
    }
  }

  /** Is the blob (hex digest) indexed? */
  has(kind: BlobKind, digest: string): boolean {
    return this.parse(digest) && this.find(kind) >= 0;
  }

  /** Where the blob (hex digest) is: the first location added. undefined: not indexed. */
  locate(kind: BlobKind, digest: string): BlobLocation | undefined {
    if (!this.parse(digest)) return undefined;
    const r = this.find(kind);
    return r < 0 ? undefined : this.location(r, digest);
  }

  /** locate() by a binary digest (32 bytes). */
  locateDigest(kind: BlobKind, digest: Uint8Array): BlobLocation | undefined {
    if (digest.length !== DIGEST_SIZE) return undefined;
    this.scratch.set(digest);
    this.loadKey();
    const r = this.find(kind);
    return r < 0 ? undefined : this.location(r, this.scratch.toString('hex'));
  }

  /** Is a pack known (even with no entries)? */
  hasPack(id: string): boolean {
    return this.packNos.has(id);
  }

  /** Known pack ids, in the order first added. */
  packIds(): readonly string[] {
    return this.ids;
  }

  /**
   * Every pack with its entries (all of them, duplicates included, in the order added), as a live
   * read-only map whose lists are materialised on access: the same array, with the same objects, for
   * repeated reads while the caller holds it and the table has not changed (a list read before a change
   * is not updated by it).
   */
  packLists(): ReadonlyMap<string, readonly BlobLocation[]> {
    return (this.view ??= new PackListView({
      ids: this.ids,
      number: (id) => this.packNos.get(id),
      list: (no) => this.materialise(no),
      version: () => this.version,
    }));
  }

  /**
   * The table's state (views of its arrays, not copies: serialise before changing the table), for the
   * local cache (BlobIndexCache).
   */
  parts(): BlobIndexParts {
    return { records: this.rec.subarray(0, this.count * STRIDE), slots: this.slots, distinct: this.distinct, ids: this.ids, runs: this.runs };
  }

  /**
   * A table from parts() of another (the arrays are taken, not copied). Validates what a damaged cache
   * could break — array sizes, pack numbers, runs and slots in range, kinds — and returns a description
   * of the problem instead of a table; the cache's checksum guards the rest.
   */
  static fromParts(p: BlobIndexParts): BlobIndex | string {
    const count = p.records.length / STRIDE;
    if (!Number.isInteger(count)) return `records of ${p.records.length} words are not whole`;
    const slots = p.slots.length;
    if (slots < 32 || (slots & (slots - 1)) !== 0) return `slot table of ${slots} is not a power of two >= 32`;
    if (p.distinct > count || p.distinct * 2 > slots) return `${p.distinct} distinct blobs do not fit ${count} records / ${slots} slots`;
    if (p.runs.length !== p.ids.length) return `${p.runs.length} run lists for ${p.ids.length} packs`;
    let used = 0;
    for (let i = 0; i < slots; i++) {
      const v = p.slots[i];
      if (v < 0 || v > count) return `slot ${i} names record ${v - 1} of ${count}`;
      if (v !== 0) used++;
    }
    if (used !== p.distinct) return `${used} slots used, ${p.distinct} distinct blobs claimed`;
    for (let r = 0; r < count; r++) {
      const k = r * STRIDE;
      const kind = p.records[k + W_KIND];
      if (kind !== ObjectKind.chunk && kind !== ObjectKind.indexPage) return `record ${r} has kind ${kind}`;
      if (p.records[k + W_PACK] < 0 || p.records[k + W_PACK] >= p.ids.length) return `record ${r} names pack ${p.records[k + W_PACK]} of ${p.ids.length}`;
    }
    for (const runs of p.runs) {
      for (let i = 0; i < runs.length; i += 2) if (!(runs[i] >= 0 && runs[i + 1] > 0 && runs[i] + runs[i + 1] <= count)) return `run ${runs[i]}+${runs[i + 1]} outside ${count} records`;
    }
    const t = new BlobIndex(16);
    t.rec = p.records;
    t.count = count;
    t.slots = p.slots;
    t.mask = slots - 1;
    t.distinct = p.distinct;
    t.ids = [...p.ids];
    t.runs = p.runs.map((r) => [...r]);
    t.ids.forEach((id, no) => t.packNos.set(id, no));
    if (t.packNos.size !== t.ids.length) return 'a pack id is listed twice';
    return t;
  }

  /** Drop the records' growth slack (after a bulk load) if it is more than 1/16 of them. */
  trim(): void {
    const need = Math.max(16, this.count) * STRIDE;
    if (this.rec.length - need > need / 16) this.rec = this.rec.slice(0, need);
  }

  /** The entries of pack `no`, materialised. */
  private materialise(no: number): BlobLocation[] {
    const out: BlobLocation[] = [];
    const runs = this.runs[no];
    const id = this.ids[no];
    for (let i = 0; i < runs.length; i += 2) {
      for (let r = runs[i], end = runs[i] + runs[i + 1]; r < end; r++) out.push(this.location(r, this.hexOf(r), id));
    }
    return out;
  }

  private location(r: number, digest: string, pack?: string): BlobLocation {
    const k = r * STRIDE;
    const rec = this.rec;
    return { kind: rec[k + W_KIND] as BlobKind, digest, offset: rec[k + W_OFFSET] >>> 0, length: rec[k + W_LENGTH] >>> 0, pack: pack ?? this.ids[rec[k + W_PACK]] };
  }

  private hexOf(r: number): string {
    const k = r * STRIDE;
    for (let w = 0; w < 8; w++) this.scratch.writeInt32LE(this.rec[k + w], 4 * w);
    return this.scratch.toString('hex');
  }

  /** Parse a lowercase 64-digit hex digest into `key` (words read little-endian); false if it is not one. */
  private parse(digest: string): boolean {
    if (digest.length !== 2 * DIGEST_SIZE) return false;
    const key = this.key;
    for (let w = 0, c = 0; w < 8; w++) {
      let word = 0;
      for (let b = 0; b < 32; b += 8, c += 2) {
        const hi = NIBBLE[digest.charCodeAt(c) & 127];
        const lo = NIBBLE[digest.charCodeAt(c + 1) & 127];
        if ((hi | lo) < 0 || digest.charCodeAt(c) > 127 || digest.charCodeAt(c + 1) > 127) return false;
        word |= ((hi << 4) | lo) << b;
      }
      key[w] = word;
    }
    return true;
  }

  private loadKey(): void {
    for (let w = 0; w < 8; w++) this.key[w] = this.scratch.readInt32LE(4 * w);
  }

  private packNo(id: string): number {
    let no = this.packNos.get(id);
    if (no === undefined) {
      no = this.ids.length;
      this.ids.push(id);
      this.runs.push([]);
      this.packNos.set(id, no);
      this.version++;
    }
    return no;
  }

  private addRun(no: number, start: number, n: number): void {
    if (n > 0) this.runs[no].push(start, n);
    this.version++;
  }

  /** Room for `n` more records. */
  private reserve(n: number): void {
    const need = (this.count + n) * STRIDE;
    if (need <= this.rec.length) return;
    let len = Math.max(this.rec.length * 2, 16 * STRIDE); // a table from fromParts() may hold no records
    while (len < need) len *= 2;
    const rec = new Int32Array(len);
    rec.set(this.rec.subarray(0, this.count * STRIDE));
    this.rec = rec;
  }

  /** Slot hash of the digest words at rec[k..k+8) and a kind. */
  private static hash(words: Int32Array, k: number, kind: number): number {
    let h = kind;
    for (let w = 0; w < 8; w++) h = Math.imul(h ^ words[k + w], 0x9e3779b1) ^ (h >>> 15);
    h ^= h >>> 16;
    h = Math.imul(h, 0x85ebca6b);
    return h ^ (h >>> 13);
  }

  /** Record number of the first record of (kind, `key`), or -1. */
  private find(kind: number): number {
    const key = this.key;
    const rec = this.rec;
    const slots = this.slots;
    for (let s = BlobIndex.hash(key, 0, kind) & this.mask; ; s = (s + 1) & this.mask) {
      const v = slots[s];
      if (v === 0) return -1;
      const k = (v - 1) * STRIDE;
      if (rec[k + W_KIND] === kind && rec[k] === key[0] && rec[k + 1] === key[1] && rec[k + 2] === key[2] && rec[k + 3] === key[3] &&
        rec[k + 4] === key[4] && rec[k + 5] === key[5] && rec[k + 6] === key[6] && rec[k + 7] === key[7]) return v - 1;
    }
  }

  /** Finish the record whose digest words were just written at record `count` (room reserved); index it unless its blob is known. */
  private commit(kind: number, pack: number, offset: number, length: number): void {
    const r = this.count++;
    const k = r * STRIDE;
    const rec = this.rec;
    rec[k + W_KIND] = kind;
    rec[k + W_PACK] = pack;
    rec[k + W_OFFSET] = offset;
    rec[k + W_LENGTH] = length;
    if ((this.distinct + 1) * 2 > this.slots.length) this.grow();
    const slots = this.slots;
    for (let s = BlobIndex.hash(rec, k, kind) & this.mask; ; s = (s + 1) & this.mask) {
      const v = slots[s];
      if (v === 0) {
        slots[s] = r + 1;
        this.distinct++;
        return;
      }
      if (BlobIndex.same(rec, (v - 1) * STRIDE, k)) return; // first wins
    }
  }

  /** Do records at rec[a] and rec[b] have the same kind and digest? */
  private static same(rec: Int32Array, a: number, b: number): boolean {
    return rec[a + W_KIND] === rec[b + W_KIND] && rec[a] === rec[b] && rec[a + 1] === rec[b + 1] && rec[a + 2] === rec[b + 2] && rec[a + 3] === rec[b + 3] &&
      rec[a + 4] === rec[b + 4] && rec[a + 5] === rec[b + 5] && rec[a + 6] === rec[b + 6] && rec[a + 7] === rec[b + 7];
  }

  /** Double the slot table and re-insert every indexed record. */
  private grow(): void {
    const old = this.slots;
    const slots = new Int32Array(old.length * 2);
    const mask = slots.length - 1;
    const rec = this.rec;
    for (let i = 0; i < old.length; i++) {
      const v = old[i];
      if (v === 0) continue;
      const k = (v - 1) * STRIDE;
      let s = BlobIndex.hash(rec, k, rec[k + W_KIND]) & mask;
      while (slots[s] !== 0) s = (s + 1) & mask;
      slots[s] = v;
    }
    this.slots = slots;
    this.mask = mask;
  }
}

/**
 * The per-pack lists of a BlobIndex as a read-only Map. A list is materialised when first read and
 * remembered weakly: the same array while anyone holds it and the table has not changed, garbage once
 * dropped (a long-lived process that ran verify or stats does not keep ~200 B per blob of objects).
 */
class PackListView implements ReadonlyMap<string, readonly BlobLocation[]> {
  private cache = new Map<number, WeakRef<BlobLocation[]>>();
  private seen = -1;

  /** `ids`: pack ids by pack number (live); `number`: an id's pack number; `list`: materialise a pack's entries; `version`: the table's change counter. */
  constructor(private readonly packs: { ids: readonly string[]; number(id: string): number | undefined; list(no: number): BlobLocation[]; version(): number }) {}

  get size(): number {
    return this.packs.ids.length;
  }

  has(id: string): boolean {
    return this.packs.number(id) !== undefined;
  }

  get(id: string): readonly BlobLocation[] | undefined {
    const no = this.packs.number(id);
    return no === undefined ? undefined : this.list(no);
  }

  *entries(): MapIterator<[string, readonly BlobLocation[]]> {
    const ids = this.packs.ids;
    for (let no = 0; no < ids.length; no++) yield [ids[no], this.list(no)];
  }

  *keys(): MapIterator<string> {
    yield* this.packs.ids;
  }

  *values(): MapIterator<readonly BlobLocation[]> {
    for (const [, v] of this.entries()) yield v;
  }

  [Symbol.iterator](): MapIterator<[string, readonly BlobLocation[]]> {
    return this.entries();
  }

  forEach(fn: (value: readonly BlobLocation[], key: string, map: ReadonlyMap<string, readonly BlobLocation[]>) => void, thisArg?: unknown): void {
    for (const [k, v] of this.entries()) fn.call(thisArg, v, k, this);
  }

  private list(no: number): BlobLocation[] {
    if (this.seen !== this.packs.version()) {
      this.cache.clear();
      this.seen = this.packs.version();
    }
    let l = this.cache.get(no)?.deref();
    if (!l) this.cache.set(no, new WeakRef((l = this.packs.list(no))));
    return l;
  }
}
