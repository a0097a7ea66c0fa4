/**
 * Replay the log a crashed writer left in a VHDX, so read-only opens work again.
 *
 * How this works: with the DiskLock held exclusively (no server or writer has the disk; InUseError
 * "in use by PID … (tidemark serve)" otherwise), the disk is opened read-write and closed without
 * writing. The read-write open applies the log's complete entries and marks the log empty
 * (docs/design.md (vhdx section) "Replay"): the FileWriteGuid changes, the DataWriteGuid does not — the replay
 * completes metadata updates the crashed session already announced — so change tracking recorded
 * against the crashed session's identity stays valid (its crash rules then report a superset).
 */
import { DiskLock } from '../blockdev/DiskLock.js';
import { TidemarkError } from '../errors.js';
import { VhdxDevice } from '../vhdx/VhdxDevice.js';

/**
 * Replay `path`'s VHDX log if it is dirty. Resolves true when a replay happened, false when the log
 * was already clean (nothing is written then). Takes the DiskLock exclusively for the duration:
 * rejects with InUseError when another process holds it. Throws as VhdxDevice.open otherwise.
 */
export async function replayVhdxLog(path: string): Promise<boolean> {
  const lock = await DiskLock.acquire(path, { exclusive: true, holder: 'tidemark log replay' });
  try {
    try {
      await (await VhdxDevice.open(path, { readOnly: true })).close();
      return false;
    } catch (err) {
      if (!(err instanceof TidemarkError && err.code === 'E_VHDX_DIRTY_LOG')) throw err;
    }
    await (await VhdxDevice.open(path)).close();
    return true;
  } finally {
    await lock.release();
  }
}
