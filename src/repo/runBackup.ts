/**
 * runBackup: one restore point = back up each disk, then commit the manifest — under a shared lock.
 * The write order is the repository's core invariant: chunks -> index pages (bottom-up, inside
 * backupDevice), both into packs -> packs durable -> pack index durable -> manifest. If anything fails or the process dies before the manifest is stored, no
 * snapshot becomes visible; what was written is unreferenced garbage that prune removes later.
 *
 * Incrementals (disks with changedRanges) must name their `parent` snapshot, which must still exist
 * once our lock is held (ParentMissingError otherwise): the new tree shares the parent's unchanged
 * pages and chunks by digest, and only a live manifest keeps them safe from prune.
 */
import { hostname } from 'node:os';
import type { BlockDevice } from '../blockdev/BlockDevice.js';
import { backupDevice, type BackupDeviceOptions, type BackupProgress } from './backupDevice.js';
import { saveManifest, type BackupStats, type DiskEntry, type Manifest, type Snapshot } from './Manifest.js';
import { RepoLock } from './RepoLock.js';
import type { Repository } from './Repository.js';
import { ParentMissingError } from './errors.js';
import { ZERO_DIGEST } from './constants.js';
import { UsageError } from '../errors.js';

export interface BackupDiskInput extends Omit<BackupDeviceOptions, 'onProgress' | 'signal' | 'name'> {
  name: string;
  device: BlockDevice;
}

export interface RunBackupOptions {
  source: { id: string; name: string; kind?: string };
  disks: BackupDiskInput[];
  /** The snapshot the `previous` entries came from. */
  parent?: string;
  tags?: string[];
  host?: string;
  onProgress?: (disk: string, p: BackupProgress) => void;
  signal?: AbortSignal;
  /** Skip taking the shared lock (caller holds one). */
  noLock?: boolean;
}

export async function runBackup(repo: Repository, opts: RunBackupOptions): Promise<Snapshot> {
  const time = new Date().toISOString();
  const t0 = Date.now();
  if (typeof opts.source?.id !== 'string' || typeof opts.source.name !== 'string') throw new UsageError('a backup needs a source { id, name }');
  const incremental = opts.disks.some((d) => d.changedRanges && d.previous && d.previous.indexRoot !== ZERO_DIGEST);
  if (incremental && !opts.parent) throw new UsageError('an incremental backup (changed ranges) needs the parent snapshot id its previous disk entries come from');
  repo.packs.prefetchCache(); // read while the lock is taken; checked by the load under the lock
  const lock = opts.noLock ? null : await RepoLock.acquire(repo, { exclusive: false });
  try {
    // What this process remembers as stored may have been pruned since its last lock.
    repo.forgetCache();
    // Start reloading what is stored now, so its reads (one cache file, or the pack indexes) are queued
    // in libuv's pool ahead of the disk's chunk reads; whoever needs the table awaits (and sees errors).
    repo.packs.ensureLoaded().catch(() => undefined);
    // An incremental reuses the parent's pages and chunks by digest without reading them all. They are
    // guaranteed to exist only while the parent manifest exists (prune keeps everything reachable
    // from a manifest, and cannot run while we hold our lock).
    if (incremental && !(await repo.backend.has('snapshots', opts.parent!))) throw new ParentMissingError(repo.location, opts.parent!);
    const disks: DiskEntry[] = [];
    const total: BackupStats = { bytesRead: 0, chunksWritten: 0, chunkBytesWritten: 0, chunksDeduplicated: 0, pagesWritten: 0, pageBytesWritten: 0, durationMs: 0 };
    for (const d of opts.disks) {
      const { device, ...rest } = d;
      const r = await backupDevice(repo, device, { ...rest, onProgress: opts.onProgress && ((p) => opts.onProgress!(d.name, p)), signal: opts.signal });
      disks.push(r.disk);
      for (const k of Object.keys(total) as Array<keyof BackupStats>) total[k] += r.stats[k];
    }
    total.durationMs = Date.now() - t0;
    const m: Manifest = { version: 1, time, host: opts.host ?? hostname(), source: opts.source, disks, stats: total };
    if (opts.parent) m.parent = opts.parent;
    if (opts.tags) m.tags = opts.tags;
    // Every blob the manifest names must be durable and indexed before the manifest is published
    // (saveManifest -> putObject('snapshots') flushes first; the manifest's own file is written and
    // fsynced meanwhile and linked only after). Flushing the last packs can take seconds: an abort
    // requested meanwhile still wins — nothing is committed.
    const id = await saveManifest(repo, m, async () => {
      if (opts.signal?.aborted) throw opts.signal.reason ?? new Error('backup aborted');
    });
    repo.saveCache(); // the next backup or restore reads one file instead of every pack index (background)
    return { ...m, id };
  } catch (err) {
    await repo.packs.abort(); // nothing unflushed survives a failed backup (it would be garbage anyway)
    throw err;
  } finally {
    await lock?.release();
  }
}
