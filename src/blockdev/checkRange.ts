import { OutOfRangeError, UsageError } from '../errors.js';

/** Validate a request against a device size; throws OutOfRangeError. */
export function checkRange(offset: number, length: number, size: number): void {
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > size) {
    throw new OutOfRangeError(offset, length, size);
  }
}

/** Validate a `readInto` target window [targetOffset, targetOffset+length) against `target`; throws UsageError. */
export function checkTarget(target: Uint8Array, targetOffset: number, length: number): void {
  if (!Number.isSafeInteger(targetOffset) || targetOffset < 0 || targetOffset + length > target.length) {
    throw new UsageError(`readInto target window [${targetOffset}, +${length}) does not fit in a buffer of ${target.length} bytes`);
  }
}
