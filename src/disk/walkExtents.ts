import type { BlockDevice, Extent } from '../blockdev/BlockDevice.js';

/** Extents are asked for in windows of this many bytes, so a fragmented disk never builds a huge list. */
export const EXTENT_WINDOW = 1024 ** 3;

/**
 * The extents of [start, end) of `dev` (whole device by default), in order, asked for one window at a
 * time. Extents are clipped to window boundaries (a long hole may come as several pieces).
 */
export async function* walkExtents(dev: BlockDevice, start = 0, end = dev.size, window = EXTENT_WINDOW): AsyncGenerator<Extent> {
  for (let pos = start; pos < end; ) {
    const len = Math.min(window, end - pos);
    const list = await dev.extents(pos, len);
    let covered = pos;
    for (const e of list) {
      if (e.offset !== covered || e.length <= 0) throw new Error(`extents of [${pos}, +${len}) are not contiguous at ${covered}`);
      covered += e.length;
      yield e;
    }
    if (covered !== pos + len) throw new Error(`extents of [${pos}, +${len}) end at ${covered}`);
    pos += len;
  }
}
