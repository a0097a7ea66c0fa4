import { open, statfs } from 'node:fs/promises';
import { dirname } from 'node:path';
import { ficlone, type NativeErrnoError } from '../../native/native.js';
import { ProviderNotSupportedError } from '../errors.js';
import type { CloneResult, SnapshotProvider } from './SnapshotProvider.js';
import { stageFile } from './stageFile.js';

/** statfs f_type magic numbers of filesystems users meet (for messages only). */
const FS_NAMES: Record<number, string> = {
  0xef53: 'ext2/3/4', 0x01021994: 'tmpfs', 0x58465342: 'XFS', 0x9123683e: 'btrfs', 0x794c7630: 'overlayfs', 0x6969: 'NFS', 0xcafe4a11: 'bcachefs',
};

/** errno codes by which FICLONE says "not here" (not a bug of ours): no reflink, other filesystem, unsuitable file. */
const NOT_HERE = new Set(['ENOTSUP', 'EOPNOTSUPP', 'EXDEV', 'EINVAL', 'ENOTTY', 'ENOSYS']);

async function fsName(path: string): Promise<string> {
  try {
    const t = (await statfs(path)).type;
    return FS_NAMES[t] ?? `filesystem type 0x${t.toString(16)}`;
  } catch {
    return 'an unknown filesystem';
  }
}

/**
 * `reflink`: the destination shares every extent of the source (ioctl FICLONE). Instant and using no data
 * space on XFS (reflink=1) and btrfs; the source and the clone diverge by copy on write. Source and
 * destination must be on the same reflink-capable filesystem: otherwise ProviderNotSupportedError (ext4
 * and tmpfs say EOPNOTSUPP, two filesystems EXDEV).
 */
export class ReflinkProvider implements SnapshotProvider {
  readonly name = 'reflink' as const;

  async clone(src: string, dst: string, onProgress?: (done: number, total: number) => void): Promise<CloneResult> {
    const from = await open(src, 'r');
    try {
      const size = (await from.stat()).size;
      await stageFile(dst, async (to) => {
        try {
          await ficlone(to.fd, from.fd);
        } catch (err) {
          const code = (err as NativeErrnoError).code;
          if (!NOT_HERE.has(code)) throw err;
          const [a, b] = [await fsName(src), await fsName(dirname(dst))];
          throw new ProviderNotSupportedError('reflink', src, dst,
            code === 'EXDEV' ? `they are on different filesystems (${a}, ${b}; ioctl FICLONE: EXDEV)` : `${a === b ? a : `${a} / ${b}`} cannot share extents (ioctl FICLONE: ${code})`,
            'reflink needs the export directory on the same XFS (reflink=1) or btrfs filesystem as the disks; use --provider copy otherwise');
        }
      });
      onProgress?.(size, size);
      return { bytesCopied: 0, shared: true };
    } finally {
      await from.close();
    }
  }
}
