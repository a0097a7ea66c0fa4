import { DiskLock } from '../blockdev/DiskLock.js';
import { openDisk } from '../disk/openDisk.js';
import { replayVhdxLog } from '../disk/replayVhdxLog.js';
import { TidemarkError } from '../errors.js';
import { ChangeTracker, type RctStatus } from './ChangeTracker.js';
import { controlClient } from './control.js';
import { TrackingNotEnabledError } from './errors.js';
import { isTrackingEnabled } from './openTrackedDisk.js';
import type { Range } from './Range.js';

/** The RCT operations on a disk, wherever its tracker lives. */
export interface RctHandle {
  /** 'socket': the disk is served by another process and answered through its control socket. */
  readonly via: 'socket' | 'local';
  status(): Promise<RctStatus>;
  seal(): Promise<string>;
  changes(since: string, until?: string): Promise<Range[]>;
  drop(id: string): Promise<void>;
  close(): Promise<void>;
}

/**
 * Reach the tracker of `diskPath`: through the control socket when a process serves the disk, else by
 * locking the disk (DiskLock: exclusive when `mutate`, to seal or drop; shared to query) and opening it
 * read-only here (the disk is never written; seal/drop update the tracking files).
 * A VHDX whose log a crashed writer left dirty (no server answers, the lock is free) is first replayed
 * (replayVhdxLog: read-write open + close under the exclusive lock; the DataWriteGuid is kept), so the
 * tracker's crash recovery answers (a superset) instead of VhdxDirtyLogError.
 * Throws TrackingNotEnabledError, InUseError ("in use by PID …": locked by a process without a control
 * socket).
 */
export async function openRctHandle(diskPath: string, opts: { mutate?: boolean } = {}): Promise<RctHandle> {
  const remote = await controlClient(diskPath);
  if (remote) {
    return {
      via: 'socket',
      status: () => remote.status(),
      seal: () => remote.seal(),
      changes: (s, u) => remote.changes(s, u),
      drop: (id) => remote.drop(id),
      close: async () => remote.close(),
    };
  }
  if (!(await isTrackingEnabled(diskPath))) throw new TrackingNotEnabledError(diskPath);
  let lock = await DiskLock.acquire(diskPath, { exclusive: !!opts.mutate, holder: 'tidemark rct' });
  let dev;
  try {
    dev = await openDisk(diskPath, { readOnly: true });
  } catch (err) {
    await lock.release();
    if (!(err instanceof TidemarkError && err.code === 'E_VHDX_DIRTY_LOG')) throw err;
    // A writer crashed (no control socket answered, and we got the lock): replay its log under the
    // exclusive lock (InUseError if a writer took the disk meanwhile). Replay keeps the DataWriteGuid,
    // so the tracker's crash rules accept the disk and answer with a superset.
    await replayVhdxLog(diskPath);
    lock = await DiskLock.acquire(diskPath, { exclusive: !!opts.mutate, holder: 'tidemark rct' });
    try {
      dev = await openDisk(diskPath, { readOnly: true });
    } catch (err2) {
      await lock.release();
      throw err2;
    }
  }
  try {
    const t = await ChangeTracker.open(diskPath, dev, 'meta');
    return {
      via: 'local',
      status: async () => t.status(),
      seal: () => t.seal(),
      changes: async (s, u) => t.changes(s, u),
      drop: (id) => t.drop(id),
      close: async () => {
        try {
          await dev.close();
        } finally {
          await lock.release();
        }
      },
    };
  } catch (err) {
    await dev.close().catch(() => undefined);
    await lock.release();
    throw err;
  }
}
