/**
 * The repository: typed, verified, deduplicated objects over a Backend.
 *
 * - chunks: one fixed-size piece of a disk (the last one of a disk may be shorter), named by digest.
 *   All-zero chunks are never stored: their digest is ZERO_DIGEST.
 * - index pages (src/repo/IndexPage.ts), the Merkle tree mapping chunk number -> digest.
 *   Chunks and index pages are *blobs* stored many per pack file (src/repo/PackStore.ts), found
 *   through `packindex` objects.
 * - `snapshots`: manifests (restore points), written last.
 * - `locks`: shared/exclusive locks (src/repo/Lock.ts).
 * - `keys`, `config`: plain JSON.
 *
 * Every object but config and keys goes through the envelope (src/repo/ObjectCodec.ts) and is named
 * by its digest; every read is verified against the name.
 */
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import type { Backend, ObjectType } from '../backend/Backend.js';
import { ObjectNotFoundError } from '../backend/errors.js';
import { DEFAULT_ZSTD_LEVEL, ObjectKind, ZERO_DIGEST } from './constants.js';
import { CorruptObjectError, PassphraseMismatchError, RepositoryExistsError, RepositoryNotFoundError, UnsupportedRepositoryError, WrongPassphraseError } from './errors.js';
import { createKeyFile, newMasterKey, openKeyFile, splitMasterKey, type ScryptParams } from './KeyFile.js';
import { decodeObject, encodeObject, objectDigest, type RepoKeys } from './ObjectCodec.js';
import { decodeRepoConfig, encodeRepoConfig, isChunkSize, isFanout, newRepoConfig, type RepoConfig } from './RepoConfig.js';
import { UsageError } from '../errors.js';
import { zstd } from './zstd.js';
import { decodeBlobs, type DecodeBlobsResult, type WindowBlob } from './decodeBlobs.js';
import { CodecPool } from './CodecPool.js';
import type { BlobKind } from './PackFormat.js';
import { PackStore, type BlobLocation } from './PackStore.js';
import { packWindows } from './packWindows.js';

export interface InitOptions extends Pick<OpenOptions, 'workers' | 'packSize' | 'cacheRoot'> {
  /** Encrypt the repository under this passphrase (`repo init --encrypt`). */
  passphrase?: string;
  /** Default chunk size for new disks (power of two, 4 KiB..4 MiB). */
  chunkSize?: number;
  /** Digests per index page. */
  fanout?: number;
  /** Default 'zstd' when the addon loads. */
  compression?: 'none' | 'zstd';
  /** scrypt parameters for the key file (tests lower N). */
  scrypt?: ScryptParams;
}

export interface OpenOptions {
  passphrase?: string;
  /**
   * Worker threads that digest/compress/encrypt chunks (0: inline on the main thread, the default).
   * Call close() when done so the workers exit.
   */
  workers?: number;
  /** Pack target size in bytes (default PACK_TARGET_SIZE, 16 MiB; tests use small packs). */
  packSize?: number;
  /**
   * Keep a local cache of the pack index table under `<cacheRoot>/<repository id>/` (BlobIndexCache):
   * later opens read one file instead of every pack index object. None by default (library); the CLI
   * uses defaultCacheRoot() (`$TIDEMARK_CACHE_DIR`, else `~/.cache/tidemark`).
   */
  cacheRoot?: string;
}

/** Counters of what this Repository instance stored (for stats and tests). */
export interface WriteStats {
  chunksWritten: number;
  chunkBytesWritten: number;
  chunksDeduplicated: number;
  pagesWritten: number;
  pageBytesWritten: number;
}

const KIND: Partial<Record<ObjectType, ObjectKind>> = { chunks: ObjectKind.chunk, index: ObjectKind.indexPage, snapshots: ObjectKind.manifest, locks: ObjectKind.lock, packindex: ObjectKind.packIndex };

const BLOB_KIND: Partial<Record<ObjectType, BlobKind>> = { chunks: ObjectKind.chunk, index: ObjectKind.indexPage };

/** getIndexPages: two pages at most this far apart in a pack are read together, ... */
const PAGE_READ_GAP = 256 * 1024;
/** ... in one ranged read of at most this many bytes. */
const PAGE_READ_SPAN = 4 * 1024 * 1024;

export class Repository {
  readonly stats: WriteStats = { chunksWritten: 0, chunkBytesWritten: 0, chunksDeduplicated: 0, pagesWritten: 0, pageBytesWritten: 0 };
  /**
   * Chunks and index pages: packs + pack indexes, and the in-memory map of what is stored. Its
   * knowledge is valid only while a lock is held: runBackup resets it after taking its lock, prune
   * after sweeping.
   */
  readonly packs: PackStore;
  private readonly inflight = new Map<string, Promise<number>>();
  private readonly zstdLevel: number;
  private pool: CodecPool | null = null;

  private constructor(
    readonly backend: Backend,
    readonly config: RepoConfig,
    private readonly keys: RepoKeys | null,
    opts: Pick<OpenOptions, 'workers' | 'packSize' | 'cacheRoot'> = {},
  ) {
    this.zstdLevel = config.compression === 'zstd' && zstd ? DEFAULT_ZSTD_LEVEL : 0;
    if ((opts.workers ?? 0) > 0) this.pool = new CodecPool(opts.workers!, keys, this.zstdLevel);
    this.packs = new PackStore(backend, keys, opts.packSize, opts.cacheRoot ? join(opts.cacheRoot, config.id) : null);
  }

  /**
   * Make every chunk and page stored so far durable and indexed, then stop the codec workers, if any.
   * The repository stays usable (inline encoding).
   */
  async close(): Promise<void> {
    const p = this.pool;
    this.pool = null;
    try {
      await this.packs.flush();
    } finally {
      await p?.close();
      await this.packs.cacheSaved();
    }
  }

  /**
   * Refresh the local pack index cache (when one is configured) in the background, from what this
   * process knows now: call after a manifest was written (everything is flushed). close() waits for it.
   */
  saveCache(): void {
    this.packs.saveCache();
  }

  /** Make every chunk and index page stored so far durable and indexed (a manifest may then name them). */
  flush(): Promise<void> {
    return this.packs.flush();
  }

  /**
   * Create a repository in an empty backend. Throws RepositoryExistsError when a config exists.
   * With a passphrase: a random master key wrapped in a scrypt key file (keys/<sha256 of file>).
   */
  static async init(backend: Backend, opts: InitOptions = {}): Promise<Repository> {
    if (opts.chunkSize !== undefined && !isChunkSize(opts.chunkSize)) throw new UsageError(`chunk size ${opts.chunkSize} must be a power of two between 4 KiB and 4 MiB`);
    if (opts.fanout !== undefined && !isFanout(opts.fanout)) throw new UsageError(`fanout ${opts.fanout} must be an integer in 2..65536`);
    if (opts.passphrase !== undefined && opts.passphrase.length === 0) throw new UsageError('the passphrase must not be empty');
    if (await backend.has('config', 'config')) throw new RepositoryExistsError(backend.location);
    const encrypted = opts.passphrase !== undefined;
    const compression = opts.compression ?? (zstd ? 'zstd' : 'none');
    if (compression === 'zstd' && !zstd) throw new UsageError('zstd compression was requested but the zstd-napi addon is not available; use compression none');
    const config = newRepoConfig(randomBytes(16).toString('hex'), { encrypted, compression, chunkSize: opts.chunkSize, fanout: opts.fanout });
    let keys: RepoKeys | null = null;
    if (encrypted) {
      const master = newMasterKey();
      const file = await createKeyFile(master, opts.passphrase!, opts.scrypt);
      await backend.put('keys', objectDigest(file), file);
      keys = splitMasterKey(master);
    }
    // The config goes last: a repository is visible only once its key exists.
    if (!(await backend.put('config', 'config', encodeRepoConfig(config)))) throw new RepositoryExistsError(backend.location);
    return new Repository(backend, config, keys, opts);
  }

  /** Open an existing repository; an encrypted one needs its passphrase (WrongPassphraseError otherwise). */
  static async open(backend: Backend, opts: OpenOptions = {}): Promise<Repository> {
    let raw: Buffer;
    try {
      raw = await backend.get('config', 'config');
    } catch (err) {
      if (err instanceof ObjectNotFoundError) throw new RepositoryNotFoundError(backend.location);
      throw err;
    }
    const config = decodeRepoConfig(raw);
    if (typeof config === 'string') {
      if (config.startsWith('repository format version 1 ')) throw new UnsupportedRepositoryError(backend.location, config, 'there are no format-1 users to migrate: re-init the repository');
      throw new UnsupportedRepositoryError(backend.location, config);
    }
    if (config.compression === 'zstd' && !zstd) throw new UnsupportedRepositoryError(backend.location, 'the repository is zstd-compressed but the zstd-napi addon is not available');
    const encrypted = config.encryption !== 'none';
    if (encrypted !== (opts.passphrase !== undefined)) throw new PassphraseMismatchError(backend.location, encrypted);
    if (!encrypted) return new Repository(backend, config, null, opts);
    for await (const name of backend.list('keys')) {
      let master: Buffer | null;
      try {
        master = await openKeyFile(await backend.get('keys', name), opts.passphrase!);
      } catch {
        continue; // not a key file we understand; try the others
      }
      if (master) return new Repository(backend, config, splitMasterKey(master), opts);
    }
    throw new WrongPassphraseError(backend.location);
  }

  get encrypted(): boolean {
    return this.keys !== null;
  }

  get location(): string {
    return this.backend.location;
  }

  /** The repository's keys (null when unencrypted), for codecs that run beside it (prune, verify). */
  get objectKeys(): RepoKeys | null {
    return this.keys;
  }

  /** The digest (object name) of `plain` in this repository. */
  digest(plain: Uint8Array): string {
    return objectDigest(plain, this.keys);
  }

  /**
   * Store an object under its digest unless it exists: chunks and index pages go into packs (durable
   * at the next flush); a manifest (`snapshots`) first flushes, so it only ever names durable, indexed
   * blobs; locks and pack indexes are objects of their own. Resolves its name and the bytes written
   * (0 when it was already stored).
   */
  async putObject(type: ObjectType, plain: Uint8Array, beforePublish?: () => Promise<void>): Promise<{ name: string; written: number }> {
    const kind = KIND[type];
    if (!kind) throw new TypeError(`putObject: ${type} objects are not enveloped`);
    const name = this.digest(plain);
    const blobKind = BLOB_KIND[type];
    if (blobKind) return { name, written: await this.putBlob(blobKind, name, () => encodeObject(kind, plain, { keys: this.keys, zstdLevel: this.zstdLevel })) };
    const bytes = encodeObject(kind, plain, { keys: this.keys, zstdLevel: this.zstdLevel });
    if (type === 'snapshots') {
      // Published only once every blob is durable and indexed (flush), and `beforePublish` (an abort
      // check) passed; the manifest's own file is written and fsynced meanwhile (Backend.putAfter):
      // one sequential fsync stage less at the end of every backup.
      const ready = (async () => {
        await this.packs.flush();
        await beforePublish?.();
      })();
      if (this.backend.putAfter) return { name, written: (await this.backend.putAfter(type, name, bytes, ready)) ? bytes.length : 0 };
      await ready;
    }
    // A lock need not survive a crash (its holder did not); it must never be read torn: content fsynced,
    // directory not (docs/design.md, repo section, "Invariants": fsyncs).
    return { name, written: (await this.backend.put(type, name, bytes, type === 'locks' ? { nameDurable: false } : undefined)) ? bytes.length : 0 };
  }

  /** Add a blob to the open pack unless known; resolves the bytes added (0: known). */
  private async putBlob(kind: BlobKind, name: string, encode: () => Buffer): Promise<number> {
    await this.packs.ensureLoaded();
    if (this.packs.has(kind, name)) return 0;
    const k = `${kind}${name}`;
    const pending = this.inflight.get(k);
    if (pending) {
      await pending; // someone else is storing the same blob: it is theirs to count
      return 0;
    }
    const p = (async () => {
      const bytes = encode();
      return (await this.packs.add(kind, name, bytes)) ? bytes.length : 0;
    })();
    this.inflight.set(k, p);
    try {
      return await p;
    } finally {
      this.inflight.delete(k);
    }
  }

  /**
   * Read and verify an object; CorruptObjectError names it on any mismatch, ObjectNotFoundError if absent.
   * `sequential`: see getChunk.
   */
  async getObject(type: ObjectType, name: string, sequential = false): Promise<Buffer> {
    const kind = KIND[type];
    if (!kind) throw new TypeError(`getObject: ${type} objects are not enveloped`);
    const blobKind = BLOB_KIND[type];
    if (!blobKind) return decodeObject({ location: this.backend.location, type, name }, kind, await this.backend.get(type, name), this.keys);
    let r;
    try {
      r = await this.packs.read(blobKind, name, sequential);
    } catch (err) {
      if (err instanceof ObjectNotFoundError) throw new ObjectNotFoundError(this.backend.location, type, name); // its pack is gone
      throw err;
    }
    if (!r) throw new ObjectNotFoundError(this.backend.location, type, name);
    try {
      return decodeObject({ location: this.backend.location, type, name }, kind, r.bytes, this.keys);
    } catch (err) {
      if (err instanceof CorruptObjectError && r.where) Object.assign(err.data, { pack: r.where.pack, offset: r.where.offset });
      throw err;
    }
  }

  /**
   * Several index pages at once, each verified like getObject('index', d): located in the pack
   * indexes, sorted by (pack, offset), and blobs of one pack at most PAGE_READ_GAP apart read with one
   * ranged read of at most PAGE_READ_SPAN (an incremental's scattered leaves sit close together in the
   * previous backup's tree packs: a few reads instead of hundreds). Pages not indexed (still pending in
   * this process) go through getObject. Resolves digest -> plaintext; a damaged page rejects with
   * CorruptObjectError naming it, its pack and offset.
   */
  async getIndexPages(digests: readonly string[]): Promise<Map<string, Buffer>> {
    await this.packs.ensureLoaded();
    const out = new Map<string, Buffer>();
    const located: BlobLocation[] = [];
    const rest: string[] = [];
    for (const d of new Set(digests)) {
      const loc = this.packs.locate(ObjectKind.indexPage, d);
      if (loc) located.push(loc);
      else rest.push(d);
    }
    const groups = packWindows(located, (l) => l, { gap: PAGE_READ_GAP, span: PAGE_READ_SPAN });
    const readGroup = async (g: BlobLocation[]): Promise<void> => {
      const start = g[0].offset;
      let bytes: Buffer;
      try {
        bytes = await this.packs.readPackRange(g[0].pack, start, g[g.length - 1].offset + g[g.length - 1].length - start);
      } catch (err) {
        if (!(err instanceof ObjectNotFoundError)) throw err;
        for (const loc of g) out.set(loc.digest, await this.getObject('index', loc.digest)); // repacked meanwhile
        return;
      }
      for (const loc of g) {
        const ref = { location: this.backend.location, type: 'index', name: loc.digest };
        try {
          if (loc.offset - start + loc.length > bytes.length) throw new CorruptObjectError(ref.location, 'index', loc.digest, `the pack ends before the blob (offset ${loc.offset}, length ${loc.length})`);
          out.set(loc.digest, decodeObject(ref, ObjectKind.indexPage, bytes.subarray(loc.offset - start, loc.offset - start + loc.length), this.keys));
        } catch (err) {
          if (err instanceof CorruptObjectError) Object.assign(err.data, { pack: loc.pack, offset: loc.offset });
          throw err;
        }
      }
    };
    await Promise.all([...groups.map(readGroup), ...rest.map(async (d) => void out.set(d, await this.getObject('index', d)))]);
    return out;
  }

  /** Store a chunk (deduplicated); an all-zero chunk is not stored and yields ZERO_DIGEST. */
  async putChunk(data: Uint8Array): Promise<string> {
    return (await this.storeChunk(data)).digest;
  }

  /** Like putChunk, also saying how many bytes were written (0: zero chunk or already present). */
  async storeChunk(data: Uint8Array): Promise<{ digest: string; written: number }> {
    if (isAllZero(data)) return { digest: ZERO_DIGEST, written: 0 };
    let name: string;
    let written: number;
    if (this.pool) {
      // A view of a bigger buffer (backup reads units of several chunks) is copied: posting the view
      // would clone its whole underlying buffer.
      const enc = await this.pool.encode(data.byteLength === data.buffer.byteLength ? data : Buffer.from(data));
      name = enc.digest;
      written = await this.putBlob(ObjectKind.chunk, name, () => enc.bytes);
    } else {
      ({ name, written } = await this.putObject('chunks', data));
    }
    if (written > 0) {
      this.stats.chunksWritten++;
      this.stats.chunkBytesWritten += written;
    } else {
      this.stats.chunksDeduplicated++;
    }
    return { digest: name, written };
  }

  /**
   * Read a chunk, verified against its digest. ZERO_DIGEST reads as `zeroLength` zero bytes.
   * `sequential`: the caller reads many chunks in backup order (restore): read packs in large windows.
   */
  async getChunk(digest: string, zeroLength = this.config.chunkSize, opts: { sequential?: boolean } = {}): Promise<Buffer> {
    if (digest === ZERO_DIGEST) return Buffer.alloc(zeroLength);
    return this.getObject('chunks', digest, opts.sequential);
  }

  /** decodeBlobs for chunks with this repository's keys, on the calling thread (restore's inline path). */
  decodeChunkWindow(window: Uint8Array, blobs: readonly WindowBlob[], plain: Uint8Array): DecodeBlobsResult {
    return decodeBlobs(window, blobs, plain, ObjectKind.chunk, this.keys, this.backend.location);
  }

  /** A pool of `size` codec workers holding this repository's keys (restore's decoders); close it when done. */
  createCodecPool(size: number): CodecPool {
    return new CodecPool(size, this.keys, this.zstdLevel);
  }

  /** Store an index page (used by IndexWriter); counts pages actually written. */
  async putIndexPage(plain: Uint8Array): Promise<{ digest: string; written: number }> {
    const { name, written } = await this.putObject('index', plain);
    if (written > 0) {
      this.stats.pagesWritten++;
      this.stats.pageBytesWritten += written;
    }
    return { digest: name, written };
  }

  /**
   * Forget cached knowledge of stored objects (after taking a lock: a prune may have run; after prune
   * removed some). Blobs added but not flushed are discarded. `readAll`: the next load reads every pack
   * index object, not the local cache (verify and prune must see damage in each of them).
   */
  forgetCache(opts: { readAll?: boolean } = {}): void {
    this.packs.reset(opts);
  }
}

let zeros = Buffer.alloc(64 * 1024);

/** True when every byte is zero (memcmp against a shared zero buffer). */
export function isAllZero(data: Uint8Array): boolean {
  if (data.length > zeros.length) zeros = Buffer.alloc(data.length);
  return Buffer.from(data.buffer, data.byteOffset, data.byteLength).equals(zeros.subarray(0, data.length));
}
