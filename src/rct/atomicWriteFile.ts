import { open, rename } from 'node:fs/promises';
import { dirname } from 'node:path';

/**
 * Replace `path` atomically and durably: write `<path>.tmp`, fsync it, rename over `path`, fsync the
 * directory. After a crash the file is either the old or the new content, never a mix. Callers
 * serialise writes to one path (the tracker persists single-flight, the disk lock excludes others).
 */
export async function atomicWriteFile(path: string, data: Uint8Array): Promise<void> {
  const tmp = `${path}.tmp`;
  const fh = await open(tmp, 'w', 0o644);
  try {
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, path);
  await fsyncDir(dirname(path));
}

export async function fsyncDir(dir: string): Promise<void> {
  const d = await open(dir, 'r');
  try {
    await d.sync();
  } finally {
    await d.close();
  }
}
