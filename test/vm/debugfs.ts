import { spawnSync } from 'node:child_process';

/**
 * Read one file out of an ext2/3/4 image on the host with e2fsprogs' `debugfs` (read-only, the image
 * is not modified). Throws when debugfs fails or the file does not exist.
 */
export function debugfsCat(image: string, path: string): Buffer {
  const r = spawnSync('debugfs', ['-R', `cat ${path}`, image], { maxBuffer: 256 * 1024 * 1024 });
  if (r.error) throw r.error;
  const stderr = r.stderr.toString();
  // debugfs exits 0 even when the file is missing; it says so on stderr.
  if (r.status !== 0 || /File not found|Bad magic|Couldn't find valid filesystem/i.test(stderr)) {
    throw new Error(`debugfs cat ${path} in ${image} failed (exit ${r.status}): ${stderr.trim()}`);
  }
  return r.stdout;
}

/** Names in a directory of an ext2/3/4 image (debugfs `ls -l` parsed loosely; `.`/`..` left out). */
export function debugfsList(image: string, dir: string): string[] {
  const r = spawnSync('debugfs', ['-R', `ls -p ${dir}`, image], { encoding: 'utf8' });
  if (r.error) throw r.error;
  if (r.status !== 0 || /File not found|Bad magic/i.test(r.stderr)) throw new Error(`debugfs ls ${dir} in ${image} failed: ${r.stderr.trim()}`);
  // `ls -p` prints /inode/mode/uid/gid/name/size/ per entry.
  return r.stdout
    .split('\n')
    .map((l) => l.split('/'))
    .filter((f) => f.length >= 7)
    .map((f) => f[5]!)
    .filter((n) => n !== '.' && n !== '..' && n !== '');
}
