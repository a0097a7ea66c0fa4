/**
 * rollbackDisk: put a disk back to a restore point in place, writing only what differs.
 *
 * How this works: the disk is locked exclusively and opened writable *through change tracking*
 * (openTrackedDisk), so the rollback's own writes are tracked like any other and later incrementals stay
 * correct. Which chunks to rewrite:
 * - `rct`: when the snapshot's disk entry has an RCT ID the tracker still vouches for, exactly the
 *   chunks overlapping changes(since that ID) — nothing else can differ from the snapshot.
 * - `compare`: otherwise every chunk is read, digested with the repository's digest function and
 *   compared with the snapshot's index; chunks that differ are rewritten (a zero chunk in the snapshot is
 *   zeroed on the disk).
 * Every rewritten chunk comes from the repository verified against its digest. The disk is flushed
 * before returning. The disk's size must equal the snapshot's.
 */
import { resolve } from 'node:path';
import { DiskLock } from '../blockdev/DiskLock.js';
import type { BlockDevice } from '../blockdev/BlockDevice.js';
import { isTracked } from '../rct/trackingLayer.js';
import { openTrackedDisk } from '../rct/openTrackedDisk.js';
import { TrackingInvalidError, UnknownRctIdError } from '../rct/errors.js';
import { chunkIndexes, chunksCovering, intervalsLength } from '../repo/chunkPlan.js';
import { ZERO_DIGEST } from '../repo/constants.js';
import { DiskMismatchError } from '../repo/errors.js';
import { IndexTree } from '../repo/IndexTree.js';
import { findSnapshot } from '../repo/Manifest.js';
import type { Repository } from '../repo/Repository.js';
import { isAllZero } from '../repo/Repository.js';
import { controlClient } from '../rct/control.js';
import { DiskServedError } from './errors.js';
import { selectDisk } from './selectDisk.js';

export interface RollbackOptions {
  disk?: string;
  concurrency?: number;
  onProgress?: (done: number, total: number) => void;
}

export interface RollbackResult {
  snapshot: string;
  method: 'rct' | 'compare';
  /** Why `compare` was used. */
  reason?: string;
  chunksChecked: number;
  chunksWritten: number;
  bytesRead: number;
  bytesWritten: number;
  durationMs: number;
}

export async function rollbackDisk(repo: Repository, snapshotId: string, diskPath: string, opts: RollbackOptions = {}): Promise<RollbackResult> {
  const t0 = Date.now();
  const snap = await findSnapshot(repo, snapshotId);
  const entry = selectDisk(snap, opts.disk);
  const path = resolve(diskPath);
  const ctl = await controlClient(path, 5000);
  if (ctl) {
    ctl.close();
    throw new DiskServedError(diskPath);
  }
  const lock = await DiskLock.acquire(path, { exclusive: true, holder: 'tidemark restore --in-place' });
  let dev: BlockDevice | undefined;
  try {
    dev = await openTrackedDisk(path);
    if (dev.size !== entry.size) {
      throw new DiskMismatchError(`${diskPath} is ${dev.size} bytes but disk ${entry.name} of snapshot ${snap.id.slice(0, 12)} is ${entry.size}; restore to a new file with --to instead`, { size: dev.size, snapshot: entry.size });
    }
    const cs = entry.chunkSize;
    const count = Math.ceil(entry.size / cs);
    let method: 'rct' | 'compare' = 'compare';
    let reason: string | undefined;
    let candidates: Iterable<number> = range(count);
    let total = count;
    if (!entry.rctId) reason = 'the snapshot recorded no RCT ID';
    else if (!isTracked(dev)) reason = 'change tracking is not enabled on the disk';
    else {
      try {
        const intervals = chunksCovering(await dev.changes(entry.rctId), entry.size, cs);
        candidates = chunkIndexes(intervals);
        total = intervalsLength(intervals);
        method = 'rct';
      } catch (err) {
        if (!(err instanceof TrackingInvalidError || err instanceof UnknownRctIdError)) throw err;
        reason = err.message;
      }
    }
    const tree = IndexTree.open(repo, entry);
    const st = { checked: 0, written: 0, bytesRead: 0, bytesWritten: 0 };
    const target = dev;
    const one = async (i: number, digest: string): Promise<void> => {
      const off = i * cs;
      const len = Math.min(cs, entry.size - off);
      if (method === 'compare') {
        const cur = await target.read(off, len);
        st.bytesRead += len;
        const curDigest = isAllZero(cur) ? ZERO_DIGEST : repo.digest(cur);
        if (curDigest === digest) return;
      }
      if (digest === ZERO_DIGEST) await target.zero(off, len);
      else {
        const data = await repo.getChunk(digest);
        if (data.length !== len) throw new DiskMismatchError(`chunk ${i} of snapshot ${snap.id.slice(0, 12)} is ${data.length} bytes, expected ${len}`);
        await target.write(off, data);
      }
      st.written++;
      st.bytesWritten += len;
    };
    const running = new Set<Promise<void>>();
    let failure: unknown = null;
    const concurrency = Math.max(1, opts.concurrency ?? 8);
    for (const i of candidates) {
      if (failure) break;
      const digest = await tree.lookup(i);
      const p: Promise<void> = one(i, digest).then(
        () => {
          running.delete(p);
          st.checked++;
          opts.onProgress?.(st.checked, total);
        },
        (err) => {
          running.delete(p);
          failure ??= err;
        },
      );
      running.add(p);
      if (running.size >= concurrency) await Promise.race(running);
    }
    await Promise.all(running);
    if (failure) throw failure;
    await dev.flush();
    return { snapshot: snap.id, method, ...(reason ? { reason } : {}), chunksChecked: st.checked, chunksWritten: st.written, bytesRead: st.bytesRead, bytesWritten: st.bytesWritten, durationMs: Date.now() - t0 };
  } finally {
    await dev?.close().catch(() => undefined);
    await lock.release();
  }
}

function* range(n: number): Iterable<number> {
  for (let i = 0; i < n; i++) yield i;
}
