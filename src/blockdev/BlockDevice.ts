/**
 * The one storage abstraction everything in Tidemark stands on.
 *
 * Contract (checked by test/blockdev/contract.ts against every implementation):
 * - Offsets and lengths are byte counts (JS numbers, exact up to 2^53). Any byte offset and length
 *   with `offset + length <= size` is accepted: unaligned I/O is the device's job (read-modify-write).
 *   Out-of-range requests reject with `OutOfRangeError`; I/O on a read-only device rejects with
 *   `ReadOnlyError`; I/O after `close()` rejects with `ClosedError`.
 * - `read` returns exactly `length` bytes. Never-written, zeroed and trimmed ranges read as zeros.
 * - `write` may use `data` only until its promise settles: a device must not keep a reference to it (or a
 *   view of it) afterwards, because callers recycle the buffer (the NBD server reuses WRITE payload buffers).
 * - `write`/`zero`/`trim` are visible to every later `read` as soon as their promise resolves; they are
 *   durable after a later `flush()` resolves, or at once when `fua` is set.
 * - `trim` is advisory about storage but not about content: a trimmed range reads as zeros afterwards
 *   (Tidemark devices guarantee this, so that a trim can never leave stale data visible).
 * - Concurrent calls are allowed; overlapping concurrent writes land in some order, each whole.
 * - `extents` covers [offset, offset+length) exactly, in order, with adjacent runs of one type merged.
 * - `close()` flushes and releases; it is idempotent.
 */
export interface BlockDevice {
  /** Virtual size in bytes. */
  readonly size: number;
  /** Logical sector size (512 or 4096). The natural I/O unit; smaller I/O works but costs more. */
  readonly logicalSectorSize: number;
  /** Physical sector size reported to guests. */
  readonly physicalSectorSize: number;
  readonly capabilities: Capabilities;

  read(offset: number, length: number): Promise<Buffer>;
  /**
   * Optional fast path: read [offset, offset+length) into `target[targetOffset .. targetOffset+length)`,
   * so callers can reuse buffers (the NBD server recycles READ reply buffers). Same content as
   * `read(offset, length)`: it fills exactly those `length` bytes — zeros included for never-written,
   * zeroed, trimmed or unallocated ranges — whatever the target held before, and touches no other byte of
   * `target`. Errors are `read`'s (OutOfRangeError for the device range, ClosedError); a target
   * window that does not fit in `target` rejects with UsageError. On rejection the window's content is unspecified. The device
   * uses `target` only until the promise settles. Layers offer it exactly when `next` does.
   */
  readInto?(target: Uint8Array, targetOffset: number, offset: number, length: number): Promise<void>;
  write(offset: number, data: Uint8Array, opts?: WriteOptions): Promise<void>;
  /**
   * Optional fast path: write `buffers` back to back from `offset`, as one vectored write (a restore
   * gathers many chunk plaintexts from where they were decoded, without copying them together). Same
   * result and errors as `write` of their concatenation. Callers fall back to one `write` per buffer.
   */
  writev?(offset: number, buffers: readonly Uint8Array[]): Promise<void>;
  /** Make [offset, offset+length) read as zeros. `noHole` forbids deallocating; `fast` fails with
   * `NotSupportedError` instead of writing zeros when the device can't zero cheaply. */
  zero(offset: number, length: number, opts?: ZeroOptions): Promise<void>;
  /** Discard [offset, offset+length): the range reads as zeros afterwards. */
  trim(offset: number, length: number, opts?: WriteOptions): Promise<void>;
  flush(): Promise<void>;
  extents(offset: number, length: number): Promise<Extent[]>;
  close(): Promise<void>;

  /**
   * Optional: the identity of the device's content as recorded on disk, used by change tracking to
   * notice writers other than this process (VHDX: DataWriteGuid; raw: a stat fingerprint).
   */
  identity?(): Promise<WriteIdentity>;
}

export interface Capabilities {
  readOnly: boolean;
  /** `trim` deallocates storage (otherwise it only zeroes). */
  trim: boolean;
  /** `zero` can deallocate or mark ranges zero without writing data. */
  fastZero: boolean;
  /** Per-write durability is supported natively (otherwise fua = write + flush). */
  fua: boolean;
  /** `extents` reports real allocation (otherwise one data extent). */
  extents: boolean;
}

export interface WriteOptions {
  /** Force unit access: durable when the promise resolves. */
  fua?: boolean;
}

export interface ZeroOptions extends WriteOptions {
  /** Do not deallocate; keep storage allocated (NBD NO_HOLE). */
  noHole?: boolean;
  /** Fail with NotSupportedError rather than fall back to writing zeros (NBD FAST_ZERO). */
  fast?: boolean;
}

/**
 * - `data`: allocated; may hold non-zero bytes.
 * - `zero`: reads as zeros; storage may be allocated.
 * - `hole`: reads as zeros; no storage behind it.
 */
export type ExtentType = 'data' | 'zero' | 'hole';

export interface Extent {
  offset: number;
  length: number;
  type: ExtentType;
}

/**
 * `current` is the identity on disk now. `next` is what it will be once this open session has made its
 * first change (VHDX rotates its DataWriteGuid before the first data change after open). A tracker that
 * records both before its first write accepts either after a crash and rejects anything else.
 */
export interface WriteIdentity {
  current: string;
  next: string;
}

/** A layer wraps a device and exposes the same interface (change tracking, read-only, views, COW). */
export type Layer = (next: BlockDevice) => BlockDevice;
