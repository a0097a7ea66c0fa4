/**
 * Merge a checkpoint's differencing disk back into its parent *through change tracking*.
 *
 * Why not mergeVhdx: mergeVhdx writes the parent with a plain VhdxDevice, so the parent's RCT sees an
 * outside writer (DataWriteGuid changed) and restarts, invalidating every reference point. Here the
 * parent is opened with openTrackedDisk, so every merged sector is recorded as a change after the
 * newest sealed RCT ID — exactly what the next differential export must read.
 *
 * Crash safety: the child never changes and the copy rewrites the same bytes, so re-running after a
 * crash resumes (idempotent). The child is deleted last; a missing child means the merge completed.
 */
import { rm, stat, unlink } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { BlockDevice } from '../blockdev/BlockDevice.js';
import { TidemarkError } from '../errors.js';
import { DiskLock } from '../blockdev/DiskLock.js';
import { openTrackedDisk } from '../rct/openTrackedDisk.js';
import { fsyncDir } from '../util/fsyncDir.js';
import { VhdxDevice } from '../vhdx/VhdxDevice.js';
import { PAYLOAD_FULLY_PRESENT, PAYLOAD_PARTIALLY_PRESENT, PAYLOAD_UNMAPPED, PAYLOAD_ZERO } from '../vhdx/format/constants.js';

const CHUNK = 4 * 1024 * 1024;

export const exists = (p: string) => stat(p).then(() => true, () => false);

/** Copy every sector `child` holds into `parent` (tracked) and delete `child`. No-op when `child` is gone. */
export async function mergeChild(child: string, parent: string): Promise<void> {
  if (!(await exists(child))) return;
  const plock = await DiskLock.acquire(parent, { exclusive: true, holder: 'tidemark checkpoint merge' });
  try {
    const p = await openTrackedDisk(parent);
    try {
      await copyChildInto(child, p);
    } finally {
      await p.close();
    }
    await deleteChild(child);
  } finally {
    await plock.release();
  }
}

/**
 * The merge's copy alone: every sector the differencing disk `child` holds itself (its own BAT, the
 * parent chain skipped) written into `parent` — an open device, normally the parent opened through
 * tracking, which the caller locked — then flushed. `child` is not modified (except that a log a
 * crashed writer left dirty is replayed first; nobody may have it open), so this is idempotent.
 * Returns the bytes written or zeroed. The caller deletes the child afterwards (`deleteChild`).
 */
export async function copyChildInto(child: string, p: BlockDevice): Promise<number> {
  let done = 0;
  let c: VhdxDevice;
  try {
    c = await VhdxDevice.openInternal(child, { readOnly: true, skipParent: true });
  } catch (err) {
    if (!(err instanceof TidemarkError && err.code === 'E_VHDX_DIRTY_LOG')) throw err;
    // The child's writer (a runner) died with it open: replay its log (a read-write open without
    // writes; the caller holds the child unlocked-by-anyone-else), then read it.
    await (await VhdxDevice.openInternal(child, { skipParent: true })).close();
    c = await VhdxDevice.openInternal(child, { readOnly: true, skipParent: true });
  }
  try {
    const bs = c.info().blockSize;
    const size = c.size;
    for (let b = 0; b * bs < size; b++) {
      const e = c.blockEntry(b);
      const start = b * bs;
      const len = Math.min(bs, size - start);
      if (e.state === PAYLOAD_FULLY_PRESENT) {
        for (let o = 0; o < len; o += CHUNK) {
          const n = Math.min(CHUNK, len - o);
          await p.write(start + o, await c.read(start + o, n));
          done += n;
        }
      } else if (e.state === PAYLOAD_PARTIALLY_PRESENT) {
        for (const [pos, n, present] of await c.presentRuns(b, start, len)) {
          if (!present) continue;
          await p.write(pos, await c.read(pos, n));
          done += n;
        }
      } else if (e.state === PAYLOAD_ZERO || e.state === PAYLOAD_UNMAPPED) {
        await p.zero(start, len);
        done += len;
      }
    }
    await p.flush();
  } finally {
    await c.close();
  }
  return done;
}

/** Delete a merged child and its lock file, durably (fsync of the folder). No-op when already gone. */
export async function deleteChild(child: string): Promise<void> {
  await unlink(child).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== 'ENOENT') throw err;
  });
  await rm(`${child}.lock`, { force: true });
  await fsyncDir(dirname(child));
}
