/**
 * alignedSharedBuffer: a Buffer over a SharedArrayBuffer whose first byte sits at an address that is a
 * multiple of `align` (default 4096), so whole-chunk pieces of it can be written with O_DIRECT
 * (RawFileDevice `directWrites`). Workers can write into it in place (shared memory).
 *
 * The backing memory is `size + align` bytes; the view starts at the first aligned address (found with
 * the native addon: JavaScript cannot see addresses). Without the addon the view starts at offset 0
 * and may not be aligned — direct writes then fall back to the normal path (they are only a speed-up).
 */
import { alignGap, nativeAvailable } from '../native/native.js';

export function alignedSharedBuffer(size: number, align = 4096): Buffer {
  const whole = Buffer.from(new SharedArrayBuffer(size + align));
  const gap = nativeAvailable() ? alignGap(whole, align) : 0;
  return whole.subarray(gap, gap + size);
}
