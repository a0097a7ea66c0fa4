import type { BlockDevice } from '../blockdev/BlockDevice.js';
import { nonZeroRuns, ZERO_GRANULE } from './nonZeroRuns.js';
import { walkExtents } from './walkExtents.js';
import { OperationAbortedError } from './errors.js';

export interface CopyOptions {
  /** Bytes per read; chunks are aligned to multiples of this in the device's address space. Default 8 MiB. */
  chunkSize?: number;
  /** Chunks in flight at once (each read then written). Memory use is at most chunkSize × concurrency. Default 4. */
  concurrency?: number;
  /** Called with bytes done (copied or skipped) and the total, monotonically. */
  onProgress?: (done: number, total: number) => void;
  /** Stop early: no new chunk starts once aborted; the copy rejects with OperationAbortedError. */
  signal?: AbortSignal;
}

export interface CopyStats {
  /** Bytes of the virtual disk. */
  size: number;
  /** Bytes written to the destination (non-zero data). */
  written: number;
  /** Bytes of data extents read from the source. */
  read: number;
}

/**
 * Copy `src` into `dst`, which must be at least as large and must read as zeros everywhere (a freshly
 * created disk): holes and zero extents of the source are skipped without reading, and zero granules
 * (4 KiB) inside data are not written, so the destination stays sparse.
 *
 * Streaming with bounded memory: up to `concurrency` chunks of `chunkSize` are read and written at
 * once. On failure, waits for the chunks in flight, then rethrows the first error. Does not flush `dst`.
 */
export async function copyDevice(src: BlockDevice, dst: BlockDevice, opts: CopyOptions = {}): Promise<CopyStats> {
  const chunkSize = opts.chunkSize ?? 8 * 1024 * 1024;
  const concurrency = Math.max(1, opts.concurrency ?? 4);
  if (dst.size < src.size) throw new RangeError(`copy: destination (${dst.size} bytes) is smaller than the source (${src.size} bytes)`);
  const stats: CopyStats = { size: src.size, written: 0, read: 0 };
  const inFlight = new Set<Promise<void>>();
  let failure: { err: unknown } | undefined;
  let skipped = 0;
  let finished = 0;
  const report = () => opts.onProgress?.(skipped + finished, src.size);

  const copyChunk = async (offset: number, length: number): Promise<void> => {
    const buf = await src.read(offset, length);
    stats.read += length;
    for (const [s, e] of nonZeroRuns(buf, ZERO_GRANULE, offset)) {
      await dst.write(offset + s, buf.subarray(s, e));
      stats.written += e - s;
    }
  };

  const launch = (offset: number, length: number) => {
    const p: Promise<void> = copyChunk(offset, length).then(
      () => {
        finished += length;
        inFlight.delete(p);
        report();
      },
      (err: unknown) => {
        failure ??= { err };
        inFlight.delete(p);
      },
    );
    inFlight.add(p);
  };

  outer: for await (const ext of walkExtents(src)) {
    if (opts.signal?.aborted) {
      failure ??= { err: new OperationAbortedError('copy') };
      break;
    }
    if (ext.type !== 'data') {
      skipped += ext.length;
      report();
      continue;
    }
    for (let pos = ext.offset; pos < ext.offset + ext.length; ) {
      const next = Math.min(ext.offset + ext.length, (Math.floor(pos / chunkSize) + 1) * chunkSize);
      while (inFlight.size >= concurrency) await Promise.race(inFlight);
      if (opts.signal?.aborted) failure ??= { err: new OperationAbortedError('copy') };
      if (failure) break outer;
      launch(pos, next - pos);
      pos = next;
    }
  }
  await Promise.all(inFlight);
  if (failure) throw failure.err;
  report();
  return stats;
}
