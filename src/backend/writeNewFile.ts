import { mkdir, open as fsOpen, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';

/**
 * Create `path` exclusively for writing (flag 'wx', mode 0644), creating missing parent directories.
 * Fails with EEXIST if `path` exists. `open` is for tests that inject faults.
 */
export async function openNewFile(path: string, open: typeof fsOpen = fsOpen): Promise<FileHandle> {
  try {
    return await open(path, 'wx', 0o644);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    await mkdir(dirname(path), { recursive: true });
    return open(path, 'wx', 0o644);
  }
}

/**
 * Create `path` exclusively (see openNewFile) and write all of `data`, fsyncing it when `sync`. Fails
 * with EEXIST if `path` exists and with an EIO error on a write that makes no progress. Errors are the
 * raw fs errors: callers map them. `open` is for tests that inject faults.
 */
export async function writeNewFile(path: string, data: Uint8Array, opts: { sync: boolean; open?: typeof fsOpen }): Promise<void> {
  const fh = await openNewFile(path, opts.open);
  try {
    let off = 0;
    while (off < data.length) {
      const { bytesWritten } = await fh.write(data, off, data.length - off, off);
      if (bytesWritten <= 0) throw Object.assign(new Error('short write'), { code: 'EIO' });
      off += bytesWritten;
    }
    if (opts.sync) await fh.sync();
  } finally {
    await fh.close();
  }
}
