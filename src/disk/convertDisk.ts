import { realpath, stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import type { BlockDevice } from '../blockdev/BlockDevice.js';
import { RawFileDevice } from '../blockdev/RawFileDevice.js';
import { VhdxDevice } from '../vhdx/VhdxDevice.js';
import { UsageError, withContext } from '../errors.js';
import { commitFile, discardTemp, tempSibling } from './commitFile.js';
import { copyDevice, type CopyStats } from './copyDevice.js';
import { diskInfo } from './diskInfo.js';
import { DiskOperationError } from './errors.js';
import { openDisk } from './openDisk.js';
import type { DiskFormat } from './sniffFormat.js';

export interface ConvertDiskOptions {
  /** Output format (default 'vhdx'). */
  format?: DiskFormat;
  /** VHDX output type (default 'dynamic'); raw output takes no type. */
  type?: 'dynamic' | 'fixed';
  /** VHDX payload block size (default: the VHDX engine's default). */
  blockSize?: number;
  /** Logical/physical sector size of a VHDX output (default: the source's). */
  logicalSectorSize?: 512 | 4096;
  physicalSectorSize?: 512 | 4096;
  /** Bytes per I/O and chunks in flight (see copyDevice). */
  chunkSize?: number;
  concurrency?: number;
  onProgress?: (done: number, total: number) => void;
  /** Abort the conversion: the temporary output is removed and `dst` left as it was (OperationAbortedError). */
  signal?: AbortSignal;
}

export interface ConvertResult extends CopyStats {
  src: string;
  dst: string;
  format: DiskFormat;
}

/**
 * Convert the disk at `src` (any format, detected by content; a differencing VHDX is flattened with its
 * parents) into a new standalone disk at `dst`.
 *
 * - Streams with bounded memory (copyDevice); holes, zero extents and zero 4 KiB granules are not
 *   written, so the output is sparse (dynamic VHDX: no block allocated; raw: a sparse file).
 * - Atomic: the output is built under a temporary name in dst's directory, flushed, fsynced and renamed
 *   over `dst`. On any failure the temporary file is removed and an existing `dst` is untouched.
 * - `src` is opened read-only and never modified. `dst` may not be `src` or one of its parents.
 */
export async function convertDisk(src: string, dst: string, opts: ConvertDiskOptions = {}): Promise<ConvertResult> {
  const format = opts.format ?? 'vhdx';
  if (format === 'raw' && (opts.type === 'dynamic' || opts.blockSize !== undefined)) {
    throw new UsageError('a raw disk has no type or block size (its file is sparse anyway); drop --type/--block-size or use --format vhdx');
  }
  const info = await diskInfo(src);
  await refuseOverwritingSource(dst, [src, ...info.parentChain]);
  const input = await openDisk(src, { readOnly: true });
  const temp = tempSibling(resolve(dst));
  let output: BlockDevice | undefined;
  try {
    output = await withContext(`create ${dst}`, createOutput(temp, format, input, opts));
    const stats = await withContext(`convert ${src} to ${dst}`, copyDevice(input, output, opts));
    await output.flush();
    await output.close();
    output = undefined;
    await commitFile(temp, dst, { overwrite: true });
    return { ...stats, src, dst, format };
  } catch (err) {
    await output?.close().catch(() => undefined);
    await discardTemp(temp);
    throw err;
  } finally {
    await input.close();
  }
}

async function createOutput(temp: string, format: DiskFormat, input: BlockDevice, opts: ConvertDiskOptions): Promise<BlockDevice> {
  if (format === 'raw') return RawFileDevice.create(temp, input.size);
  return VhdxDevice.create(temp, {
    size: input.size,
    type: opts.type ?? 'dynamic',
    ...(opts.blockSize !== undefined ? { blockSize: opts.blockSize } : {}),
    logicalSectorSize: opts.logicalSectorSize ?? sectorSize(input.logicalSectorSize),
    physicalSectorSize: opts.physicalSectorSize ?? sectorSize(input.physicalSectorSize),
  });
}

function sectorSize(n: number): 512 | 4096 {
  return n === 4096 ? 4096 : 512;
}

/** Replacing the source (or a parent it reads through) while reading it would destroy the input. */
async function refuseOverwritingSource(dst: string, inputs: string[]): Promise<void> {
  const target = await stat(dst).catch(() => undefined);
  if (!target) return;
  for (const p of inputs) {
    const s = await stat(p).catch(() => undefined);
    if (s && s.dev === target.dev && s.ino === target.ino) {
      throw new DiskOperationError(dst, `is the input of the conversion (${await realpath(p).catch(() => p)}); write the output to another path`);
    }
  }
}
