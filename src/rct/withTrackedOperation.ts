/**
 * Tidemark operations that change a disk *outside* the tracking layer (resize, merge into a parent)
 * while keeping its change tracking valid.
 *
 * How this works (docs/design.md (rct section), "Tracked operations"): with the disk lock held exclusively, the
 * tracking state is loaded and verified as for any query (an outside writer still restarts it); the
 * ranges the operation will change are recorded in the current generation and the `.rct` is made durable
 * *not clean* with the identities a crash midway may leave (raw: fingerprint + lease; VHDX: the identity
 * now plus accept tokens). Only then does the operation run. Afterwards (even when it failed: it changes
 * nothing outside the declared ranges, apart from the size) the disk is reopened read-only, the size is
 * compared — a grown area is recorded, a shrink restarts tracking (older IDs then fail with
 * TrackingInvalidError "the disk shrank from A to B bytes") — and the identity observed now is recorded
 * as clean, so older IDs stay valid. A crash midway leaves the not-clean state; the next open's crash
 * rules decide (same size checks; identities as recorded).
 */
import type { BlockDevice } from '../blockdev/BlockDevice.js';
import { DiskLock } from '../blockdev/DiskLock.js';
import { TidemarkError } from '../errors.js';
import { detectDiskFormat } from '../disk/detectDiskFormat.js';
import { openDisk } from '../disk/openDisk.js';
import { ChangeTracker, JOURNAL_TOKEN } from './ChangeTracker.js';
import { isTrackingEnabled } from './openTrackedDisk.js';
import type { Range } from './Range.js';

export interface TrackedOperationPlan {
  /** What the operation is, for lock holders and invalidation notes (e.g. "tidemark disk resize"). */
  what: string;
  /**
   * The byte ranges whose content the operation may change (inside the current size). A function is
   * called once the disk is locked. A superset is always safe; an under-statement is a silent miss.
   */
  ranges?: Range[] | (() => Promise<Range[]>);
  /**
   * VHDX only: JSON files whose `accepted` array will list every identity (DataWriteGuid) the operation
   * may leave on the disk before it changes anything (the merge journal). After a crash midway such an
   * identity is accepted as ours instead of restarting tracking.
   */
  acceptJournals?: string[];
}

export interface TrackedOperationReport {
  /** False when tracking is not enabled on the disk (the operation simply ran). */
  tracked: boolean;
  /** The ranges recorded as changed before the operation ran (merged, clipped to the old size). */
  marked: Range[];
  /** Set when the operation grew the disk: the old size (the area from its last block is recorded). */
  grewFrom?: number;
  /** Set when tracking restarted (a shrink, or found invalid before the operation): why. Older IDs fail with TrackingInvalidError. */
  restarted?: string;
}

/**
 * Run `op`, a Tidemark operation that changes the disk at `diskPath` without going through a tracked
 * device, keeping change tracking valid: `plan.ranges` (and a grown area) are reported as changed since
 * every live ID; a shrink invalidates older IDs with a reason naming the shrink. When tracking is not
 * enabled, just runs `op` (no lock taken: callers that need one take it). Throws InUseError when another
 * process holds the disk (e.g. it is being served), and whatever `op` throws (after re-binding).
 */
export async function withTrackedOperation<T>(diskPath: string, plan: TrackedOperationPlan, op: () => Promise<T>): Promise<{ value: T; report: TrackedOperationReport }> {
  if (!(await isTrackingEnabled(diskPath))) return { value: await op(), report: { tracked: false, marked: [] } };
  const lock = await DiskLock.acquire(diskPath, { exclusive: true, holder: plan.what });
  try {
    const kind = (await detectDiskFormat(diskPath)) === 'vhdx' ? 'device' : 'file';
    const before = await openToObserve(diskPath);
    let tracker: ChangeTracker;
    let marked: Range[];
    try {
      tracker = await ChangeTracker.open(diskPath, before, 'meta');
      const ranges = typeof plan.ranges === 'function' ? await plan.ranges() : plan.ranges ?? [];
      marked = mergeRanges(ranges, tracker.store.diskSize);
      await tracker.beginOperation(before, kind, {
        ranges: marked,
        acceptTokens: (plan.acceptJournals ?? []).map((p) => `${JOURNAL_TOKEN}${p}`),
      });
    } finally {
      await before.close();
    }
    const trackerBefore = tracker.store.tracker;
    let outcome: { ok: true; value: T } | { ok: false; err: unknown };
    try {
      outcome = { ok: true, value: await op() };
    } catch (err) {
      outcome = { ok: false, err };
    }
    // Re-bind even when the operation failed: it changed nothing outside what was declared.
    let grown: { grewFrom?: number };
    try {
      const after = await openToObserve(diskPath);
      try {
        grown = await tracker.endOperation(after, kind, plan.what);
      } finally {
        await after.close();
        await tracker.abandon();
      }
    } catch (err) {
      // Not re-bound: the .rct stays "not clean" and the next open decides (a superset, or a restart).
      throw outcome.ok ? err : outcome.err;
    }
    if (!outcome.ok) throw outcome.err;
    const value = outcome.value;
    const report: TrackedOperationReport = { tracked: true, marked };
    if (grown.grewFrom !== undefined) report.grewFrom = grown.grewFrom;
    if (tracker.store.tracker !== trackerBefore || tracker.verdict === 'restarted') report.restarted = tracker.store.invalidation?.reason;
    return { value, report };
  } finally {
    await lock.release();
  }
}

/**
 * Open the disk read-only to observe its size and identity. A VHDX whose log still holds updates of a
 * crashed session (e.g. an interrupted merge) refuses read-only opens: replay it first by opening it
 * read-write and closing it without writing (replay changes the FileWriteGuid, not the DataWriteGuid).
 */
async function openToObserve(diskPath: string): Promise<BlockDevice> {
  try {
    return await openDisk(diskPath, { readOnly: true });
  } catch (err) {
    if (!(err instanceof TidemarkError && err.code === 'E_VHDX_DIRTY_LOG')) throw err;
    await (await openDisk(diskPath, { untracked: true })).close(); // replays the log only; no data write
    return openDisk(diskPath, { readOnly: true });
  }
}

/** Sort, clip to [0, size) and merge overlapping or adjacent ranges. */
function mergeRanges(ranges: Range[], size: number): Range[] {
  const out: Range[] = [];
  const sorted = ranges
    .map((r) => ({ offset: Math.max(0, r.offset), end: Math.min(size, r.offset + r.length) }))
    .filter((r) => r.end > r.offset)
    .sort((a, b) => a.offset - b.offset);
  for (const r of sorted) {
    const last = out[out.length - 1];
    if (last && r.offset <= last.offset + last.length) last.length = Math.max(last.length, r.end - last.offset);
    else out.push({ offset: r.offset, length: r.end - r.offset });
  }
  return out;
}
