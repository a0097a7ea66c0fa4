import type { BlockDevice } from '../blockdev/BlockDevice.js';
import { RawFileDevice } from '../blockdev/RawFileDevice.js';
import { VhdxDevice } from '../vhdx/VhdxDevice.js';
import { stat } from 'node:fs/promises';
import { UsageError, withContext } from '../errors.js';
import { detectDiskFormat } from './detectDiskFormat.js';
import type { DiskFormat } from './sniffFormat.js';

export interface OpenDiskOptions {
  /** Open without write access; the file is never modified (default false). */
  readOnly?: boolean;
  /** Skip content detection and open as this format (for a raw disk whose content looks like another format). */
  format?: DiskFormat;
  /**
   * Allow a writable open of a disk whose change tracking is enabled, bypassing the tracking layer. Only
   * for callers that keep tracking valid themselves (openTrackedDisk, withTrackedOperation); writes
   * through such a device are not tracked and restart tracking at its next open.
   */
  untracked?: boolean;
}

/**
 * Open a disk file as a BlockDevice, choosing the format from the file's content (a VHDX starts with
 * "vhdxfile"; anything else Tidemark can read is raw). The name of the file plays no part.
 * A differencing VHDX reads through its parent chain.
 * A writable open of a disk with change tracking enabled (`<disk>.rct` or `<disk>.mrt` exists) is refused
 * with a UsageError: open it with `openTrackedDisk` (src/rct) so its writes are tracked, or pass
 * `untracked: true` when the caller keeps tracking valid itself.
 * Throws NotFoundError, UnsupportedDiskFormatError, CorruptError (damaged VHDX), UsageError (tracked disk).
 */
export async function openDisk(path: string, opts: OpenDiskOptions = {}): Promise<BlockDevice> {
  if (!opts.readOnly && !opts.untracked && (await trackingFileExists(path))) {
    throw new UsageError(
      `${path}: change tracking is enabled on this disk; a writable openDisk would bypass it (its writes would go untracked): open it with openTrackedDisk (src/rct/openTrackedDisk.js), or read-only`,
      { path },
    );
  }
  const format = opts.format ?? (await detectDiskFormat(path));
  return withContext(`open ${path}`, openAs(path, format, !!opts.readOnly));
}

async function openAs(path: string, format: DiskFormat, readOnly: boolean): Promise<BlockDevice> {
  if (format === 'vhdx') return VhdxDevice.open(path, { readOnly });
  return RawFileDevice.open(path, { readOnly });
}

/**
 * True when `<path>.rct` or `<path>.mrt` exists (change tracking enabled). Checked here by name rather
 * than through src/rct (which imports this module) to keep the import graph acyclic.
 */
async function trackingFileExists(path: string): Promise<boolean> {
  for (const p of [`${path}.rct`, `${path}.mrt`]) {
    if (await stat(p).then(() => true, () => false)) return true;
  }
  return false;
}
