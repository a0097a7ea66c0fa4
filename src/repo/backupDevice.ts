/**
 * backupDevice: one disk into the repository, as a new index tree.
 *
 * - With `changedRanges` (from RCT) and `previous`: read only the chunks overlapping the ranges, store
 *   the ones not yet in the repository, and update the previous tree (IndexWriter: only changed pages
 *   and their paths to the root are written). A changed chunk whose content exists already costs
 *   nothing but the pages ("synthetic full").
 * - Without: read every chunk overlapping a `data` extent (holes and zero extents are skipped) and
 *   build a tree from empty; unchanged chunks deduplicate by digest, unchanged pages by digest too.
 *
 * Reads: each run of adjacent chunks to read is cut into units of at most READ_UNIT_CHUNKS chunks, read
 * with one read each (readUnits); up to `concurrency` chunks are in flight (bounded memory: at most
 * that many chunks plus one unit are alive), so several units' reads wait on the disk at once (cold,
 * scattered incremental reads need the queue depth; the CLI raises libuv's thread pool for it).
 * Results feed the IndexWriter in ascending order through a FIFO: a finished chunk waits for the ones
 * before it, so the writer's stream stays sorted.
 *
 * Writes no manifest: the caller (runBackup) commits a snapshot after every disk is done.
 */
import type { BlockDevice } from '../blockdev/BlockDevice.js';
import { UsageError } from '../errors.js';
import { ZERO_DIGEST } from './constants.js';
import { chunksCovering, intervalsLength, readUnits, type ChunkInterval } from './chunkPlan.js';
import { DiskMismatchError } from './errors.js';
import { IndexWriter } from './IndexTree.js';
import type { BackupStats, DiskEntry } from './Manifest.js';
import { isChunkSize, isFanout } from './RepoConfig.js';
import type { Repository } from './Repository.js';

export interface BackupProgress {
  /** Chunks processed / to process. */
  chunksDone: number;
  chunksTotal: number;
  bytesRead: number;
  chunkBytesWritten: number;
}

export interface BackupDeviceOptions {
  /** Disk name recorded in the entry (default: previous.name or "disk0"). */
  name?: string;
  /** The same disk's entry in the previous restore point. Required with changedRanges. */
  previous?: DiskEntry;
  /** Byte ranges changed since `previous` (from RCT). Absent: read everything allocated. */
  changedRanges?: ReadonlyArray<{ offset: number; length: number }>;
  /** RCT ID to record in the entry for the next incremental. */
  rctId?: string;
  /** Chunk size / fanout for a disk without `previous` (default: the repository's). */
  chunkSize?: number;
  fanout?: number;
  /** Chunks in flight (default DEFAULT_BACKUP_CONCURRENCY). */
  concurrency?: number;
  onProgress?: (p: BackupProgress) => void;
  signal?: AbortSignal;
}

export interface DiskBackupResult {
  disk: DiskEntry;
  stats: BackupStats;
}

/** Chunks in flight by default (32 MiB at 32 KiB chunks: ~350 scattered reads of an incremental at once). */
export const DEFAULT_BACKUP_CONCURRENCY = 1024;
/** Largest read: this many chunks (1 MiB at 32 KiB chunks). */
export const READ_UNIT_CHUNKS = 32;

export async function backupDevice(repo: Repository, device: BlockDevice, opts: BackupDeviceOptions = {}): Promise<DiskBackupResult> {
  const t0 = Date.now();
  const prev = opts.previous;
  if (opts.changedRanges && !prev) throw new UsageError('an incremental backup (changed ranges) needs the previous disk entry');
  if (prev && prev.size !== device.size && opts.changedRanges) {
    throw new DiskMismatchError(`disk ${prev.name} was ${prev.size} bytes at the previous backup and is ${device.size} now; a resized disk needs a full backup (omit changed ranges)`, { previous: prev.size, size: device.size });
  }
  const chunkSize = opts.changedRanges ? prev!.chunkSize : opts.chunkSize ?? prev?.chunkSize ?? repo.config.chunkSize;
  const fanout = opts.changedRanges ? prev!.fanout : opts.fanout ?? prev?.fanout ?? repo.config.fanout;
  if (!isChunkSize(chunkSize) || !isFanout(fanout)) throw new UsageError(`invalid chunk size ${chunkSize} or fanout ${fanout}`);
  const concurrency = Math.max(1, opts.concurrency ?? DEFAULT_BACKUP_CONCURRENCY);
  const size = device.size;
  const geometry = { size, chunkSize, fanout };

  let intervals: ChunkInterval[];
  let base = ZERO_DIGEST;
  if (opts.changedRanges) {
    intervals = chunksCovering(opts.changedRanges, size, chunkSize);
    base = prev!.indexRoot;
  } else {
    const extents = device.capabilities.extents && size > 0 ? await device.extents(0, size) : [{ offset: 0, length: size, type: 'data' as const }];
    intervals = chunksCovering(extents.filter((e) => e.type === 'data'), size, chunkSize);
  }

  const writer = new IndexWriter(repo, geometry, base);
  writer.prefetch(intervals); // the base pages the changes will touch, read ahead of the writer
  const progress: BackupProgress = { chunksDone: 0, chunksTotal: intervalsLength(intervals), bytesRead: 0, chunkBytesWritten: 0 };
  const stats = { chunksWritten: 0, chunksDeduplicated: 0 };

  /** Read a unit (chunks [start, end)) with one read. */
  const readUnit = async (start: number, end: number): Promise<Buffer> => {
    const offset = start * chunkSize;
    const len = Math.min(end * chunkSize, size) - offset;
    const data = await device.read(offset, len);
    progress.bytesRead += len;
    return data;
  };
  const processChunk = async (unit: Promise<Buffer>, unitStart: number, index: number): Promise<string> => {
    const at = (index - unitStart) * chunkSize;
    const data = (await unit).subarray(at, at + chunkSize);
    const { digest, written } = await repo.storeChunk(data);
    if (written > 0) {
      stats.chunksWritten++;
      progress.chunkBytesWritten += written;
    } else if (digest !== ZERO_DIGEST) {
      stats.chunksDeduplicated++;
    }
    return digest;
  };

  type Task = { index: number; p: Promise<string> };
  const queue: Task[] = [];
  const settleAll = async (): Promise<void> => {
    await Promise.allSettled(queue.map((t) => t.p));
  };
  try {
    for (const u of readUnits(intervals, Math.min(READ_UNIT_CHUNKS, concurrency))) {
      if (opts.signal?.aborted) throw opts.signal.reason ?? new Error('backup aborted');
      const unit = readUnit(u.start, u.end);
      unit.catch(() => undefined); // observed through its chunks
      for (let index = u.start; index < u.end; index++) {
        const p = processChunk(unit, u.start, index);
        p.catch(() => undefined); // observed below, in order; avoid unhandled-rejection noise meanwhile
        queue.push({ index, p });
      }
      while (queue.length >= concurrency) {
        if (opts.signal?.aborted) throw opts.signal.reason ?? new Error('backup aborted');
        const head = queue.shift()!;
        await writer.set(head.index, await head.p);
        progress.chunksDone++;
        opts.onProgress?.({ ...progress });
      }
    }
    while (queue.length > 0) {
      if (opts.signal?.aborted) throw opts.signal.reason ?? new Error('backup aborted');
      const head = queue.shift()!;
      await writer.set(head.index, await head.p);
      progress.chunksDone++;
      opts.onProgress?.({ ...progress });
    }
  } catch (err) {
    await settleAll();
    throw err;
  }
  const tree = await writer.finish();
  const disk: DiskEntry = { name: opts.name ?? prev?.name ?? 'disk0', size, chunkSize, fanout, indexRoot: tree.root };
  if (opts.rctId !== undefined) disk.rctId = opts.rctId;
  return {
    disk,
    stats: {
      bytesRead: progress.bytesRead,
      chunksWritten: stats.chunksWritten,
      chunkBytesWritten: progress.chunkBytesWritten,
      chunksDeduplicated: stats.chunksDeduplicated,
      pagesWritten: tree.pagesWritten,
      pageBytesWritten: tree.pageBytesWritten,
      durationMs: Date.now() - t0,
    },
  };
}
