/**
 * restoreDevice: write one disk of a restore point onto a BlockDevice.
 *
 * Streaming and parallel, in bounded memory:
 * - the index tree is walked in chunk order, `RESTORE_BATCH` chunk entries at a time; a batch's distinct
 *   chunks are located (pack, offset) and sorted in pack order;
 * - runs of nearby blobs of one pack become one ranged read of at most `RESTORE_WINDOW` bytes (a
 *   full backup's chunks sit back to back, so a pack is read in a few large sequential pieces);
 * - each window is read into a slot — a pair of SharedArrayBuffers (the read window and a plaintext
 *   area) reused for the whole restore: no allocation, no garbage and no page faults per window —
 *   and decoded as a whole — AES-GCM open, zstd, length and digest == name for every blob
 *   (decodeBlobs, the same checks as any read) — inline or on `workers` codec threads that write the
 *   plaintexts back to back into the slot's plaintext area, while the main thread reads the next
 *   windows (stored chunks are copied there too: every chunk then sits aligned for O_DIRECT);
 * - the plaintexts are written out of order, chunks adjacent on disk gathered into one vectored write
 *   (`BlockDevice.writev`, else a write each); at most `concurrency` windows (slots) are alive at once.
 * Sparse: zero chunks are not written (the target is assumed to read zeros, e.g. a new sparse file;
 * pass `zeroFill` to zero them explicitly on a used target). Verified: a damaged chunk is a
 * CorruptObjectError naming it (and its pack and offset); a wrong length is caught against the geometry.
 */
import type { BlockDevice } from '../blockdev/BlockDevice.js';
import { ObjectNotFoundError } from '../backend/errors.js';
import { ObjectKind } from './constants.js';
import type { CodecPool } from './CodecPool.js';
import type { DecodeBlobsResult } from './decodeBlobs.js';
import { CorruptObjectError, DiskMismatchError } from './errors.js';
import { IndexTree } from './IndexTree.js';
import { packWindows } from './packWindows.js';
import { alignedSharedBuffer } from '../util/alignedSharedBuffer.js';
import type { DiskEntry } from './Manifest.js';
import type { BlobLocation } from './PackStore.js';
import type { Repository } from './Repository.js';

export interface RestoreProgress {
  chunksDone: number;
  bytesWritten: number;
}

export interface RestoreDeviceOptions {
  /** Windows read/decoded/written at once (default RESTORE_IN_FLIGHT). */
  concurrency?: number;
  /** Codec worker threads decoding windows (default 0: on the main thread; see docs/design.md "Restore: measured"). */
  workers?: number;
  /** Zero the zero chunks on the target too (target not known to be empty). */
  zeroFill?: boolean;
  onProgress?: (p: RestoreProgress) => void;
  signal?: AbortSignal;
}

/** Chunk entries planned together (memory: a few MiB of digests; 512 MiB of disk at 32 KiB chunks). */
export const RESTORE_BATCH = 16384;
/** Largest ranged read of a pack; two blobs further apart than RESTORE_GAP are not read together. */
export const RESTORE_WINDOW = 8 * 1024 * 1024;
export const RESTORE_GAP = 256 * 1024;
/** At most this many blobs per window (bounds its plaintext: 256 x 32 KiB = 8 MiB). */
export const RESTORE_WINDOW_BLOBS = 256;
/** Windows alive at once, one slot each (memory ~ 6 x (8 MiB read + 8 MiB plain)). */
export const RESTORE_IN_FLIGHT = 6;
/** Largest vectored write (iovecs; Linux's IOV_MAX is 1024). */
const WRITEV_MAX = 512;

/** A reusable pair of shared buffers: a pack window is read into `read`, decoded into `plain`. */
interface Slot {
  read: Buffer;
  plain: Buffer;
}

interface Planned {
  digest: string;
  loc: BlobLocation;
  /** Disk chunk indexes holding this chunk (ascending). */
  indexes: number[];
}

export async function restoreDevice(repo: Repository, disk: DiskEntry, target: BlockDevice, opts: RestoreDeviceOptions = {}): Promise<RestoreProgress> {
  if (target.size < disk.size) {
    throw new DiskMismatchError(`target device is ${target.size} bytes but disk ${disk.name} is ${disk.size}; restore to a device at least as large`, { target: target.size, size: disk.size });
  }
  const inFlight = Math.max(1, opts.concurrency ?? RESTORE_IN_FLIGHT);
  // A window spans at most RESTORE_WINDOW bytes of pack, or one blob (a chunk + its envelope), and holds
  // at most as many blobs as the plaintext area has room for whole chunks.
  const readCap = Math.max(RESTORE_WINDOW, disk.chunkSize + 64);
  const plainCap = Math.max(RESTORE_WINDOW, disk.chunkSize);
  const windowBlobs = Math.max(1, Math.min(RESTORE_WINDOW_BLOBS, Math.floor(plainCap / disk.chunkSize)));
  const free: Slot[] = [];
  const takeSlot = (): Slot => {
    const s = free.pop();
    if (s) return s;
    return { read: Buffer.from(new SharedArrayBuffer(readCap)), plain: alignedSharedBuffer(plainCap) };
  };
  const workers = Math.max(0, Math.floor(opts.workers ?? 0));
  const pool: CodecPool | null = workers > 0 ? repo.createCodecPool(workers) : null;
  const cs = disk.chunkSize;
  const tree = IndexTree.open(repo, disk);
  const progress: RestoreProgress = { chunksDone: 0, bytesWritten: 0 };
  const running = new Set<Promise<void>>();
  let failure: unknown = null;
  let nextZeroFrom = 0; // first byte not yet covered by data or zero-fill

  const lengthOf = (index: number): number => Math.min(cs, disk.size - index * cs);
  const badLength = (digest: string, index: number, got: number): CorruptObjectError =>
    new CorruptObjectError(repo.location, 'chunks', digest, `chunk ${index} of disk ${disk.name} is ${got} bytes, expected ${lengthOf(index)}`);
  const done = (n: number, bytes: number): void => {
    progress.chunksDone += n;
    progress.bytesWritten += bytes;
    opts.onProgress?.({ ...progress });
  };

  const launch = (p: Promise<void>): void => {
    const tracked = p.then(
      () => void running.delete(tracked),
      (err) => {
        running.delete(tracked);
        failure ??= err;
      },
    );
    running.add(tracked);
  };
  const throttle = async (limit: number): Promise<void> => {
    while (running.size >= limit) await Promise.race(running);
    if (failure) throw failure;
  };

  /** One chunk through the ordinary read path (not indexed at planning time, or its pack vanished). */
  const restoreOne = async (digest: string, indexes: number[]): Promise<void> => {
    const data = await repo.getChunk(digest, cs);
    await Promise.all(
      indexes.map((index) => {
        if (data.length !== lengthOf(index)) throw badLength(digest, index, data.length);
        return target.write(index * cs, data);
      }),
    );
    done(indexes.length, data.length * indexes.length);
  };

  /** Read one window of a pack into a slot, decode every blob in it, write them out. */
  const restoreWindow = async (blobs: Planned[]): Promise<void> => {
    const slot = takeSlot();
    try {
      await decodeAndWrite(slot, blobs);
    } finally {
      free.push(slot);
    }
  };
  const decodeAndWrite = async (slot: Slot, blobs: Planned[]): Promise<void> => {
    const pack = blobs[0].loc.pack;
    const start = blobs[0].loc.offset;
    const end = blobs[blobs.length - 1].loc.offset + blobs[blobs.length - 1].loc.length;
    let window: Buffer;
    try {
      window = await repo.packs.readPackRange(pack, start, end - start, slot.read);
    } catch (err) {
      if (!(err instanceof ObjectNotFoundError)) throw err;
      // Repacked and removed by a prune since our map was loaded: the ordinary path reloads and retries.
      for (const b of blobs) await restoreOne(b.digest, b.indexes);
      return;
    }
    const list = blobs.map((b) => ({ name: b.digest, offset: b.loc.offset - start, length: b.loc.length }));
    const r: DecodeBlobsResult = pool ? await pool.decode(window, list, slot.plain) : repo.decodeChunkWindow(window, list, slot.plain);
    if (!r.ok) {
      const b = blobs[r.blob];
      const err = new CorruptObjectError(repo.location, 'chunks', b.digest, r.detail);
      Object.assign(err.data, { pack, offset: b.loc.offset });
      throw err;
    }
    // Every (disk chunk, plaintext) pair in disk order; a run of adjacent chunks is one write, its
    // pieces adjacent in the plaintext area merged (a full backup's window: one piece), else gathered.
    const pieces: Array<{ index: number; from: number; to: number }> = [];
    let chunks = 0;
    let bytes = 0;
    let at = 0;
    for (let i = 0; i < blobs.length; i++) {
      const len = r.lengths[i];
      for (const index of blobs[i].indexes) {
        if (len !== lengthOf(index)) throw badLength(blobs[i].digest, index, len);
        pieces.push({ index, from: at, to: at + len });
        chunks++;
        bytes += len;
      }
      at += len;
    }
    pieces.sort((a, b) => a.index - b.index);
    const writes: Promise<void>[] = [];
    for (let i = 0; i < pieces.length; ) {
      const run: Buffer[] = [];
      let from = pieces[i].from;
      let to = pieces[i].to;
      let j = i + 1;
      for (; j < pieces.length && pieces[j].index === pieces[j - 1].index + 1 && run.length < WRITEV_MAX; j++) {
        if (pieces[j].from === to) to = pieces[j].to;
        else {
          run.push(slot.plain.subarray(from, to));
          from = pieces[j].from;
          to = pieces[j].to;
        }
      }
      run.push(slot.plain.subarray(from, to));
      const offset = pieces[i].index * cs;
      if (run.length === 1) writes.push(target.write(offset, run[0]));
      else if (target.writev) writes.push(target.writev(offset, run));
      else {
        let o = offset;
        for (const d of run) {
          writes.push(target.write(o, d));
          o += d.length;
        }
      }
      i = j;
    }
    await Promise.all(writes);
    done(chunks, bytes);
  };

  /** Plan a batch (digest -> disk indexes) into windows and run them, at most `inFlight` at once. */
  const restoreBatch = async (batch: Map<string, number[]>): Promise<void> => {
    const planned: Planned[] = [];
    for (const [digest, indexes] of batch) {
      const loc = repo.packs.locate(ObjectKind.chunk, digest);
      if (loc) planned.push({ digest, loc, indexes });
      else {
        await throttle(inFlight);
        launch(restoreOne(digest, indexes));
      }
    }
    for (const w of packWindows(planned, (p) => p.loc, { gap: RESTORE_GAP, span: RESTORE_WINDOW, maxBlobs: windowBlobs })) {
      if (opts.signal?.aborted) throw opts.signal.reason ?? new Error('restore aborted');
      await throttle(inFlight);
      launch(restoreWindow(w));
    }
  };

  try {
    await repo.packs.ensureLoaded();
    let batch = new Map<string, number[]>();
    let batched = 0;
    for await (const { index, digest } of tree.entries()) {
      if (failure) break;
      if (opts.signal?.aborted) {
        failure = opts.signal.reason ?? new Error('restore aborted');
        break;
      }
      const offset = index * cs;
      if (opts.zeroFill && offset > nextZeroFrom) launch(target.zero(nextZeroFrom, offset - nextZeroFrom));
      nextZeroFrom = Math.min(disk.size, offset + cs);
      const list = batch.get(digest);
      if (list) list.push(index);
      else batch.set(digest, [index]);
      if (++batched >= RESTORE_BATCH) {
        await restoreBatch(batch);
        batch = new Map();
        batched = 0;
      }
    }
    if (!failure) await restoreBatch(batch);
  } catch (err) {
    failure ??= err; // a damaged index page, an abort
  }
  if (!failure && opts.zeroFill && nextZeroFrom < disk.size) launch(target.zero(nextZeroFrom, disk.size - nextZeroFrom));
  await Promise.all(running);
  await pool?.close();
  if (failure) throw failure;
  await target.flush();
  return progress;
}
