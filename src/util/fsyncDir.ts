import { open } from 'node:fs/promises';

/** Error codes of filesystems that cannot fsync a directory (the rename before it already happened). */
const DIR_SYNC_UNSUPPORTED = ['EINVAL', 'ENOTSUP', 'EISDIR', 'EBADF'];

/**
 * fsync the directory `dir`, making the names created, renamed or removed in it durable.
 * Errors propagate, except that with `tolerateUnsupported` an fsync the filesystem does not support
 * (EINVAL, ENOTSUP, EISDIR, EBADF) is ignored. The directory must exist.
 */
export async function fsyncDir(dir: string, opts: { tolerateUnsupported?: boolean } = {}): Promise<void> {
  const d = await open(dir, 'r');
  try {
    await d.sync();
  } catch (err) {
    if (!opts.tolerateUnsupported || !DIR_SYNC_UNSUPPORTED.includes((err as NodeJS.ErrnoException).code ?? '')) throw err;
  } finally {
    await d.close();
  }
}
