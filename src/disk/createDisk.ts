import { stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import type { BlockDevice } from '../blockdev/BlockDevice.js';
import { RawFileDevice } from '../blockdev/RawFileDevice.js';
import { VhdxDevice } from '../vhdx/VhdxDevice.js';
import { UsageError, withContext } from '../errors.js';
import { commitFile, discardTemp, tempSibling } from './commitFile.js';
import { detectDiskFormat } from './detectDiskFormat.js';
import { diskInfo, type DiskInfo } from './diskInfo.js';
import { DiskExistsError, DiskOperationError } from './errors.js';
import type { DiskFormat } from './sniffFormat.js';

export interface CreateDiskOptions {
  /** Default 'vhdx'. */
  format?: DiskFormat;
  /** Virtual size in bytes. Optional with `parent` (defaults to the parent's size). */
  size?: number;
  /** VHDX type (default 'dynamic'); `parent` makes a differencing disk. Raw takes no type. */
  type?: 'dynamic' | 'fixed';
  blockSize?: number;
  logicalSectorSize?: 512 | 4096;
  physicalSectorSize?: 512 | 4096;
  /** Path of the parent VHDX: the new disk is a differencing disk over it. */
  parent?: string;
}

/**
 * Create a new disk at `path` and describe it. Never overwrites: an existing `path` gives DiskExistsError.
 * The disk is built under a temporary name, fsynced and then linked into place, so `path` either does
 * not exist or is complete. Raw disks are sparse files.
 */
export async function createDisk(path: string, opts: CreateDiskOptions): Promise<DiskInfo> {
  const format = opts.format ?? 'vhdx';
  if (await stat(path).then(() => true, () => false)) throw new DiskExistsError(path);
  let size = opts.size;
  if (format === 'raw') {
    if (opts.parent !== undefined) throw new UsageError('a raw disk cannot have a parent; use --format vhdx for a differencing disk');
    if (opts.type === 'dynamic' || opts.blockSize !== undefined || opts.logicalSectorSize !== undefined || opts.physicalSectorSize !== undefined) {
      throw new UsageError('a raw disk has no type, block size or sector sizes (its file is sparse anyway); drop those options or use --format vhdx');
    }
  }
  if (opts.parent !== undefined) {
    if (opts.type === 'fixed') throw new UsageError('a disk with a parent is a differencing disk; drop --type fixed');
    if ((await detectDiskFormat(opts.parent)) !== 'vhdx') throw new DiskOperationError(opts.parent, 'is not a VHDX; the parent of a differencing disk must be a VHDX (convert it first)');
    const parentSize = (await diskInfo(opts.parent)).size;
    if (size !== undefined && size !== parentSize) {
      throw new UsageError(`a differencing disk has its parent's size (${parentSize} bytes); drop --size, or resize the parent first`);
    }
    size = parentSize;
  }
  if (size === undefined) throw new UsageError('give the size of the new disk (e.g. --size 10G)');
  if (!Number.isSafeInteger(size) || size <= 0) throw new UsageError(`invalid size ${size}: give a positive number of bytes`);

  const temp = tempSibling(resolve(path));
  try {
    const dev = await withContext<BlockDevice>(
      `create ${path}`,
      format === 'raw'
        ? RawFileDevice.create(temp, size)
        : VhdxDevice.create(temp, {
            size,
            type: opts.type ?? 'dynamic',
            ...(opts.blockSize !== undefined ? { blockSize: opts.blockSize } : {}),
            ...(opts.logicalSectorSize !== undefined ? { logicalSectorSize: opts.logicalSectorSize } : {}),
            ...(opts.physicalSectorSize !== undefined ? { physicalSectorSize: opts.physicalSectorSize } : {}),
            ...(opts.parent !== undefined ? { parent: resolve(opts.parent) } : {}),
          }),
    );
    await dev.close();
    await commitFile(temp, path, { overwrite: false });
  } catch (err) {
    await discardTemp(temp);
    throw err;
  }
  return diskInfo(path);
}
