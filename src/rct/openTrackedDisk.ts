import { stat } from 'node:fs/promises';
import type { BlockDevice } from '../blockdev/BlockDevice.js';
import { openDisk, type OpenDiskOptions } from '../disk/openDisk.js';
import { mrtPathOf, rctPathOf, type TrackerOptions } from './ChangeTracker.js';
import { fileFingerprint } from './fileFingerprint.js';
import { openTracked } from './trackingLayer.js';

/** True when change tracking is enabled for the disk (either tracking file exists). */
export async function isTrackingEnabled(diskPath: string): Promise<boolean> {
  for (const p of [rctPathOf(diskPath), mrtPathOf(diskPath)]) {
    if (await stat(p).then(() => true, () => false)) return true;
  }
  return false;
}

/**
 * Open a disk for use anywhere in Tidemark. Every writer opens disks through this, so once tracking is
 * enabled every write is tracked: a writable open of a disk with `<disk>.rct` (or `<disk>.mrt`) returns
 * a TrackedDevice (use `isTracked`). Read-only opens are returned untracked (reads change nothing).
 * The caller holds the disk lock.
 */
export async function openTrackedDisk(diskPath: string, opts: OpenDiskOptions & TrackerOptions = {}): Promise<BlockDevice> {
  const tracked = !opts.readOnly && (await isTrackingEnabled(diskPath));
  // Before opening: a writable open may touch the file's timestamps (see TrackerOptions).
  const fingerprintBeforeOpen = tracked ? await fileFingerprint(diskPath) : null;
  const dev = await openDisk(diskPath, { ...opts, untracked: true }); // tracked below when enabled
  if (!tracked) return dev;
  try {
    return await openTracked(dev, diskPath, { ...opts, fingerprintBeforeOpen });
  } catch (err) {
    await dev.close().catch(() => undefined);
    throw err;
  }
}
