/**
 * A snapshot provider makes storage clone a disk file, so that an export copies only the machine's
 * configuration through Tidemark (the seed's SAN path: the array snapshots the LUN, the host exports the
 * VM definition). Implementations: `reflink` (FICLONE: instant and space-sharing on XFS/btrfs),
 * `copy` (sparse-aware streaming copy, works everywhere), `auto` (reflink, else copy).
 *
 * Contract of `clone(src, dst)`:
 * - `src` does not change while the clone runs (the caller guarantees it: a frozen checkpoint disk);
 *   it is opened read-only and never modified.
 * - `dst` must not exist; it appears complete and durable (built under a hidden temporary name in the same
 *   folder, fsynced, renamed, folder fsynced) or not at all: on any failure nothing is left behind.
 * - The clone reads byte-for-byte as `src` (same length; holes may stay holes).
 * - A provider that cannot work here throws ProviderNotSupportedError naming the reason.
 */
export type ProviderName = 'reflink' | 'copy' | 'auto';

export interface CloneResult {
  /** Bytes Tidemark read and wrote (0 for a reflink: storage shared the extents). */
  bytesCopied: number;
  /** The clone shares its extents with the source (copy on write). */
  shared: boolean;
}

export interface SnapshotProvider {
  readonly name: ProviderName;
  clone(src: string, dst: string, onProgress?: (done: number, total: number) => void): Promise<CloneResult>;
}
