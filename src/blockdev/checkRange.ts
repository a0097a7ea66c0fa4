import { OutOfRangeError } from '../errors.js';

/** Validate a request against a device size; throws OutOfRangeError. */
export function checkRange(offset: number, length: number, size: number): void {
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > size) {
    throw new OutOfRangeError(offset, length, size);
  }
}
