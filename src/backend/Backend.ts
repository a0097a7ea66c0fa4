/**
 * The bottom layer of a repository: a store of immutable named objects (restic's backend, Litestream's
 * replica client). It knows nothing about chunks, encryption or snapshots — only bytes under a
 * (type, name) key.
 *
 * Contract (checked by test/backend/contract.ts against every implementation):
 * - `put` is atomic and durable when it resolves: a reader sees either no object or the whole object,
 *   never a prefix, also after a crash or a full disk (`NoSpaceError`, nothing left behind).
 * - `put` never replaces an object: when `name` already exists the existing object is kept and `put`
 *   resolves `false` (objects are content-addressed, so an existing name already holds equivalent
 *   content). It resolves `true` when it stored the object.
 * - `get`/`stat` of a missing object reject with `ObjectNotFoundError`; `has` answers without throwing.
 * - `list(type)` yields every name of that type once, in no particular order. Objects put or removed
 *   while a listing runs may or may not appear.
 * - `remove` is idempotent: removing a missing object resolves.
 * - Invalid type/name rejects with `InvalidObjectNameError` (names are never paths).
 * - Concurrent calls are allowed.
 */
export interface Backend {
  /** Where the objects live, for messages (a directory, `memory:`...). */
  readonly location: string;
  put(type: ObjectType, name: string, data: Uint8Array, opts?: PutOptions): Promise<boolean>;
  /**
   * Optional: like `put`, but the object is published under its name only after `after` resolves; if
   * `after` rejects, nothing is published and `putAfter` rejects with that error. Meanwhile the backend
   * may prepare the object (LocalBackend writes and fsyncs its temp file), so an object that must follow
   * another (a pack index after its packs) costs no extra sequential fsync. Callers fall back to
   * `await after; put(...)` when a backend (or wrapper) lacks it — wrappers need not forward it.
   */
  putAfter?(type: ObjectType, name: string, data: Uint8Array, after: Promise<unknown>): Promise<boolean>;
  /**
   * Optional: an object written a piece at a time whose name is known only at the end (a pack: its
   * name is the digest of its bytes), so its bytes reach storage while it is still being filled. Once
   * `commit` resolves, the object has `put`'s guarantees; until then nothing is visible under any name.
   * Callers without it (or a wrapper that lacks it) collect the bytes and `put` them.
   */
  openWriter?(type: ObjectType): ObjectWriter;
  get(type: ObjectType, name: string): Promise<Buffer>;
  has(type: ObjectType, name: string): Promise<boolean>;
  list(type: ObjectType): AsyncIterable<string>;
  remove(type: ObjectType, name: string): Promise<void>;
  stat(type: ObjectType, name: string): Promise<ObjectInfo>;
  /**
   * Optional: `length` bytes of an object from `offset` (a ranged read: pack files are read a blob at a
   * time). Rejects with ObjectNotFoundError when the object is missing; resolves fewer bytes only when
   * the object ends before `offset + length`. Without it, callers fall back to `get` + slice.
   * `into` (at least `length` bytes): read into the caller's memory instead of a new buffer (restore
   * reuses a few shared buffers instead of allocating per window); the result is then a view of `into`.
   */
  getRange?(type: ObjectType, name: string, offset: number, length: number, into?: Uint8Array): Promise<Buffer>;
  /**
   * Optional: remove leftovers of puts interrupted by a crash (temp files) older than `olderThanMs`.
   * Resolves how many were removed. Prune calls it under its exclusive lock.
   */
  cleanup?(olderThanMs: number): Promise<number>;
}

/**
 * The kinds of object a repository stores. Format 2 repositories use `packs` (many chunks and index
 * pages per file) and `packindex` (where each blob is); `chunks`/`index` were format 1's one file per
 * object and stay valid names for generic use (tests, other stores).
 */
export const OBJECT_TYPES = ['config', 'keys', 'chunks', 'index', 'snapshots', 'locks', 'packs', 'packindex'] as const;
export type ObjectType = (typeof OBJECT_TYPES)[number];

/**
 * An object being written (Backend.openWriter). Bytes are appended in call order; the caller must not
 * change a buffer after passing it to `write`.
 */
export interface ObjectWriter {
  /**
   * Append `data`. Resolves once it is handed to storage (not durable yet); a failure also fails
   * `commit`, so callers may leave this promise unawaited (it never rejects unobserved).
   */
  write(data: Uint8Array): Promise<void>;
  /**
   * Publish everything written under `name`, after `after` resolves (nothing is published when it
   * rejects: commit rejects with its error). Durable when it resolves; `false` when `name` already
   * existed (the existing object is kept, the written bytes are dropped), like `put`. A failed commit
   * leaves nothing behind.
   */
  commit(name: string, after?: Promise<unknown>): Promise<boolean>;
  /** Drop everything written (nothing is published). Idempotent; also after a failed commit. */
  abort(): Promise<void>;
}

export interface PutOptions {
  /**
   * false: the object must never be seen torn, but its *name* need not survive a crash (LocalBackend
   * fsyncs the content, skips the directory fsync). For locks: a lock matters only while its holder
   * lives, and a crash that loses the name also ended the holder. Default true. Ignoring it (a wrapper
   * that drops it) is always safe: the put is then fully durable.
   */
  nameDurable?: boolean;
}

export interface ObjectInfo {
  type: ObjectType;
  name: string;
  size: number;
  /** When the object was stored (ms since the epoch). Prune's grace period reads it. */
  mtimeMs: number;
}
