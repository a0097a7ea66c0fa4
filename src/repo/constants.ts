/**
 * Every magic number and default of the repository format, with its derivation. Changing one is a
 * format change: bump the version next to it.
 */

/** Object envelope magic: ASCII "TMOB" (Tidemark OBject). */
export const OBJECT_MAGIC = 0x424f4d54; // 'T' 'M' 'O' 'B' read as u32 LE
export const OBJECT_VERSION = 1;
/** Envelope header: magic(4) version(1) kind(1) flags(1) reserved(1) plainLength(4) bodyLength(4). */
export const OBJECT_HEADER_SIZE = 16;
export const FLAG_ZSTD = 0x01;
export const FLAG_AES_GCM = 0x02;
export const GCM_NONCE_SIZE = 12;
export const GCM_TAG_SIZE = 16;
/** Largest plaintext an object may claim (guards decompression bombs and bogus lengths). */
export const MAX_OBJECT_PLAIN = 64 * 1024 * 1024;

/**
 * Repository format version (config.version). 2: chunks and index pages live in pack files indexed by
 * `packindex` objects. 1 (one file per chunk/page) is refused with a "re-initialise" message.
 */
export const REPO_FORMAT_VERSION = 2;

/** What an envelope holds; binds bytes to their object type so a chunk cannot pose as an index page. */
export const ObjectKind = { chunk: 1, indexPage: 2, manifest: 3, lock: 4, packHeader: 5, packIndex: 6, blobIndexCache: 7 } as const;
export type ObjectKind = (typeof ObjectKind)[keyof typeof ObjectKind];

/** Index page magic: ASCII "TMIX". */
export const INDEX_MAGIC = 0x58494d54; // 'T' 'M' 'I' 'X' as u32 LE
export const INDEX_VERSION = 1;
export const INDEX_HEADER_SIZE = 16;
export const DIGEST_SIZE = 32;

/**
 * The digest of an all-zero chunk, and of an index subtree whose chunks are all zero: 32 zero bytes.
 * No object is stored under it. (A real SHA-256/HMAC output of 32 zero bytes is not expected to occur.)
 */
export const ZERO_DIGEST = '0'.repeat(64);

/**
 * Default chunk size: 32 KiB. Measured (bench/repo.ts, docs/design.md (repo section)): 655 scattered 64 KiB
 * writes at 4 KiB-aligned offsets on a 4 GiB disk grow the repository by ~1.5x the written bytes with
 * 32 KiB chunks, ~2.0x with 64 KiB (a 64 KiB write straddles two chunks 15 times in 16) and ~3x with
 * 128 KiB; 16 KiB gives ~1.3x but doubles object count and per-object cost.
 */
export const DEFAULT_CHUNK_SIZE = 32 * 1024;
/** Digests per index page: 512 x 32 B = 16 KiB pages; a 1 TiB disk at 32 KiB chunks is 3 levels deep. */
export const DEFAULT_FANOUT = 512;
export const MIN_CHUNK_SIZE = 4096;
export const MAX_CHUNK_SIZE = 4 * 1024 * 1024;

/** zstd level for chunks and pages: level 3 is zstd's default speed/ratio balance. */
export const DEFAULT_ZSTD_LEVEL = 3;

/** scrypt defaults for the key-encryption key: N=2^15, r=8, p=1 (32 MiB, ~0.1 s). */
export const DEFAULT_SCRYPT = { N: 2 ** 15, r: 8, p: 1 } as const;

/** A lock not refreshed for this long is stale (restic uses 30 min, refreshing every 5 min). */
export const LOCK_STALE_MS = 30 * 60 * 1000;
export const LOCK_REFRESH_MS = 5 * 60 * 1000;
/** Prune never deletes unreferenced objects younger than this (see docs/design.md (repo section), "prune"). */
export const PRUNE_GRACE_MS = 2 * 60 * 60 * 1000;

/** Pack trailer magic: ASCII "TMPK" (the last 4 bytes of every pack file). */
export const PACK_MAGIC = 0x4b504d54; // 'T' 'M' 'P' 'K' as u32 LE
/** Pack header plaintext magic: ASCII "TMPH". */
export const PACK_HEADER_MAGIC = 0x48504d54; // 'T' 'M' 'P' 'H'
export const PACK_VERSION = 1;
/** Pack trailer: u32 header envelope length + u32 magic. */
export const PACK_TRAILER_SIZE = 8;
/** Pack header plaintext: magic(4) version(1) reserved(3) count(4) reserved(4), then 40-byte entries. */
export const PACK_HEADER_SIZE = 16;
/** One header entry: kind(1) reserved(3) length(4) digest(32). */
export const PACK_HEADER_ENTRY_SIZE = 40;
/**
 * A pack is closed once its blobs reach 16 MiB (restic's default pack size): one fsync per 16 MiB
 * instead of two per 32 KiB chunk, few enough files for object storage, small enough that prune's
 * repacking of a partly-dead pack stays cheap.
 */
export const PACK_TARGET_SIZE = 16 * 1024 * 1024;
/** Packs being stored concurrently while the next one fills (memory: (1 + this) x PACK_TARGET_SIZE). */
export const PACK_UPLOADS = 2;

/** Pack index magic: ASCII "TMPI". */
export const PACK_INDEX_MAGIC = 0x49504d54; // 'T' 'M' 'P' 'I'
export const PACK_INDEX_VERSION = 1;
/** Pack index plaintext header: magic(4) version(1) reserved(3) packCount(4) reserved(4). */
export const PACK_INDEX_HEADER_SIZE = 16;
/** Per pack: id(32) entryCount(4) reserved(4). */
export const PACK_INDEX_PACK_SIZE = 40;
/** Per blob: digest(32) kind(1) reserved(3) offset(4) length(4). */
export const PACK_INDEX_ENTRY_SIZE = 44;
/** A pack index object lists at most this many blobs (44 B each: <= 11.5 MiB, under MAX_OBJECT_PLAIN). */
export const PACK_INDEX_MAX_ENTRIES = 256 * 1024;
/**
 * A backup writes a pack index object once this many packs are unindexed (and at its end). 1: every
 * durable pack is indexed right away (one more small durable put per 16 MiB), so a killed backup leaves
 * all its stored packs indexed and the next run deduplicates against them; prune merges the many small
 * pack index objects into few.
 */
export const PACK_INDEX_EVERY_PACKS = 1;
/** Prune repacks a pack when at least this fraction of its blob bytes is unreferenced (and old). */
export const PRUNE_REPACK_UNUSED = 0.2;
