import { stat } from 'node:fs/promises';
import { CorruptError } from '../errors.js';
import { mrtPathOf, readRct, type RctStatus } from './ChangeTracker.js';
import { autoRegionSize } from './constants.js';
import { formatRctId } from './RctId.js';

/**
 * The tracking state recorded on disk for `diskPath`, without opening the disk (no identity check:
 * use an open tracker's `status()` for that). Never throws for missing or corrupt files: `problem`
 * says what is wrong.
 */
export async function trackingStatus(diskPath: string): Promise<RctStatus & { problem?: string }> {
  let file;
  try {
    file = await readRct(diskPath);
  } catch (err) {
    if (err instanceof CorruptError) return { enabled: true, diskPath, problem: err.message };
    throw err;
  }
  if (!file) {
    const mrt = await stat(mrtPathOf(diskPath)).then(() => true, () => false);
    return mrt ? { enabled: true, diskPath, problem: `${diskPath}.rct is missing: tracking restarts at the next open` } : { enabled: false, diskPath };
  }
  return {
    enabled: true,
    diskPath,
    blockSize: file.blockSize,
    regionSize: file.regionSize || autoRegionSize(file.diskSize),
    diskSize: file.diskSize,
    generation: file.generation,
    liveIds: file.ids.map((x) => ({ id: formatRctId({ tracker: file.tracker, gen: x.gen, nonce: x.nonce }), generation: x.gen, createdAt: new Date(x.createdAt).toISOString() })),
    lastCloseClean: file.clean,
    invalidation: file.invalidation ? { ...file.invalidation, at: new Date(file.invalidation.at).toISOString() } : null,
  };
}
