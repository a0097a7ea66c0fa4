/** Disk tools: open/create/inspect/convert/compare/check/resize/merge disks of any supported format. */
export { openDisk, type OpenDiskOptions } from './openDisk.js';
export { createDisk, type CreateDiskOptions } from './createDisk.js';
export { diskInfo, type DiskInfo, type DiskType } from './diskInfo.js';
export { convertDisk, type ConvertDiskOptions, type ConvertResult } from './convertDisk.js';
export { compareDisks } from './compareDisks.js';
export { compareDevices, type CompareOptions, type CompareResult } from './compareDevices.js';
export { copyDevice, type CopyOptions, type CopyStats } from './copyDevice.js';
export { checkDisk, type DiskCheck, type DiskProblem } from './checkDisk.js';
export { resizeDisk, type ResizeResult } from './resizeDisk.js';
export { mergeDisk, type MergeResult } from './mergeDisk.js';
export { detectDiskFormat } from './detectDiskFormat.js';
export { replayVhdxLog } from './replayVhdxLog.js';
export { diskLockHolder } from './diskLockHolder.js';
export { sniffFormat, type DiskFormat, type Sniffed } from './sniffFormat.js';
export { commitFile, tempSibling } from './commitFile.js';
export { UnsupportedDiskFormatError, DiskExistsError, DiskOperationError, OperationAbortedError } from './errors.js';
