import { stat } from 'node:fs/promises';

/** A raw disk file's stat fingerprint: device, inode, size, mtime and ctime in nanoseconds. */
export interface Fingerprint {
  dev: bigint;
  ino: bigint;
  size: bigint;
  mtimeNs: bigint;
  ctimeNs: bigint;
}

/** `dev:ino:size:mtimeNs:ctimeNs`, or null when `path` is not a regular file. */
export async function fileFingerprint(path: string): Promise<string | null> {
  try {
    const s = await stat(path, { bigint: true });
    if (!s.isFile()) return null;
    return `${s.dev}:${s.ino}:${s.size}:${s.mtimeNs}:${s.ctimeNs}`;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
}

export function parseFingerprint(text: string): Fingerprint | null {
  const m = /^(\d+):(\d+):(\d+):(\d+):(\d+)$/.exec(text);
  if (!m) return null;
  return { dev: BigInt(m[1]!), ino: BigInt(m[2]!), size: BigInt(m[3]!), mtimeNs: BigInt(m[4]!), ctimeNs: BigInt(m[5]!) };
}
