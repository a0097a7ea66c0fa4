import { createHash } from 'node:crypto';
import type { BlockDevice } from '../blockdev/BlockDevice.js';

const CHUNK = 4 * 1024 * 1024;
const ZEROS = Buffer.alloc(CHUNK);

/** SHA-256 (hex) of a device's whole virtual content; holes and zero extents are hashed without reading. */
export async function hashDevice(dev: BlockDevice): Promise<string> {
  const h = createHash('sha256');
  for (let off = 0; off < dev.size; off += CHUNK) {
    const len = Math.min(CHUNK, dev.size - off);
    const ext = dev.capabilities.extents ? await dev.extents(off, len) : [{ offset: off, length: len, type: 'data' as const }];
    for (const e of ext) {
      if (e.type === 'data') h.update(await dev.read(e.offset, e.length));
      else h.update(ZEROS.subarray(0, e.length));
    }
  }
  return h.digest('hex');
}
