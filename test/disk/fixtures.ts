import { open } from 'node:fs/promises';

/** A deterministic, non-trivial byte pattern (differs per offset and seed; no long zero runs). */
export function pattern(length: number, seed: number): Buffer {
  const b = Buffer.allocUnsafe(length);
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < length; i += 4) {
    x ^= x << 13; x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5; x >>>= 0;
    if (i + 4 <= length) b.writeUInt32LE((x | 0x01010101) >>> 0, i);
    else for (let j = i; j < length; j++) b[j] = (x >>> ((j - i) * 8)) | 1;
  }
  return b;
}

/** Create a sparse raw file of `size` bytes with `pieces` of pattern data written at the given offsets. */
export async function makeRaw(path: string, size: number, pieces: Array<[offset: number, length: number]>): Promise<void> {
  const fh = await open(path, 'wx');
  try {
    await fh.truncate(size);
    let seed = 1;
    for (const [off, len] of pieces) {
      const data = pattern(len, seed++);
      await fh.write(data, 0, len, off);
    }
    await fh.sync();
  } finally {
    await fh.close();
  }
}
