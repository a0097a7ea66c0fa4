/**
 * restoreSnapshot: one disk of a restore point into a new image file (raw or dynamic VHDX).
 *
 * The image is built under a temporary sibling name (sparse: zero chunks are never written; packs
 * read in large windows, chunks decoded in parallel and written out of order, each verified against its
 * digest by restoreDevice), flushed,
 * closed, fsynced and only then renamed into place (and the directory fsynced). A failure or a crash
 * leaves no file at `to` — or the old one untouched when `overwrite` is set: never a partial image
 * where a good one was.
 */
import { stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import type { BlockDevice } from '../blockdev/BlockDevice.js';
import { RawFileDevice } from '../blockdev/RawFileDevice.js';
import { commitFile, discardTemp, tempSibling } from '../disk/commitFile.js';
import { DiskExistsError } from '../disk/errors.js';
import { UsageError } from '../errors.js';
import { findSnapshot, type Snapshot } from '../repo/Manifest.js';
import type { Repository } from '../repo/Repository.js';
import { restoreDevice, type RestoreProgress } from '../repo/restoreDevice.js';
import { VhdxDevice } from '../vhdx/VhdxDevice.js';
import { selectDisk } from './selectDisk.js';

export interface RestoreSnapshotOptions {
  to: string;
  /** Default: 'vhdx' when `to` ends in .vhdx, else 'raw'. */
  format?: 'raw' | 'vhdx';
  /** Disk name within the snapshot (needed when it has several). */
  disk?: string;
  /** Replace an existing file at `to` (atomically). Default: refuse with DiskExistsError. */
  overwrite?: boolean;
  /** Pack windows in flight (default: restoreDevice's, RESTORE_IN_FLIGHT). */
  concurrency?: number;
  /** Codec worker threads decoding chunks (default 1: measured best on 2 cores, see docs/design.md "Restore: measured"). */
  workers?: number;
  /** `size`: the disk's virtual size (the data written is at most that). */
  onProgress?: (p: RestoreProgress, size: number) => void;
  signal?: AbortSignal;
}

export interface RestoreSnapshotResult {
  snapshot: string;
  disk: string;
  path: string;
  format: 'raw' | 'vhdx';
  size: number;
  /** Bytes of non-zero chunks written (the rest stays sparse). */
  bytesWritten: number;
  durationMs: number;
}

export async function restoreSnapshot(repo: Repository, snapshotId: string, opts: RestoreSnapshotOptions): Promise<RestoreSnapshotResult> {
  const t0 = Date.now();
  const snap: Snapshot = await findSnapshot(repo, snapshotId);
  const disk = selectDisk(snap, opts.disk);
  const to = resolve(opts.to);
  const format = opts.format ?? (/\.vhdx$/i.test(to) ? 'vhdx' : 'raw');
  if (format !== 'raw' && format !== 'vhdx') throw new UsageError(`unknown format "${String(format)}": use raw or vhdx`);
  if (!opts.overwrite && (await stat(to).then(() => true, () => false))) throw new DiskExistsError(to);
  const temp = tempSibling(to);
  let dev: BlockDevice | undefined;
  try {
    dev = format === 'raw' ? await RawFileDevice.create(temp, disk.size, { directWrites: true }) : await VhdxDevice.create(temp, { size: vhdxSize(disk.size), type: 'dynamic' });
    const p = await restoreDevice(repo, disk, dev, { concurrency: opts.concurrency, workers: opts.workers ?? 1, onProgress: opts.onProgress && ((p) => opts.onProgress!(p, disk.size)), signal: opts.signal });
    await dev.close();
    dev = undefined;
    await commitFile(temp, to, { overwrite: !!opts.overwrite });
    return { snapshot: snap.id, disk: disk.name, path: to, format, size: disk.size, bytesWritten: p.bytesWritten, durationMs: Date.now() - t0 };
  } catch (err) {
    await dev?.close().catch(() => undefined);
    await discardTemp(temp);
    throw err;
  }
}

/** VHDX virtual sizes are whole logical sectors (512 B); a raw source of another size cannot be a VHDX exactly. */
function vhdxSize(size: number): number {
  if (size % 512 !== 0) throw new UsageError(`the disk is ${size} bytes, not a multiple of 512: restore it as raw (--format raw)`);
  return size;
}
