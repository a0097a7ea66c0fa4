/**
 * backupDisk: one offline disk file (raw or VHDX) into a repository, incrementally when change
 * tracking allows.
 *
 * How this works:
 * 1. Refuse a disk served by a running `tidemark serve` (DiskServedError): its tracker answers on the
 *    control socket, but its content cannot be read as one point in time from here.
 * 2. Lock the disk exclusively (DiskLock: no writer can start while we read), enable tracking if it is
 *    off (so the next run is incremental; at the repository's chunk size, not RCT's default block size),
 *    open the disk read-only and its tracker in "meta" mode.
 * 3. Seal a new RCT ID *before* reading: everything written after it belongs to the next generation.
 * 4. Pick the mode:
 *    - `full`: no earlier snapshot of this disk (same source id = absolute path) — read every allocated
 *      chunk (holes skipped).
 *    - `incremental`: changes(previous rctId, new ID) answered — read only the chunks overlapping those
 *      ranges; the previous index is copied and only changed chunks replaced (runBackup with parent +
 *      changedRanges + rctId).
 *    - `full-scan`: there is a previous snapshot but tracking cannot vouch for the changes since it
 *      (TrackingInvalidError, unknown ID, no ID recorded, disk resized) — read everything allocated,
 *      hash, store only new chunks. Same result as a full, costs only new chunks; `reason` says why.
 * 5. runBackup commits the snapshot (chunks -> index -> manifest). Then the previous RCT ID is dropped
 *    (it is no longer needed: the new snapshot carries the new ID). On failure the new ID is dropped.
 */
import { realpath, stat } from 'node:fs/promises';
import { basename, resolve } from 'node:path';
import { DiskLock } from '../blockdev/DiskLock.js';
import type { BlockDevice } from '../blockdev/BlockDevice.js';
import { openDisk } from '../disk/openDisk.js';
import { NotFoundError } from '../errors.js';
import { ChangeTracker } from '../rct/ChangeTracker.js';
import { controlClient } from '../rct/control.js';
import { enableTracking } from '../rct/enableTracking.js';
import { MIN_BLOCK_SIZE as MIN_TRACKING_BLOCK } from '../rct/constants.js';
import { TrackingInvalidError, TrackingNotEnabledError, UnknownRctIdError } from '../rct/errors.js';
import { isTrackingEnabled } from '../rct/openTrackedDisk.js';
import type { Range } from '../rct/Range.js';
import type { BackupProgress } from '../repo/backupDevice.js';
import { ObjectNotFoundError } from '../backend/errors.js';
import { CorruptObjectError } from '../repo/errors.js';
import { loadManifest, type DiskEntry, type Snapshot } from '../repo/Manifest.js';
import type { Repository } from '../repo/Repository.js';
import { runBackup } from '../repo/runBackup.js';
import { DiskServedError } from './errors.js';

export type BackupMode = 'full' | 'incremental' | 'full-scan';

export interface BackupDiskOptions {
  tags?: string[];
  /** Chunks in flight (default 8). */
  concurrency?: number;
  onProgress?: (p: BackupProgress) => void;
  signal?: AbortSignal;
}

export interface BackupDiskResult {
  snapshot: Snapshot;
  mode: BackupMode;
  /** Why a full-scan was needed (mode 'full-scan' only). */
  reason?: string;
  /** The parent snapshot (the previous backup of this disk), if any. */
  parent?: string;
  /** True when this run enabled change tracking on the disk. */
  trackingEnabled: boolean;
  diskSize: number;
  /** Bytes read from the disk. */
  bytesRead: number;
  /** Chunks not yet in the repository, stored by this run. */
  chunksNew: number;
  /** Chunks read that the repository already had. */
  chunksDeduplicated: number;
  /** Bytes written to the repository (chunks + index pages, after compression). */
  bytesStored: number;
  /** bytesRead / bytesStored (how much smaller the stored increment is than what was read). */
  dedupRatio: number;
  durationMs: number;
}

/** The source identity of a disk file: its absolute real path. */
export async function diskSource(diskPath: string): Promise<{ id: string; name: string; kind: string }> {
  const abs = await realpath(resolve(diskPath)).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') throw new NotFoundError(diskPath, 'check the disk path');
    throw err;
  });
  return { id: `disk:${abs}`, name: basename(abs), kind: 'disk' };
}

/**
 * The newest readable snapshot of the source, or undefined. Manifests that cannot be loaded are
 * skipped: one removed by a concurrent `forget` between the listing and the load, and a damaged one
 * (`verify` reports it). Neither can serve as a parent, and skipping one only picks an older parent
 * (then the RCT answer since that parent's ID, or a full-scan) or none (a full backup): never a wrong
 * incremental. Refusing instead would leave no way to "back up again" past a damaged manifest.
 */
export async function latestSnapshotOf(repo: Repository, sourceId: string): Promise<Snapshot | undefined> {
  let latest: Snapshot | undefined;
  for await (const id of repo.backend.list('snapshots')) {
    let s: Snapshot;
    try {
      s = await loadManifest(repo, id);
    } catch (err) {
      if (err instanceof ObjectNotFoundError || err instanceof CorruptObjectError) continue;
      throw err;
    }
    if (s.source.id !== sourceId) continue;
    // Same order as listSnapshots: by time, then id.
    const newer = latest ? Date.parse(s.time) - Date.parse(latest.time) || s.id.localeCompare(latest.id) : 1;
    if (newer > 0) latest = s;
  }
  return latest;
}

/**
 * Back up the disk at `diskPath`. Throws DiskServedError when a `tidemark serve` serves it, InUseError
 * when another process holds its lock, NotFoundError, and the repository's errors. Never reports an
 * incremental it cannot vouch for: see `mode`/`reason`.
 */
export async function backupDisk(repo: Repository, diskPath: string, opts: BackupDiskOptions = {}): Promise<BackupDiskResult> {
  const t0 = Date.now();
  const source = await diskSource(diskPath);
  const path = source.id.slice('disk:'.length);
  if (!(await stat(path)).isFile()) throw new NotFoundError(`disk file ${diskPath}`, 'give the path of a raw or VHDX disk image');
  const ctl = await controlClient(path, 5000);
  if (ctl) {
    ctl.close();
    throw new DiskServedError(diskPath);
  }
  const lock = await DiskLock.acquire(path, { exclusive: true, holder: 'tidemark backup' });
  let dev: BlockDevice | undefined;
  let tracker: ChangeTracker | undefined;
  let newId: string | undefined;
  let committed = false;
  try {
    let trackingEnabled = false;
    if (!(await isTrackingEnabled(path))) {
      // Track at the repository's chunk size, so the next incremental reads exactly the chunks a write
      // touched (RCT's default 64 KiB blocks make a 64 KiB write at a 4 KiB offset report 128 KiB = 4
      // chunks instead of 2-3). Disks tracked before keep their granularity.
      await enableTracking(path, { blockSize: Math.max(repo.config.chunkSize, MIN_TRACKING_BLOCK) });
      trackingEnabled = true;
    }
    dev = await openDisk(path, { readOnly: true });
    tracker = await ChangeTracker.open(path, dev, 'meta');
    const prev = await latestSnapshotOf(repo, source.id);
    const prevDisk: DiskEntry | undefined = prev?.disks[0];
    newId = await tracker.seal();

    let mode: BackupMode = 'full';
    let reason: string | undefined;
    let changedRanges: Range[] | undefined;
    if (prev && prevDisk) {
      mode = 'full-scan';
      if (!prevDisk.rctId) reason = `the previous snapshot ${prev.id.slice(0, 12)} recorded no RCT ID`;
      else if (prevDisk.size !== dev.size) reason = `the disk was resized from ${prevDisk.size} to ${dev.size} bytes since snapshot ${prev.id.slice(0, 12)}`;
      else {
        try {
          changedRanges = tracker.changes(prevDisk.rctId, newId);
          mode = 'incremental';
        } catch (err) {
          if (!(err instanceof TrackingInvalidError || err instanceof UnknownRctIdError || err instanceof TrackingNotEnabledError)) throw err;
          reason = `change tracking cannot vouch for the changes since snapshot ${prev.id.slice(0, 12)}: ${err.message}`;
        }
      }
    }

    const snapshot = await runBackup(repo, {
      source,
      disks: [
        {
          name: prevDisk?.name ?? source.name,
          device: dev,
          previous: mode === 'full' ? undefined : prevDisk,
          changedRanges,
          rctId: newId,
          concurrency: opts.concurrency,
        },
      ],
      parent: prev?.id,
      tags: opts.tags,
      onProgress: opts.onProgress && ((_d, p) => opts.onProgress!(p)),
      signal: opts.signal,
    });
    committed = true;
    // The new snapshot carries the new ID; the previous one is no longer needed by this repository.
    if (mode === 'incremental' && prevDisk?.rctId) await tracker.drop(prevDisk.rctId).catch(() => undefined);
    const st = snapshot.stats ?? {};
    const bytesRead = st.bytesRead ?? 0;
    const bytesStored = (st.chunkBytesWritten ?? 0) + (st.pageBytesWritten ?? 0);
    return {
      snapshot,
      mode,
      ...(reason !== undefined ? { reason } : {}),
      ...(prev ? { parent: prev.id } : {}),
      trackingEnabled,
      diskSize: dev.size,
      bytesRead,
      chunksNew: st.chunksWritten ?? 0,
      chunksDeduplicated: st.chunksDeduplicated ?? 0,
      bytesStored,
      dedupRatio: bytesStored > 0 ? bytesRead / bytesStored : bytesRead > 0 ? Infinity : 1,
      durationMs: Date.now() - t0,
    };
  } finally {
    if (!committed && tracker && newId) await tracker.drop(newId).catch(() => undefined);
    await dev?.close().catch(() => undefined);
    await lock.release();
  }
}
