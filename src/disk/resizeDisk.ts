import { RawFileDevice } from '../blockdev/RawFileDevice.js';
import { UsageError, withContext } from '../errors.js';
import { withTrackedOperation, type TrackedOperationReport } from '../rct/withTrackedOperation.js';
import { resizeVhdx } from '../vhdx/resizeVhdx.js';
import { detectDiskFormat } from './detectDiskFormat.js';
import { diskInfo } from './diskInfo.js';

export interface ResizeResult {
  path: string;
  oldSize: number;
  newSize: number;
  /** Present when change tracking is enabled on the disk: what it recorded (see withTrackedOperation). */
  tracking?: TrackedOperationReport;
}

/**
 * Change the virtual size of a disk. Growing adds zeros at the end. Shrinking discards everything past
 * `newSize` and is refused unless `force` is set (UsageError). VHDX sizes must be a multiple of the
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
  if (newSize < oldSize && !opts.force) {
    throw new UsageError(`shrinking ${path} from ${oldSize} to ${newSize} bytes discards the data past ${newSize}; pass --force if that is what you want`, { path, oldSize, newSize });
  }
  const { report } = await withTrackedOperation(path, { what: 'tidemark disk resize' }, async () => {
    if (format === 'vhdx') {
      await withContext(`resize ${path}`, resizeVhdx(path, newSize, { force: !!opts.force }));
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
