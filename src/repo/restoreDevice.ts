/**
 * restoreDevice: write one disk of a restore point onto a BlockDevice.
 *
 * Sparse: zero chunks are not written (the target is assumed to read zeros, e.g. a new sparse file;
 * pass `zeroFill` to zero them explicitly on a used target). Parallel and out of order: up to
 * `concurrency` chunks are fetched and written at once. Verified: every chunk is checked against its
 * digest (CorruptObjectError names it) and its length against the disk geometry.
 */
import type { BlockDevice } from '../blockdev/BlockDevice.js';
import { CorruptObjectError, DiskMismatchError } from './errors.js';
import { IndexTree } from './IndexTree.js';
import type { DiskEntry } from './Manifest.js';
import type { Repository } from './Repository.js';

export interface RestoreProgress {
  chunksDone: number;
  bytesWritten: number;
}

export interface RestoreDeviceOptions {
  concurrency?: number;
  /** Zero the zero chunks on the target too (target not known to be empty). */
  zeroFill?: boolean;
  onProgress?: (p: RestoreProgress) => void;
  signal?: AbortSignal;
}

export async function restoreDevice(repo: Repository, disk: DiskEntry, target: BlockDevice, opts: RestoreDeviceOptions = {}): Promise<RestoreProgress> {
  if (target.size < disk.size) {
    throw new DiskMismatchError(`target device is ${target.size} bytes but disk ${disk.name} is ${disk.size}; restore to a device at least as large`, { target: target.size, size: disk.size });
  }
  const concurrency = Math.max(1, opts.concurrency ?? 8);
  const tree = IndexTree.open(repo, disk);
  const progress: RestoreProgress = { chunksDone: 0, bytesWritten: 0 };
  const running = new Set<Promise<void>>();
  let failure: unknown = null;
  let nextZeroFrom = 0; // first byte not yet covered by data or zero-fill

  const zeroGap = async (from: number, to: number): Promise<void> => {
    if (opts.zeroFill && to > from) await target.zero(from, to - from);
  };

  const restoreChunk = async (index: number, digest: string): Promise<void> => {
    const offset = index * disk.chunkSize;
    const len = Math.min(disk.chunkSize, disk.size - offset);
    const data = await repo.getChunk(digest, disk.chunkSize, { sequential: true });
    if (data.length !== len) throw new CorruptObjectError(repo.location, 'chunks', digest, `chunk ${index} of disk ${disk.name} is ${data.length} bytes, expected ${len}`);
    await target.write(offset, data);
    progress.chunksDone++;
    progress.bytesWritten += len;
    opts.onProgress?.({ ...progress });
  };

  const launch = (p: Promise<void>): void => {
    const tracked = p.then(
      () => void running.delete(tracked),
      (err) => {
        running.delete(tracked);
        failure ??= err;
      },
    );
    running.add(tracked);
  };

  try {
    for await (const { index, digest } of tree.entries()) {
      if (failure) break;
      if (opts.signal?.aborted) {
        failure = opts.signal.reason ?? new Error('restore aborted');
        break;
      }
      const offset = index * disk.chunkSize;
      if (offset > nextZeroFrom) launch(zeroGap(nextZeroFrom, offset));
      nextZeroFrom = Math.min(disk.size, offset + disk.chunkSize);
      launch(restoreChunk(index, digest));
      while (running.size >= concurrency) await Promise.race(running);
    }
  } catch (err) {
    failure ??= err; // a damaged index page
  }
  if (!failure && nextZeroFrom < disk.size) launch(zeroGap(nextZeroFrom, disk.size));
  await Promise.all(running);
  repo.packs.dropReadCache();
  if (failure) throw failure;
  await target.flush();
  return progress;
}
