import { open } from 'node:fs/promises';
import { seekData, seekHole } from '../../native/native.js';
import type { CloneResult, SnapshotProvider } from './SnapshotProvider.js';
import { stageFile } from './stageFile.js';

const CHUNK = 4 * 1024 * 1024;
/** Zero runs of this size (aligned) inside data are left as holes in the copy. */
const SPARSE = 64 * 1024;

/** The data runs of an open file: SEEK_DATA/SEEK_HOLE, or one run when the filesystem or addon cannot tell. */
async function dataRuns(fd: number, size: number): Promise<Array<[number, number]>> {
  const runs: Array<[number, number]> = [];
  try {
    let pos = 0;
    while (pos < size) {
      const d = await seekData(fd, pos);
      if (d < 0 || d >= size) break;
      const h = Math.min(await seekHole(fd, d), size);
      runs.push([d, h]);
      pos = h;
    }
    return runs;
  } catch {
    return size > 0 ? [[0, size]] : [];
  }
}

/**
 * `copy`: a streaming, sparse-aware copy that works on every filesystem. Only the source's data runs are
 * read (SEEK_DATA/SEEK_HOLE), in 4 MiB chunks through one buffer (memory stays flat whatever the size);
 * aligned 64 KiB runs of zeros are not written, so holes stay holes. The destination has the source's length.
 */
export class CopyProvider implements SnapshotProvider {
  readonly name = 'copy' as const;

  async clone(src: string, dst: string, onProgress?: (done: number, total: number) => void): Promise<CloneResult> {
    const from = await open(src, 'r');
    try {
      const size = (await from.stat()).size;
      const runs = await dataRuns(from.fd, size);
      const total = runs.reduce((a, [s, e]) => a + (e - s), 0);
      const buf = Buffer.allocUnsafe(CHUNK);
      let done = 0;
      let written = 0;
      await stageFile(dst, async (to) => {
        await to.truncate(size);
        for (const [start, end] of runs) {
          for (let off = start; off < end; off += CHUNK) {
            const n = Math.min(CHUNK, end - off);
            let got = 0;
            while (got < n) {
              const { bytesRead } = await from.read(buf, got, n - got, off + got);
              if (bytesRead === 0) break;
              got += bytesRead;
            }
            buf.fill(0, got, n); // a source that shrank under us would be a caller bug; never write stale bytes
            for (let k = 0; k < n; k += SPARSE) {
              const m = Math.min(SPARSE, n - k);
              const piece = buf.subarray(k, k + m);
              if (m === SPARSE && isZero(piece)) continue;
              await to.write(piece, 0, m, off + k);
              written += m;
            }
            done += n;
            onProgress?.(done, total);
          }
        }
      });
      return { bytesCopied: written, shared: false };
    } finally {
      await from.close();
    }
  }
}

function isZero(b: Buffer): boolean {
  for (let i = 0; i < b.length; i += 8) if (b.readBigUInt64LE(i) !== 0n) return false;
  return true;
}
