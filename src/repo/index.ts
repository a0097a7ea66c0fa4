/** The repository layer's public API (see docs/design.md (repo section)). */
export { Repository, isAllZero, type InitOptions, type OpenOptions, type WriteStats } from './Repository.js';
export { IndexTree, IndexWriter, chunkCount, treeDepth, readIndexPage, type DiskGeometry, type IndexRef, type IndexUpdateResult } from './IndexTree.js';
export { encodeIndexPage, decodeIndexPage, type IndexPage } from './IndexPage.js';
export { encodeObject, decodeObject, objectDigest, type RepoKeys } from './ObjectCodec.js';
export { saveManifest, loadManifest, listSnapshots, findSnapshot, manifestProblem, type Manifest, type Snapshot, type DiskEntry, type BackupStats } from './Manifest.js';
export { RepoLock, listLocks, isStale, removeStaleLocks, type LockInfo, type LockEntry, type LockOptions } from './RepoLock.js';
export { backupDevice, type BackupDeviceOptions, type BackupProgress, type DiskBackupResult } from './backupDevice.js';
export { runBackup, type RunBackupOptions, type BackupDiskInput } from './runBackup.js';
export { restoreDevice, type RestoreDeviceOptions, type RestoreProgress } from './restoreDevice.js';
export { verifyRepository, type VerifyOptions, type VerifyReport, type VerifyProblem } from './verifyRepository.js';
export { applyForgetPolicy, isoWeek, type ForgetPolicy, type PolicyDecision, type PolicySnapshot } from './forgetPolicy.js';
export { forget, prune, type ForgetResult, type PruneOptions, type PruneResult } from './prune.js';
export { chunksCovering } from './chunkPlan.js';
export { ZERO_DIGEST, DEFAULT_CHUNK_SIZE, DEFAULT_FANOUT } from './constants.js';
export * from './errors.js';
export { openRepositoryAt, readPassphrase, type PassphraseSource } from './openRepositoryAt.js';
export { PackStore, type BlobLocation } from './PackStore.js';
export { encodePackTail, decodePack, encodePackIndex, decodePackIndex, packId, type PackEntry, type PackIndexPack, type BlobKind } from './PackFormat.js';
