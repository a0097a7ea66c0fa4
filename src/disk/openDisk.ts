import type { BlockDevice } from '../blockdev/BlockDevice.js';
import { RawFileDevice } from '../blockdev/RawFileDevice.js';
import { VhdxDevice } from '../vhdx/VhdxDevice.js';
import { withContext } from '../errors.js';
import { detectDiskFormat } from './detectDiskFormat.js';
import type { DiskFormat } from './sniffFormat.js';

export interface OpenDiskOptions {
  /** Open without write access; the file is never modified (default false). */
  readOnly?: boolean;
  /** Skip content detection and open as this format (for a raw disk whose content looks like another format). */
  format?: DiskFormat;
}

/**
 * Open a disk file as a BlockDevice, choosing the format from the file's content (a VHDX starts with
 * "vhdxfile"; anything else Tidemark can read is raw). The name of the file plays no part.
 * A differencing VHDX reads through its parent chain.
 * Throws NotFoundError, UnsupportedDiskFormatError, CorruptError (damaged VHDX).
 */
export async function openDisk(path: string, opts: OpenDiskOptions = {}): Promise<BlockDevice> {
  const format = opts.format ?? (await detectDiskFormat(path));
  return withContext(`open ${path}`, openAs(path, format, !!opts.readOnly));
}

async function openAs(path: string, format: DiskFormat, readOnly: boolean): Promise<BlockDevice> {
  if (format === 'vhdx') return VhdxDevice.open(path, { readOnly });
  return RawFileDevice.open(path, { readOnly });
}
