import { DiskLock } from '../blockdev/DiskLock.js';
import { openDisk } from '../disk/openDisk.js';
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
  const lock = await DiskLock.acquire(diskPath, { exclusive: !!opts.mutate, holder: 'tidemark rct' });
  let dev;
  try {
    dev = await openDisk(diskPath, { readOnly: true });
  } catch (err) {
    await lock.release();
    throw err;
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
