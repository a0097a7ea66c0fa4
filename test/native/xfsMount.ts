/**
 * Test helper (no tests here): a fresh XFS filesystem (reflink on) on a loop-mounted 320 MiB sparse
 * image in a temp dir. Needs root, mkfs.xfs and permission to mount; otherwise says why not.
 * Synchronous so a test file can decide at load time which tests to register.
 */
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { hasTool, run } from '../helpers/tools.js';

export interface XfsMount {
  mnt: string;
  /** Unmount and remove the image (close files on it first). */
  unmount(): void;
}

export function mountXfs(): XfsMount | { why: string } {
  if (process.getuid?.() !== 0) return { why: 'needs root to mount a loop device' };
  const tool = ['mkfs.xfs', 'mount', 'umount', 'truncate'].find((name) => !hasTool(name));
  if (tool) return { why: `missing ${tool}` };
  const dir = mkdtempSync(join(tmpdir(), 'tidemark-xfs-'));
  const mnt = join(dir, 'mnt');
  const img = join(dir, 'xfs.img');
  mkdirSync(mnt);
  run('truncate', ['-s', '320M', img]);
  run('mkfs.xfs', ['-q', '-m', 'reflink=1', img]);
  const mounted = run('mount', ['-o', 'loop', img, mnt], { allowFail: true });
  if (mounted.status !== 0) {
    rmSync(dir, { recursive: true, force: true });
    return { why: `mount -o loop not permitted here: ${mounted.stderr.trim()}` };
  }
  return {
    mnt,
    unmount() {
      run('umount', [mnt]);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Skip `t` with the reason outside CI; under CI=true a missing XFS mount is a failure. */
export function xfsSkipReason(why: string): string {
  if (process.env.CI === 'true') throw new Error(`XFS tests cannot run in CI: ${why}`);
  return why;
}
