import { stat } from 'node:fs/promises';
import { RawFileDevice } from '../blockdev/RawFileDevice.js';
import { VhdxDevice } from '../vhdx/VhdxDevice.js';
import { InUseError, TidemarkError, withContext } from '../errors.js';
import { diskLockHolder } from './diskLockHolder.js';
import { detectDiskFormat } from './detectDiskFormat.js';
import type { DiskFormat } from './sniffFormat.js';

/** How the virtual disk maps to its file. A raw disk is `fixed`: offset N is file byte N. */
export type DiskType = 'fixed' | 'dynamic' | 'differencing';

/**
 * What Tidemark knows about a disk, the same keys for every format (`null` where a format has no
 * such thing: raw disks have no block size, disk id or data write guid).
 */
export interface DiskInfo {
  path: string;
  format: DiskFormat;
  type: DiskType;
  /** Virtual size in bytes. */
  size: number;
  /** VHDX payload block size; null for raw. */
  blockSize: number | null;
  logicalSectorSize: number;
  physicalSectorSize: number;
  /** Bytes of host storage the disk uses (sparse files count only what is stored). */
  allocatedBytes: number;
  /** Length of the file in bytes. */
  fileSize: number;
  diskId: string | null;
  dataWriteGuid: string | null;
  /** VHDX: the log holds entries not yet applied (they are replayed on the next writable open). */
  logDirty: boolean;
  /** Parents of a differencing disk, nearest first, as resolved paths; empty for other disks. */
  parentChain: string[];
}

/**
 * Describe the disk at `path` (opened read-only; never modified). Throws as openDisk does, except that a
 * VHDX with a dirty log whose DiskLock another live process holds (a running `tidemark serve`) gives
 * InUseError naming it rather than VhdxDirtyLogError.
 */
export async function diskInfo(path: string): Promise<DiskInfo> {
  const format = await detectDiskFormat(path);
  return withContext(`inspect ${path}`, format === 'vhdx' ? vhdxInfo(path) : rawInfo(path));
}

async function vhdxInfo(path: string): Promise<DiskInfo> {
  let dev: VhdxDevice;
  try {
    dev = await VhdxDevice.open(path, { readOnly: true });
  } catch (err) {
    if (err instanceof TidemarkError && err.code === 'E_VHDX_DIRTY_LOG') {
      const holder = await diskLockHolder(path);
      if (holder !== undefined) throw new InUseError(path, holder);
    }
    throw err;
  }
  try {
    const i = dev.info();
    return {
      path,
      format: 'vhdx',
      type: i.type,
      size: i.size,
      blockSize: i.blockSize,
      logicalSectorSize: i.logicalSectorSize,
      physicalSectorSize: i.physicalSectorSize,
      allocatedBytes: i.allocatedBytes,
      fileSize: i.fileSize,
      diskId: i.diskId,
      dataWriteGuid: i.dataWriteGuid,
      logDirty: i.logDirty,
      // parentChain() is [this disk, parent, grandparent, ...] as resolved paths.
      parentChain: dev.parentChain().slice(1),
    };
  } finally {
    await dev.close();
  }
}

async function rawInfo(path: string): Promise<DiskInfo> {
  const dev = await RawFileDevice.open(path, { readOnly: true });
  try {
    const st = await stat(path);
    return {
      path,
      format: 'raw',
      type: 'fixed',
      size: dev.size,
      blockSize: null,
      logicalSectorSize: dev.logicalSectorSize,
      physicalSectorSize: dev.physicalSectorSize,
      allocatedBytes: await dev.allocatedBytes(),
      fileSize: st.size,
      diskId: null,
      dataWriteGuid: null,
      logDirty: false,
      parentChain: [],
    };
  } finally {
    await dev.close();
  }
}
