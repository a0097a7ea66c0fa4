/**
 * PackStore: where chunks and index pages live in a format-2 repository — many blobs per pack file,
 * found through `packindex` objects. Owns the in-memory (kind, digest) -> (pack, offset, length) table
 * (a BlobIndex: compact, first location wins) and the pack being filled.
 *
 * Write path and the ordering it keeps (see docs/design.md, repo section, "Invariants"):
 *   add()   appends an encoded blob to the open pack (in memory; readable and deduplicated at once) and,
 *           when the backend streams (Backend.openWriter), to the pack's temp file in the background.
 *           When the open pack reaches PACK_TARGET_SIZE it is sealed: its tail is appended and the
 *           writer committed (fsync + link + fsync dir), or, without a writer, the whole pack is stored
 *           with backend.put — durable when it resolves — while the next pack fills; at most
 *           PACK_UPLOADS packs are in flight, add() waits beyond that (bounded memory).
 *   a durable pack's entries go to the "unindexed" list; every PACK_INDEX_EVERY_PACKS packs, and at
 *   flush(), a `packindex` object listing them is stored (durable too).
 *   flush() seals the open pack, waits for every upload and writes the last pack index. Only after
 *           flush() resolves may a manifest reference the blobs (Repository.putObject('snapshots')
 *           calls it first). Any failure is sticky: flush() rethrows it, so no manifest is written.
 * A crash therefore leaves at most packs that no index names, or indexed blobs no manifest names:
 * garbage for prune, never a dangling reference.
 *
 * Dedup ("has") trusts: entries loaded from pack index objects (durable), blobs of this process's
 * durable packs, and blobs waiting in the open/uploading packs (durable before any manifest, or the
 * backup fails). reset() (taken after acquiring a repository lock) drops all of it and reloads.
 */
import type { Backend, ObjectWriter } from '../backend/Backend.js';
import { copyInto } from '../backend/copyInto.js';
import { ObjectNotFoundError } from '../backend/errors.js';
import { ObjectKind, PACK_INDEX_ENTRY_SIZE, PACK_INDEX_EVERY_PACKS, PACK_INDEX_MAX_ENTRIES, PACK_TARGET_SIZE, PACK_UPLOADS } from './constants.js';
import { CorruptObjectError } from './errors.js';
import { decodeObject, encodeObject, objectDigest, type RepoKeys } from './ObjectCodec.js';
import { BlobIndex, type BlobLocation } from './BlobIndex.js';
import { encodeBlobIndexCache, openBlobIndexCache, readBlobIndexCacheFile, writeBlobIndexCache, type CachedTable } from './BlobIndexCache.js';
import { decodePackIndex, encodePack, encodePackIndex, PackBuilder, type BlobKind, type PackIndexPack } from './PackFormat.js';

export type { BlobLocation } from './BlobIndex.js';

/** A pack being stored; `claimed`: flush() already put it into a pack index (published after it). */
interface Upload {
  pack: PackIndexPack;
  stored: Promise<void>;
  claimed: boolean;
}

interface OpenBlob {
  kind: BlobKind;
  digest: string;
  bytes: Buffer;
}

/**
 * A pack being filled. With a backend that streams (Backend.openWriter) its blobs are written to the
 * backend as they are added (`writer`), so sealing it only writes the tail and syncs; else they are
 * put in one piece at the seal.
 */
interface OpenPack {
  blobs: OpenBlob[];
  builder: PackBuilder;
  writer: ObjectWriter | null;
}

const key = (kind: BlobKind, digest: string): string => `${kind}${digest}`;

/** Pack index objects read at once while loading (hides per-object latency: open/read/close, a round trip). */
const INDEX_READS = 8;

/** Sequential reads fetch packs in 2 MiB windows and keep the last 8 (16 MiB). */
const READ_WINDOW = 2 * 1024 * 1024;
const READ_WINDOWS = 8;

export class PackStore {
  /**
   * Blobs known to be stored durably and indexed (or in this process's durable, soon-indexed packs),
   * and every indexed pack with its entries (as loaded + written by this process).
   */
  private index = new BlobIndex();
  /** Names of the pack index objects loaded. */
  private indexNames: string[] = [];
  /** Pack index objects that could not be read (their packs look unindexed). */
  private problems: Array<{ name: string; error: Error }> = [];
  private loaded: Promise<void> | null = null;
  private loadedAt = 0;

  /** Blobs not yet durable: the open pack, then packs being uploaded. */
  private pending = new Map<string, OpenBlob>();
  /** The open pack of each blob kind: chunks and index pages go to separate packs (restic's data and
   *  tree packs): tree walks (verify, prune's mark, restore) then read small page-only packs, and a
   *  damaged or missing data pack never takes index pages with it. */
  private open = new Map<BlobKind, OpenPack>();
  private uploads = new Set<Promise<void>>();
  private uploading = new Set<Upload>();
  private unindexed: PackIndexPack[] = [];
  private indexChain: Promise<void> = Promise.resolve();
  private failure: unknown = null;
  private generation = 0;
  /** Bytes of packs and pack indexes this process stored (stats). */
  packsWritten = 0;
  packBytesWritten = 0;
  indexBytesWritten = 0;

  constructor(
    readonly backend: Backend,
    private readonly keys: RepoKeys | null,
    private readonly targetSize = PACK_TARGET_SIZE,
    /** Where the local table cache lives (BlobIndexCache); null: none. */
    private readonly cacheDir: string | null = null,
  ) {}

  private cacheWrite: Promise<void> = Promise.resolve();

  /** The next load reads every pack index object, not the cache (reset({ readAll: true })). */
  private readAll = false;
  /** The cache file's bytes, read ahead by prefetchCache() for the next load. */
  private cacheFile: Promise<Buffer | null> | null = null;

  /**
   * Start reading the local cache file now (before the repository lock is taken: only bytes are read,
   * and the next load checks them against the pack indexes it lists under the lock), so the read is
   * not queued in libuv's pool behind the backup's chunk reads.
   */
  prefetchCache(): void {
    if (this.cacheDir) this.cacheFile ??= readBlobIndexCacheFile(this.cacheDir);
  }

  /** Load every pack index (once; again after reset()). Unreadable ones are recorded in indexProblems. */
  ensureLoaded(): Promise<void> {
    this.loaded ??= this.load();
    return this.loaded;
  }

  /**
   * Load every pack index into a fresh table, then swap it in (readers never see a half-built table).
   * `keepOwn`: also keep the packs this process added to the current table that the indexes listed do
   * not name (stored since the listing); false for a reload, which keeps only what the indexes say.
   */
  private async load(keepOwn = true): Promise<void> {
    const gen = this.generation;
    const listed: string[] = [];
    for await (const n of this.backend.list('packindex')) listed.push(n);
    // The local cache holds the table of a set of pack index objects, by name: usable while every one
    // of them is still listed (a prune that removed one makes it stale); the others are read below.
    let cached: CachedTable | null = null;
    if (this.cacheDir && !this.readAll) {
      const file = await (this.cacheFile ?? readBlobIndexCacheFile(this.cacheDir));
      this.cacheFile = null;
      cached = file && openBlobIndexCache(file, this.cacheDir, this.keys);
    }
    if (cached) {
      const have = new Set(listed);
      if (!cached.names.every((n) => have.has(n))) cached = null;
    }
    const inCache = new Set(cached?.names ?? []);
    const names = listed.filter((n) => !inCache.has(n));
    // Read them all first (a few at a time), then add them in listing order: their sizes bound the
    // number of entries, so the table is allocated once.
    const read: Array<{ name: string; plain: Buffer | null; error: CorruptObjectError | null } | null> = new Array(names.length).fill(null);
    let bytes = 0;
    let next = 0;
    const reader = async (): Promise<void> => {
      while (next < names.length) {
        const i = next++;
        try {
          const plain = await this.readIndexPlain(names[i]);
          read[i] = { name: names[i], plain, error: null };
          bytes += plain.length;
        } catch (err) {
          if (err instanceof ObjectNotFoundError) continue; // removed by a prune meanwhile
          if (!(err instanceof CorruptObjectError)) {
            next = names.length; // the others stop too
            throw err;
          }
          read[i] = { name: names[i], plain: null, error: err };
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(INDEX_READS, names.length) }, reader));
    const index = cached?.index ?? new BlobIndex(Math.ceil(bytes / PACK_INDEX_ENTRY_SIZE));
    const indexNames: string[] = cached?.names ?? [];
    const problems: Array<{ name: string; error: Error }> = [];
    for (const r of read) {
      if (!r) continue;
      const bad = r.plain ? index.addPackIndex(r.plain) : null;
      r.plain = null; // garbage as soon as it is in the table
      const error = r.error ?? (bad !== null ? new CorruptObjectError(this.backend.location, 'packindex', r.name, bad) : null);
      if (error) problems.push({ name: r.name, error });
      else indexNames.push(r.name);
    }
    if (gen !== this.generation) return;
    // Keep what this process added meanwhile (packs stored since the listing).
    if (keepOwn) for (const id of this.index.packIds()) if (!index.hasPack(id)) index.copyPack(this.index, id);
    for (const n of this.indexNames) if (!indexNames.includes(n)) indexNames.push(n);
    index.trim();
    this.index = index;
    this.indexNames = indexNames;
    this.problems = problems;
    this.loadedAt = Date.now();
  }

  /**
   * Write the local cache (when configured) from the current table, in the background: only when the
   * table is exactly what the durable pack indexes in `indexNames` say (nothing pending, unindexed or
   * unreadable). Encoded now (a snapshot), written later; failures are ignored (a cache is optional).
   */
  saveCache(): void {
    const dir = this.cacheDir;
    if (!dir || !this.loaded || this.problems.length > 0 || this.pending.size > 0 || this.uploads.size > 0 || this.unindexed.length > 0) return;
    const names = [...this.indexNames];
    const index = this.index;
    let snapshot: Buffer;
    try {
      snapshot = encodeBlobIndexCache(names, index);
    } catch {
      return; // a name the cache cannot hold (not a digest): no cache
    }
    this.cacheWrite = this.cacheWrite.then(() => writeBlobIndexCache(dir, this.keys, snapshot)).catch(() => undefined);
  }

  /** Resolves when cache writes started so far are done (close). */
  cacheSaved(): Promise<void> {
    return this.cacheWrite;
  }

  /** Read and decode one pack index object. */
  async readIndex(name: string): Promise<PackIndexPack[]> {
    const packs = decodePackIndex(await this.readIndexPlain(name));
    if (typeof packs === 'string') throw new CorruptObjectError(this.backend.location, 'packindex', name, packs);
    return packs;
  }

  /** The verified plaintext of one pack index object. */
  private async readIndexPlain(name: string): Promise<Buffer> {
    return decodeObject({ location: this.backend.location, type: 'packindex', name }, ObjectKind.packIndex, await this.backend.get('packindex', name), this.keys);
  }

  /** Drop everything known (after taking a lock, or after prune). Unflushed blobs are discarded. */
  reset(opts: { readAll?: boolean } = {}): void {
    this.generation++;
    this.readAll = opts.readAll ?? false;
    for (const o of this.open.values()) void o.writer?.abort(); // never rejects; removes its temp file
    this.index = new BlobIndex();
    this.indexNames = [];
    this.problems = [];
    this.loaded = null;
    this.pending = new Map();
    this.open = new Map();
    this.windows = new Map();
    this.unindexed = [];
    this.uploads = new Set();
    this.uploading = new Set();
    this.indexChain = Promise.resolve();
    this.failure = null;
  }

  /** Is the blob stored (or on its way, within this process)? Call ensureLoaded() first. */
  has(kind: BlobKind, digest: string): boolean {
    const k = key(kind, digest);
    return this.pending.has(k) || this.index.has(kind, digest);
  }

  /** Where an indexed blob is (undefined: not indexed or not yet durable). */
  locate(kind: BlobKind, digest: string): BlobLocation | undefined {
    return this.index.locate(kind, digest);
  }

  /** Pack index objects that failed to load (verify reports them, prune refuses to run). */
  get indexProblems(): ReadonlyArray<{ name: string; error: Error }> {
    return this.problems;
  }

  /** Names of the loaded pack index objects. */
  get indexObjects(): readonly string[] {
    return this.indexNames;
  }

  /**
   * Every indexed pack with its entries (duplicates included, in the order added). The lists are built
   * on demand from the compact table (maintenance commands, not hot paths): the same arrays for repeated
   * reads while held, until the table changes.
   */
  get indexedPacks(): ReadonlyMap<string, readonly BlobLocation[]> {
    return this.index.packLists();
  }

  /**
   * Append an encoded blob (an object envelope) unless the blob is known. Resolves whether it was added.
   * Waits while too many packs are being stored. Throws an earlier upload's failure.
   */
  async add(kind: BlobKind, digest: string, bytes: Buffer): Promise<boolean> {
    const gen = this.generation;
    await this.ensureLoaded();
    // Every caller waits while too many packs are being stored (a backup has hundreds of chunks in
    // flight: waiting only in the caller that sealed would let the others fill and seal more packs).
    // From the last check to the seal below nothing awaits, so at most PACK_UPLOADS + 1 are stored at once.
    while (this.uploads.size > PACK_UPLOADS) await Promise.race(this.uploads);
    // A reset meanwhile (the backup failed and aborted, or a lock was retaken): this blob belonged to
    // what was dropped and must not leak into the new state.
    if (gen !== this.generation) throw new Error('the pack store was reset while this blob waited (the backup was aborted)');
    if (this.failure) throw this.failure;
    if (this.has(kind, digest)) return false;
    const blob: OpenBlob = { kind, digest, bytes };
    this.pending.set(key(kind, digest), blob);
    let o = this.open.get(kind);
    if (!o) this.open.set(kind, (o = { blobs: [], builder: new PackBuilder(this.keys), writer: this.backend.openWriter?.('packs') ?? null }));
    o.blobs.push(blob);
    o.builder.add(kind, digest, bytes);
    void o.writer?.write(bytes); // not awaited: a failure is sticky and fails the pack's commit
    if (o.builder.size >= this.targetSize) this.seal(kind); // the next add waits for it, if it must
    return true;
  }

  /**
   * The raw envelope of a blob: from memory while pending, else a ranged read of its pack. null: unknown.
   * `sequential` (restore): read READ_WINDOW-sized aligned windows of the pack and keep the last few, so
   * blobs read in pack order cost one large read per window instead of one small read each.
   */
  async read(kind: BlobKind, digest: string, sequential = false): Promise<{ bytes: Buffer; where: BlobLocation | null } | null> {
    await this.ensureLoaded();
    const k = key(kind, digest);
    const p = this.pending.get(k);
    if (p) return { bytes: p.bytes, where: null };
    let loc = this.index.locate(kind, digest);
    if (!loc && Date.now() - this.loadedAt > 1000) {
      // Written by another process since we loaded the index (a long-lived reader): reload once.
      await this.reload();
      loc = this.index.locate(kind, digest);
    }
    if (!loc) return null;
    try {
      return await this.readAt(loc, sequential);
    } catch (err) {
      // A reader without a lock (restore, mount) may hold a map older than a prune that repacked this
      // blob into a new pack and removed the old one: reload the pack indexes once and retry.
      if (!(err instanceof ObjectNotFoundError) || this.pending.size > 0 || this.uploads.size > 0) throw err;
      await this.reload();
      const again = this.index.locate(kind, digest);
      if (!again || (again.pack === loc.pack && again.offset === loc.offset)) throw err;
      return this.readAt(again, sequential);
    }
  }

  private async readAt(loc: BlobLocation, sequential: boolean): Promise<{ bytes: Buffer; where: BlobLocation }> {
    if (sequential && loc.length <= READ_WINDOW) {
      const first = Math.floor(loc.offset / READ_WINDOW);
      const last = Math.floor((loc.offset + loc.length - 1) / READ_WINDOW);
      const parts: Buffer[] = [];
      for (let w = first; w <= last; w++) {
        const win = await this.window(loc.pack, w);
        const from = Math.max(loc.offset, w * READ_WINDOW) - w * READ_WINDOW;
        const to = Math.min(loc.offset + loc.length, (w + 1) * READ_WINDOW) - w * READ_WINDOW;
        parts.push(win.subarray(from, to));
      }
      return { bytes: parts.length === 1 ? parts[0] : Buffer.concat(parts), where: loc };
    }
    return { bytes: await this.readRange(loc.pack, loc.offset, loc.length), where: loc };
  }

  /** `length` bytes of a pack from `offset` (short at its end): one ranged read (restore's windows). */
  readPackRange(pack: string, offset: number, length: number, into?: Uint8Array): Promise<Buffer> {
    return this.readRange(pack, offset, length, into);
  }

  /** `into`: read into the caller's memory (the result is then a view of it). */
  private async readRange(pack: string, offset: number, length: number, into?: Uint8Array): Promise<Buffer> {
    const b = this.backend;
    if (b.getRange) return b.getRange('packs', pack, offset, length, into);
    return copyInto((await b.get('packs', pack)).subarray(offset, offset + length), into);
  }

  private windows = new Map<string, Promise<Buffer>>();

  /** Forget the windows kept by sequential reads (memory; the end of a restore). */
  dropReadCache(): void {
    this.windows = new Map();
  }

  /** Window `w` of a pack (a short read at the end of the pack), from a small LRU of recent windows. */
  private window(pack: string, w: number): Promise<Buffer> {
    const k = `${pack}:${w}`;
    let p = this.windows.get(k);
    if (p) {
      this.windows.delete(k); // LRU: move to the end
      this.windows.set(k, p);
      return p;
    }
    p = this.readRange(pack, w * READ_WINDOW, READ_WINDOW);
    p.catch(() => this.windows.delete(k));
    this.windows.set(k, p);
    while (this.windows.size > READ_WINDOWS) this.windows.delete(this.windows.keys().next().value!);
    return p;
  }

  private reloading: Promise<void> | null = null;

  /** Reload the pack indexes; concurrent callers share one reload. Not mid-backup (our map is complete). */
  private reload(): Promise<void> {
    if (this.pending.size > 0 || this.uploads.size > 0 || this.unindexed.length > 0) return Promise.resolve();
    this.reloading ??= (async () => {
      // Not reset(): concurrent readers keep using the current table until the new one is swapped in.
      this.indexNames = [];
      const p = this.load(false); // re-read: keep only what the backend's indexes say
      this.loaded = p;
      await p;
    })().finally(() => (this.reloading = null));
    return this.reloading;
  }

  /** Discard unflushed blobs (a failed backup) and wait for packs still being stored to settle. */
  async abort(): Promise<void> {
    const ups = [...this.uploads, this.indexChain, ...[...this.open.values()].map((o) => o.writer?.abort())];
    this.reset();
    await Promise.allSettled(ups);
  }

  /** Seal the open pack of `kind` and start storing it. */
  private seal(kind: BlobKind): void {
    const o = this.open.get(kind);
    if (!o || o.blobs.length === 0) return;
    const blobs = o.blobs;
    this.open.delete(kind);
    const gen = this.generation;
    const { id, tail } = o.builder.finish();
    const pack: PackIndexPack = { id, entries: o.builder.entries };
    const size = o.builder.size + tail.length;
    // Durable when it resolves (false: an identical pack exists).
    const writer = o.writer;
    const stored = writer
      ? (async () => {
          void writer.write(tail);
          await writer.commit(id);
        })()
      : (async () => void (await this.backend.put('packs', id, Buffer.concat([...blobs.map((b) => b.bytes), tail]))))();
    const upload: Upload = { pack, stored, claimed: false };
    this.uploading.add(upload);
    const task = stored
      .then(() => this.stored(upload, blobs, size, gen))
      .catch((err) => {
        if (gen !== this.generation) return;
        this.failure ??= err;
        for (const b of blobs) this.pending.delete(key(b.kind, b.digest));
      });
    const tracked: Promise<void> = task.finally(() => {
      this.uploads.delete(tracked);
      this.uploading.delete(upload);
    });
    this.uploads.add(tracked);
  }

  /** A pack is durable: index it (now, or in the pack index flush() already claimed it for). */
  private async stored(upload: Upload, blobs: OpenBlob[], size: number, gen: number): Promise<void> {
    if (gen !== this.generation) return;
    this.packsWritten++;
    this.packBytesWritten += size;
    this.index.addPack(upload.pack);
    for (const b of blobs) this.pending.delete(key(b.kind, b.digest));
    if (upload.claimed) return;
    // Queued for the next index now: a flush that runs before this upload leaves `uploading` (it does
    // once this resolves) must not claim it too, or the pack would be named by two pack indexes.
    upload.claimed = true;
    this.unindexed.push(upload.pack);
    if (this.unindexed.length >= PACK_INDEX_EVERY_PACKS) await this.writeIndex();
  }

  /**
   * Store a pack index object for the packs made durable since the last one (serialised), plus the
   * `claimed` packs still being stored: their index is published only once they are durable
   * (Backend.putAfter: its temp file is written and fsynced meanwhile).
   */
  private writeIndex(claimed: Upload[] = []): Promise<void> {
    const gen = this.generation;
    const run = this.indexChain.then(async () => {
      if (gen !== this.generation) return;
      const after = claimed.length > 0 ? Promise.all(claimed.map((u) => u.stored)) : null;
      const queue = [...this.unindexed.splice(0), ...claimed.map((u) => u.pack)];
      while (queue.length > 0) {
        const batch: PackIndexPack[] = [];
        let n = 0;
        while (queue.length > 0 && (batch.length === 0 || n + queue[0].entries.length <= PACK_INDEX_MAX_ENTRIES)) {
          const p = queue.shift()!;
          n += p.entries.length;
          batch.push(p);
        }
        try {
          const name = await this.putIndex(batch, after);
          if (gen === this.generation) this.indexNames.push(name);
        } catch (err) {
          // Not indexed: requeue what is durable (a claimed pack that failed to store is not).
          if (gen === this.generation) {
            const failed = new Set(await Promise.all(claimed.map((u) => u.stored.then(() => '', () => u.pack.id))));
            this.unindexed.unshift(...[...batch, ...queue].filter((p) => !failed.has(p.id)));
          }
          throw err;
        }
      }
    });
    this.indexChain = run.catch(() => undefined);
    return run;
  }

  /** Store one pack index object listing `packs`; resolves its name. */
  async putIndex(packs: PackIndexPack[], after: Promise<unknown> | null = null): Promise<string> {
    const plain = encodePackIndex(packs);
    const name = objectDigest(plain, this.keys);
    const bytes = encodeObject(ObjectKind.packIndex, plain, { keys: this.keys });
    let put: boolean;
    if (after && this.backend.putAfter) put = await this.backend.putAfter('packindex', name, bytes, after);
    else {
      await after;
      put = await this.backend.put('packindex', name, bytes);
    }
    if (put) this.indexBytesWritten += bytes.length;
    return name;
  }

  /**
   * Make every blob added so far durable and indexed. Throws (NoSpaceError, BackendIOError...) when any
   * pack or index could not be stored: then no manifest may reference blobs added since the last reset.
   */
  async flush(): Promise<void> {
    if (this.failure) throw this.failure;
    for (const kind of [...this.open.keys()]) this.seal(kind);
    // One pack index for everything not yet indexed — durable packs and the ones being stored — made
    // durable while they are (published only after them): no extra sequential fsync per flush.
    const claimed = [...this.uploading].filter((u) => !u.claimed);
    for (const u of claimed) u.claimed = true;
    let indexFailure: unknown = null;
    if (claimed.length > 0) await this.writeIndex(claimed).catch((err) => void (indexFailure = err));
    while (this.uploads.size > 0) await Promise.all(this.uploads);
    if (this.failure) throw this.failure;
    if (indexFailure) throw indexFailure; // its durable packs are queued again: the next flush retries
    await this.writeIndex();
    if (this.failure) throw this.failure;
  }

  /** Store a pack made of already-encoded blobs (prune's repacking); resolves its entries. */
  async writePack(blobs: Array<{ kind: BlobKind; digest: string; bytes: Buffer }>): Promise<PackIndexPack> {
    const { id, entries, bytes } = encodePack(blobs, this.keys);
    await this.backend.put('packs', id, bytes);
    return { id, entries };
  }
}
