import { link, open, rm, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { UsageError } from '../../errors.js';
import { fsyncDir } from '../../util/fsyncDir.js';

/**
 * Write a new file `dst` through `fill` under a hidden temporary name beside it, then fsync, link it into
 * place (link + unlink: an existing `dst` is never replaced) and fsync the folder: `dst` is complete or
 * absent. Refuses an existing `dst` (UsageError). On failure the temporary file is removed, error rethrown.
 */
export async function stageFile<T>(dst: string, fill: (fh: FileHandle) => Promise<T>): Promise<T> {
  if (await open(dst, 'r').then(async (h) => (await h.close(), true), () => false)) throw new UsageError(`${dst} already exists`);
  const tmp = join(dirname(dst), `.${basename(dst)}.${randomBytes(6).toString('hex')}.tmp`);
  const fh = await open(tmp, 'wx');
  try {
    const out = await fill(fh);
    await fh.sync();
    await fh.close();
    // link, not rename: never replaces a `dst` that appeared meanwhile.
    await link(tmp, dst).catch((e: NodeJS.ErrnoException) => {
      throw e.code === 'EEXIST' ? new UsageError(`${dst} already exists`) : e;
    });
    await rm(tmp);
    await fsyncDir(dirname(dst));
    return out;
  } catch (err) {
    await fh.close().catch(() => undefined);
    await rm(tmp, { force: true });
    throw err;
  }
}
