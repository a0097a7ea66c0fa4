import { openRctHandle } from '../rct/openRctHandle.js';
import { enableTracking } from '../rct/enableTracking.js';
import { TrackingNotEnabledError } from '../rct/errors.js';

/** Seal the disk's RCT; a disk whose tracking is gone gets tracking re-enabled (and a warning). */
export async function sealDisk(path: string, warnings: string[]): Promise<string> {
  for (let attempt = 0; ; attempt++) {
    try {
      const h = await openRctHandle(path, { mutate: true });
      try {
        return await h.seal();
      } finally {
        await h.close();
      }
    } catch (err) {
      if (attempt === 0 && err instanceof TrackingNotEnabledError) {
        warnings.push(`${path}: change tracking was not enabled (tracking file deleted?); enabled it now — the next differential of this disk starts from this export`);
        await enableTracking(path);
        continue;
      }
      throw err;
    }
  }
}

