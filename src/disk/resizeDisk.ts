import { RawFileDevice } from '../blockdev/RawFileDevice.js';
import { UsageError, withContext } from '../errors.js';
import { withTrackedOperation, type TrackedOperationReport } from '../rct/withTrackedOperation.js';
import { VhdxShrinkError } from '../vhdx/errors.js';
import { resizeVhdx } from '../vhdx/resizeVhdx.js';
import { detectDiskFormat } from './detectDiskFormat.js';
import { diskInfo } from './diskInfo.js';
import { walkExtents } from './walkExtents.js';

const CHUNK = 4 * 1024 * 1024;
const ZEROS = Buffer.alloc(CHUNK);

/** True when the raw disk at `path` holds a non-zero byte at or past `from` (reads data extents only; read-only). */
async function nonZeroDataBeyond(path: string, from: number): Promise<boolean> {
  const dev = await RawFileDevice.open(path, { readOnly: true });
  try {
    for await (const e of walkExtents(dev, from, dev.size)) {
      if (e.type !== 'data') continue;
      for (let o = e.offset; o < e.offset + e.length; o += CHUNK) {
        const buf = await dev.read(o, Math.min(CHUNK, e.offset + e.length - o));
        if (!buf.equals(ZEROS.subarray(0, buf.length))) return true;
      }
    }
    return false;
  } finally {
    await dev.close();
  }
}

export interface ResizeResult {
  path: string;
  oldSize: number;
  newSize: number;
  /** Present when change tracking is enabled on the disk: what it recorded (see withTrackedOperation). */
  tracking?: TrackedOperationReport;
}

/**
 * Change the virtual size of a disk. Growing adds zeros at the end. Shrinking drops everything past
 * `newSize`: it is refused (UsageError naming --force) when any non-zero byte lives there, unless `force`
 * is set; a shrink that loses only zeros/holes needs no `force`. VHDX sizes must be a multiple of the
 * logical sector size (the VHDX engine enforces its own rules, e.g. for differencing disks).
 * With change tracking enabled the resize goes through RCT (withTrackedOperation, holding the disk lock:
 * InUseError while the disk is served): growing keeps older IDs valid and reports the new area as
 * changed; shrinking restarts tracking, and older IDs then fail with TrackingInvalidError ("the disk shrank").
 */
export async function resizeDisk(path: string, newSize: number, opts: { force?: boolean } = {}): Promise<ResizeResult> {
  if (!Number.isSafeInteger(newSize) || newSize <= 0) throw new UsageError(`invalid new size ${newSize}: give a positive number of bytes`);
  const format = await detectDiskFormat(path);
  const info = await diskInfo(path);
  const oldSize = info.size;
  const refuse = (detail: string, data: Record<string, unknown> = {}) =>
    new UsageError(`shrinking ${path} from ${oldSize} to ${newSize} bytes would discard ${detail} past ${newSize}; pass --force to discard it`, { path, oldSize, newSize, ...data });
  if (newSize < oldSize && !opts.force && format !== 'vhdx' && (await nonZeroDataBeyond(path, newSize))) throw refuse('non-zero data');
  const { report } = await withTrackedOperation(path, { what: 'tidemark disk resize' }, async () => {
    if (format === 'vhdx') {
      // The VHDX engine checks the blocks past the new end itself (VhdxShrinkError when any holds data).
      await withContext(`resize ${path}`, resizeVhdx(path, newSize, { force: !!opts.force })).catch((err: unknown) => {
        if (err instanceof VhdxShrinkError) throw refuse(`${String(err.data.lostBlocks)} block(s) holding data`, { lostBlocks: err.data.lostBlocks });
        throw err;
      });
    } else {
      const dev = await RawFileDevice.open(path);
      try {
        await withContext(`resize ${path}`, dev.resize(newSize));
        await dev.flush();
      } finally {
        await dev.close();
      }
    }
  });
  return report.tracked ? { path, oldSize, newSize, tracking: report } : { path, oldSize, newSize };
}
