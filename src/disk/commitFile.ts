import { randomBytes } from 'node:crypto';
import { link, open, rename, rm, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { fsyncDir } from '../util/fsyncDir.js';
import { DiskExistsError } from './errors.js';

/**
 * Atomic output of whole files: build the file under a temporary sibling name, then `commitFile`.
 * A reader of `path` sees either the old file (or nothing) or the complete new one, never a partial
 * file, also across a crash: the data is fsynced before the rename and the directory after it.
 */

/** A fresh temporary name in the same directory as `path` (same filesystem, so rename is atomic). */
export function tempSibling(path: string): string {
  return join(dirname(path), `.${basename(path)}.tidemark-${process.pid}-${randomBytes(4).toString('hex')}.tmp`);
}

/**
 * fsync `temp`, move it to `path`, fsync the directory. With `overwrite: false` an existing `path` is
 * left alone and DiskExistsError thrown (temp is removed); with `overwrite: true` it is replaced atomically.
 */
export async function commitFile(temp: string, path: string, opts: { overwrite: boolean }): Promise<void> {
  const fh = await open(temp, 'r+');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
  if (opts.overwrite) {
    await rename(temp, path);
  } else {
    try {
      // link() fails with EEXIST instead of replacing: the no-clobber rename.
      await link(temp, path);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'EEXIST') {
        await rm(temp, { force: true });
        throw new DiskExistsError(path);
      }
      throw err;
    }
    await unlink(temp);
  }
  // Some filesystems cannot fsync a directory; the rename itself already happened.
  await fsyncDir(dirname(path), { tolerateUnsupported: true });
}

/** Remove a temporary file after a failure; never throws (the original error matters more). */
export async function discardTemp(temp: string): Promise<void> {
  await rm(temp, { force: true }).catch(() => undefined);
}
