import { crc32c } from '@node-rs/crc32';

/** CRC-32C of `buf` with the 4-byte checksum field at `at` taken as zero (VHDX header/region/log rule). */
export function vhdxChecksum(buf: Buffer, at: number): number {
  const saved = buf.readUInt32LE(at);
  buf.writeUInt32LE(0, at);
  const crc = crc32c(buf) >>> 0;
  buf.writeUInt32LE(saved, at);
  return crc;
}

/** Compute and store the checksum at `at`. */
export function sealChecksum(buf: Buffer, at: number): void {
  buf.writeUInt32LE(0, at);
  buf.writeUInt32LE(crc32c(buf) >>> 0, at);
}
