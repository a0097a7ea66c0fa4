/**
 * The `into` half of Backend.getRange for backends (and callers) that hold the bytes already: `data`
 * itself as a Buffer without `into`, else `data` copied to the start of `into` and a view of that
 * (RangeError when `into` is too small).
 */
export function copyInto(data: Uint8Array, into?: Uint8Array): Buffer {
  if (!into) return Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  if (into.length < data.length) throw new RangeError(`getRange: target of ${into.length} bytes cannot hold ${data.length}`);
  into.set(data);
  return Buffer.from(into.buffer, into.byteOffset, data.length);
}
