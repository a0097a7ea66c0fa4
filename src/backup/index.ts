/** Backup jobs: the public API (see docs/design.md (backup section)). */
export { backupDisk, diskSource, latestSnapshotOf, type BackupDiskOptions, type BackupDiskResult, type BackupMode } from './backupDisk.js';
export { restoreSnapshot, type RestoreSnapshotOptions, type RestoreSnapshotResult } from './restoreSnapshot.js';
export { rollbackDisk, type RollbackOptions, type RollbackResult } from './rollbackDisk.js';
export { SnapshotDevice, type SnapshotDeviceOptions } from './SnapshotDevice.js';
export { diffDisks, type SnapshotDiff } from './diffSnapshots.js';
export { selectDisk } from './selectDisk.js';
export { tidemarkHome, defaultRepositoryPath, openOrCreateRepository } from './defaultRepository.js';
export { DiskServedError, SnapshotDiskError } from './errors.js';
export { mountSnapshot, type MountOptions, type MountedSnapshot } from './mountSnapshot.js';
export { DeferredSyncBackend, type DeferredSyncOptions } from './DeferredSyncBackend.js';
export { repositoryStats, type RepositoryStats } from './repositoryStats.js';
export { backupMachine, chainRefpoint, machineSourceId, type BackupMachineOptions, type BackupMachineResult, type MachineDiskResult } from './backupMachine.js';
export { restoreMachine, type RestoreMachineOptions, type RestoreMachineResult } from './restoreMachine.js';
