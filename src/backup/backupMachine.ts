/**
 * backupMachine: one restore point of a whole machine (configuration, ID, name, every disk by slot) in a
 * repository, read from a backup checkpoint, incrementally when change tracking allows.
 *
 * How this works (the export job's flow, src/export/exportMachine.ts, with the repository as target):
 * 1. Take the repository's shared lock (prune cannot remove what an incremental builds on).
 * 2. [inventory txn] recover leftovers of killed jobs; refuse a held machine; find the chain's reference
 *    point (the newest refpoint whose `repo.id` is this repository's config id); seal each disk's RCT
 *    (the ID names "now"; a disk whose tracking files are gone gets tracking re-enabled and a warning);
 *    fork every disk into a backup checkpoint held by this process (`forkMachine`); the machine keeps
 *    writing its children. A running machine is forked online by its runner (the guest quiesced around
 *    the fork when possible, else crash-consistent with a warning) and keeps running throughout; its
 *    frozen parents are read while the runner holds them shared, and step 5 merges back online. (A holder-less backup checkpoint made by `checkpoint create --type backup`
 *    is adopted instead, with the IDs it sealed.)
 * 3. Per disk (the frozen image, read-only), choose the mode:
 *    - `full`: no previous snapshot of this machine, or the slot is new since it (reason given);
 *    - `incremental`: the reference point's snapshot exists, the disk is the same file of the same size
 *      with the same RCT ID as that snapshot's entry, and RCT answers `changes(refpoint ID, sealed ID)`:
 *      only the chunks overlapping those ranges are read; the previous index is copied and only the
 *      changed chunks replaced;
 *    - `full-scan` (with the reason): a previous snapshot exists but tracking cannot vouch for the
 *      changes since it (no reference point, its snapshot forgotten, disk replaced or resized, tracking
 *      invalid, unknown ID, not enabled): read everything allocated, store only new chunks.
 *    Never an empty incremental.
 * 4. The manifest (source `vm:<machine id>`, `machine: {id, name, config}`, disks with `slot`) is
 *    stored LAST: the restore point becomes visible only when every chunk and page it names exists.
 * 5. [inventory txn] the reference point `{..., repo: {id, location, snapshot}}` is recorded on the
 *    checkpoint; then the children are merged back through tracking (`closeBackupCheckpoint`) and the
 *    chain's older reference points are removed with their RCT IDs dropped (one per machine x repository).
 * On an error (Ctrl-C included) the checkpoint is merged back at once without a reference point (its
 * sealed IDs dropped). A SIGKILL leaves a backup checkpoint whose holder is dead: the next command on
 * the machine merges it back (recoverMachine) and keeps the reference point only if step 5 recorded it.
 * Killed before step 4: no snapshot. Killed between 4 and 5: a complete, valid snapshot without a
 * reference point; the next backup builds on the previous reference point (still correct).
 */
import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import type { BlockDevice } from '../blockdev/BlockDevice.js';
import { holdBackupCheckpoint, recordHeldRefpoint, releaseBackupCheckpoint, type HeldBackupCheckpoint } from '../checkpoint/holdBackupCheckpoint.js';
import { dropRefpointRctIds } from '../checkpoint/refpoints.js';
import { openDisk } from '../disk/openDisk.js';
import { TidemarkError } from '../errors.js';
import { openRctHandle } from '../rct/openRctHandle.js';
import type { Range } from '../rct/Range.js';
import { backupDevice, type BackupProgress } from '../repo/backupDevice.js';
import { loadManifest, saveManifest, type BackupStats, type DiskEntry, type Manifest, type Snapshot } from '../repo/Manifest.js';
import { RepoLock } from '../repo/RepoLock.js';
import type { Repository } from '../repo/Repository.js';
import { ObjectNotFoundError } from '../backend/errors.js';
import { Inventory, type MachineRecord, type RefpointRecord } from '../vm/Inventory.js';
import { configHash } from '../vm/MachineConfig.js';
import { findMachine } from '../vm/machines.js';
import { latestSnapshotOf, type BackupMode } from './backupDisk.js';
import { debugStep } from '../util/debugSteps.js';

export interface BackupMachineOptions {
  tags?: string[];
  /** Chunks in flight per disk (default 8). */
  concurrency?: number;
  /** Progress of the disk in `slot` (called per chunk). */
  onProgress?: (slot: number, p: BackupProgress) => void;
  /** Called after each step: `checkpoint`, `disk<slot>`, `manifest`, `refpoint`, `merge`. */
  onStep?: (step: string) => Promise<void> | void;
  signal?: AbortSignal;
}

export interface MachineDiskResult {
  slot: number;
  /** The disk's name in the snapshot (`disk<slot>`). */
  name: string;
  size: number;
  mode: BackupMode;
  /** Why this disk was not incremental (full-scan, or full of a disk new since the previous snapshot). */
  reason?: string;
  bytesRead: number;
  chunksNew: number;
  chunksDeduplicated: number;
  /** Chunks + index pages written for this disk, after compression. */
  bytesStored: number;
  /** bytesRead / bytesStored (Infinity when nothing was stored but something was read; 1 when neither). */
  dedupRatio: number;
  durationMs: number;
}

export interface BackupMachineResult {
  snapshot: Snapshot;
  machine: { id: string; name: string };
  /** The snapshot the incremental disks were taken from (the chain's previous restore point). */
  parent?: string;
  /** The reference point recorded for the next backup. */
  refpoint: string;
  disks: MachineDiskResult[];
  bytesRead: number;
  chunksNew: number;
  chunksDeduplicated: number;
  bytesStored: number;
  dedupRatio: number;
  durationMs: number;
  warnings: string[];
  /**
   * How consistent the frozen disks are (the backup checkpoint's record, src/checkpoint/quiesce.ts):
   * `application` (machine off, or its guest quiesced by `quiesce`), `crash` (running, not quiesced).
   */
  consistency?: { level: 'application' | 'crash'; quiesce: 'guest-agent' | 'hooks' | 'none' };
}

/** The repository source id of a machine. */
export const machineSourceId = (machineId: string) => `vm:${machineId}`;

/** The chain's reference point: the newest refpoint of `m` made by a backup into repository `repoId`. */
export function chainRefpoint(m: MachineRecord, repoId: string): RefpointRecord | undefined {
  return m.refpoints.filter((r) => r.repo?.id === repoId).sort((a, b) => a.seq - b.seq).pop();
}

interface Frozen extends HeldBackupCheckpoint {
  base?: RefpointRecord;
}

/**
 * Back up machine `ref` (name, ID or ID prefix in the inventory at `home`) into `repo`. Throws
 * VmNotFoundError, VmBusyError (held or running), NotSupportedError (a disk is not a VHDX), the
 * repository's errors (locked, no space...), and whatever aborts `signal`.
 */
export async function backupMachine(repo: Repository, home: string, ref: string, opts: BackupMachineOptions = {}): Promise<BackupMachineResult> {
  const t0 = Date.now();
  const time = new Date().toISOString();
  let stored = false;
  const step = async (s: string) => {
    await opts.onStep?.(s);
    await debugStep(s);
    // Once the manifest is stored the restore point exists: finish (record the reference point) rather
    // than report an interruption that committed something.
    if (!stored) opts.signal?.throwIfAborted();
  };
  const repoId = repo.config.id;
  const lock = await RepoLock.acquire(repo, { exclusive: false });
  try {
    // What this process remembers as stored may have been pruned since its last lock.
    repo.forgetCache();
    const fz: Frozen = await Inventory.transact(home, async (state) => {
      const m = findMachine(state, ref);
      const held = await holdBackupCheckpoint(m, { command: 'tidemark backup', job: 'a backup', prefix: 'backup' });
      const base = chainRefpoint(m, repoId);
      return { ...held, ...(base ? { base: structuredClone(base) } : {}) };
    });
    const release = (finish?: (m: MachineRecord) => Promise<void>) => releaseBackupCheckpoint(home, fz, finish);

    let result: BackupMachineResult;
    try {
      await step('checkpoint');
      const sourceId = machineSourceId(fz.machineId);
      // The chain's previous restore point: the reference point's snapshot (its disks equal the disks
      // at the reference point's RCT IDs). Without one, the newest snapshot of the machine still gives
      // dedup a geometry to follow (full-scan).
      let prev: Snapshot | undefined;
      let chainReason: string | undefined;
      if (fz.base?.repo) {
        try {
          prev = await loadManifest(repo, fz.base.repo.snapshot);
        } catch (err) {
          if (!(err instanceof ObjectNotFoundError)) throw err;
          chainReason = `snapshot ${fz.base.repo.snapshot.slice(0, 12)} of the reference point is gone (forgotten?)`;
        }
      }
      if (!prev) {
        prev = await latestSnapshotOf(repo, sourceId);
        if (prev && !chainReason) chainReason = `no reference point of this machine for this repository (removed, or a backup was interrupted after storing snapshot ${prev.id.slice(0, 12)})`;
      }
      const disks: DiskEntry[] = [];
      const perDisk: MachineDiskResult[] = [];
      const stats: BackupStats = { bytesRead: 0, chunksWritten: 0, chunkBytesWritten: 0, chunksDeduplicated: 0, pagesWritten: 0, pageBytesWritten: 0, durationMs: 0 };
      for (const d of fz.disks) {
        const r = await backupFrozenDisk(repo, d, fz, prev, chainReason, opts);
        disks.push(r.entry);
        perDisk.push(r.result);
        for (const k of Object.keys(stats) as Array<keyof BackupStats>) stats[k] += r.stats[k];
        await step(`disk${d.slot}`);
      }
      if (prev) {
        for (const pd of prev.disks) if (pd.slot !== undefined && !fz.disks.some((d) => d.slot === pd.slot)) fz.warnings.push(`disk slot ${pd.slot} was removed since snapshot ${prev.id.slice(0, 12)}`);
      }
      stats.durationMs = Date.now() - t0;
      const manifest: Manifest = {
        version: 1,
        time,
        host: hostname(),
        source: { id: sourceId, name: fz.name, kind: 'machine' },
        disks,
        stats,
        ...(prev ? { parent: prev.id } : {}),
        ...(opts.tags ? { tags: opts.tags } : {}),
        machine: { id: fz.machineId, name: fz.name, config: structuredClone(fz.config) as unknown as { [k: string]: unknown } },
      };
      // The commit point: written after every chunk and index page it names.
      const snapshotId = await saveManifest(repo, manifest);
      stored = true;
      await step('manifest');

      const refpoint: RefpointRecord = {
        id: randomUUID(),
        seq: fz.seq,
        machineId: fz.machineId,
        configHash: configHash(fz.config),
        exportDir: repo.location,
        disks: fz.disks.map((d) => ({ slot: d.slot, rctId: d.rctId, path: d.frozen, size: disks.find((x) => x.slot === d.slot)!.size, exportFile: '' })),
        repo: { id: repoId, location: repo.location, snapshot: snapshotId },
      };
      await recordHeldRefpoint(home, fz, refpoint, 'backup');
      await step('refpoint');
      const bytesStored = stats.chunkBytesWritten + stats.pageBytesWritten;
      result = {
        snapshot: { ...manifest, id: snapshotId },
        machine: { id: fz.machineId, name: fz.name },
        ...(prev ? { parent: prev.id } : {}),
        refpoint: refpoint.id,
        disks: perDisk,
        bytesRead: stats.bytesRead,
        chunksNew: stats.chunksWritten,
        chunksDeduplicated: stats.chunksDeduplicated,
        bytesStored,
        dedupRatio: ratio(stats.bytesRead, bytesStored),
        durationMs: 0,
        warnings: fz.warnings,
        ...(fz.consistency ? { consistency: fz.consistency } : {}),
      };
    } catch (err) {
      // Merge back now rather than leave it to the next command (which would do the same once we exit).
      await release().catch(() => undefined);
      throw err;
    }
    // Merge back; keep one reference point per machine x repository (older ones' RCT IDs dropped).
    await release((m) => dropOlderRefpoints(m, repoId, result.refpoint));
    await step('merge');
    result.durationMs = Date.now() - t0;
    return result;
  } finally {
    await lock.release();
  }
}

async function backupFrozenDisk(
  repo: Repository,
  d: Frozen['disks'][number],
  fz: Frozen,
  prev: Snapshot | undefined,
  chainReason: string | undefined,
  opts: BackupMachineOptions,
): Promise<{ entry: DiskEntry; stats: BackupStats; result: MachineDiskResult }> {
  const t0 = Date.now();
  const frozen: BlockDevice = await openDisk(d.frozen, { readOnly: true });
  const dev = process.env.TIDEMARK_DEBUG_STEPS !== undefined && process.env.TIDEMARK_DEBUG_PAUSE_AT === `disk${d.slot}-reading` ? pauseAfterFirstRead(frozen, `disk${d.slot}-reading`) : frozen;
  try {
    const size = dev.size;
    const prevDisk = prev?.disks.find((x) => x.slot === d.slot);
    const rpDisk = fz.base?.disks.find((x) => x.slot === d.slot);
    const since = prev ? `snapshot ${prev.id.slice(0, 12)}` : '';
    let mode: BackupMode = 'full';
    let reason: string | undefined;
    let changedRanges: Range[] | undefined;
    if (prev && !prevDisk) reason = `disk slot ${d.slot} is new since ${since}`;
    else if (prev && prevDisk) {
      mode = 'full-scan';
      if (chainReason) reason = chainReason;
      else if (!rpDisk) reason = `the reference point has no disk in slot ${d.slot}`;
      else if (rpDisk.path !== d.frozen) reason = `disk slot ${d.slot} was replaced (${rpDisk.path} -> ${d.frozen}) since ${since}`;
      else if (prevDisk.size !== size) reason = `disk slot ${d.slot} was resized (${prevDisk.size} -> ${size} bytes) since ${since}`;
      else if (!prevDisk.rctId || prevDisk.rctId !== rpDisk.rctId) reason = `${since} recorded no RCT ID for slot ${d.slot} matching the reference point`;
      else if (!d.rctId) reason = `disk slot ${d.slot} has no change tracking`;
      else {
        try {
          const h = await openRctHandle(d.frozen);
          try {
            changedRanges = await h.changes(rpDisk.rctId, d.rctId);
          } finally {
            await h.close();
          }
          mode = 'incremental';
        } catch (err) {
          if (!(err instanceof TidemarkError)) throw err;
          reason = `change tracking of disk slot ${d.slot} cannot vouch for the changes since ${since}: ${err.message}`;
        }
      }
    }
    if (reason) fz.warnings.push(`${reason}: ${mode === 'full' ? 'backed up in full' : 'full scan'}`);
    const name = `disk${d.slot}`;
    const r = await backupDevice(repo, dev, {
      name,
      previous: mode === 'full' ? undefined : prevDisk,
      changedRanges,
      ...(d.rctId ? { rctId: d.rctId } : {}),
      concurrency: opts.concurrency,
      onProgress: opts.onProgress && ((p) => opts.onProgress!(d.slot, p)),
      signal: opts.signal,
    });
    const entry: DiskEntry = { ...r.disk, name, slot: d.slot };
    const bytesStored = r.stats.chunkBytesWritten + r.stats.pageBytesWritten;
    return {
      entry,
      stats: r.stats,
      result: {
        slot: d.slot,
        name,
        size,
        mode,
        ...(reason !== undefined ? { reason } : {}),
        bytesRead: r.stats.bytesRead,
        chunksNew: r.stats.chunksWritten,
        chunksDeduplicated: r.stats.chunksDeduplicated,
        bytesStored,
        dedupRatio: ratio(r.stats.bytesRead, bytesStored),
        durationMs: Date.now() - t0,
      },
    };
  } finally {
    await frozen.close();
  }
}

/**
 * Keep one reference point per machine x repository: remove the chain's reference points other than
 * `keep` and drop their RCT IDs (their changes fold into older IDs; nothing needs them any more).
 */
async function dropOlderRefpoints(m: MachineRecord, repoId: string, keep: string): Promise<void> {
  const old = m.refpoints.filter((r) => r.repo?.id === repoId && r.id !== keep);
  if (!m.refpoints.some((r) => r.id === keep)) return; // not recorded (cannot happen after step 5): keep the old base
  for (const r of old) await dropRefpointRctIds(r);
  m.refpoints = m.refpoints.filter((r) => !old.includes(r));
}

/**
 * Test hook (TIDEMARK_DEBUG_PAUSE_AT=disk<slot>-reading): `dev` whose reads, once the first one has
 * completed, print the step and pause (debugStep) before answering: the backup is stopped mid-read, some
 * chunks possibly stored, no manifest yet.
 */
function pauseAfterFirstRead(dev: BlockDevice, step: string): BlockDevice {
  let gate: Promise<void> | undefined;
  const after = async <T>(p: Promise<T>): Promise<T> => {
    const v = await p;
    gate ??= debugStep(step);
    await gate;
    return v;
  };
  return {
    size: dev.size,
    logicalSectorSize: dev.logicalSectorSize,
    physicalSectorSize: dev.physicalSectorSize,
    capabilities: dev.capabilities,
    read: (o, l) => after(dev.read(o, l)),
    ...(dev.readInto ? { readInto: (t: Uint8Array, to: number, o: number, l: number) => after(dev.readInto!(t, to, o, l)) } : {}),
    write: (o, b, w) => dev.write(o, b, w),
    zero: (o, l, z) => dev.zero(o, l, z),
    trim: (o, l, w) => dev.trim(o, l, w),
    flush: () => dev.flush(),
    extents: (o, l) => dev.extents(o, l),
    close: () => dev.close(),
  };
}

const ratio = (read: number, stored: number) => (stored > 0 ? read / stored : read > 0 ? Infinity : 1);
