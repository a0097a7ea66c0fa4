import { open, rename } from 'node:fs/promises';
import { dirname } from 'node:path';
import { fsyncDir } from './fsyncDir.js';

export interface AtomicWriteOptions {
  /**
   * Temporary name to write first; must be in the same directory as `path` (same filesystem, so the
   * rename is atomic). Default `<path>.tmp`.
   */
  tmpPath?: string;
}

/**
 * Replace the small file `path` atomically and durably: write the temporary file (mode 0644, truncating
 * any leftover), fsync it, rename it over `path`, fsync the directory. After a crash the file is either
 * the old or the new content, never a mix. Not for concurrent writers of one path: callers serialise
 * (a fixed temporary name is shared), e.g. under a lock or by single-flight persisting.
 */
export async function atomicWriteFile(path: string, data: string | Uint8Array, opts: AtomicWriteOptions = {}): Promise<void> {
  const tmp = opts.tmpPath ?? `${path}.tmp`;
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
