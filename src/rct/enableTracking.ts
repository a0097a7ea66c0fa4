import { randomBytes } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { UsageError } from '../errors.js';
import { openDisk } from '../disk/openDisk.js';
import { atomicWriteFile } from '../util/atomicWriteFile.js';
import { fsyncDir } from '../util/fsyncDir.js';
import { mrtPathOf, readRct, rctPathOf } from './ChangeTracker.js';
import { DEFAULT_BLOCK_SIZE, MAX_BLOCK_SIZE, MIN_BLOCK_SIZE } from './constants.js';
import { encodeRct } from './rctCodec.js';
import { CorruptError } from '../errors.js';
import { dirname } from 'node:path';

export interface EnableOptions {
  /** Fine granularity in bytes: a power of two from 512 to 64 MiB (default 64 KiB). */
  blockSize?: number;
  /** Coarse .mrt region size in bytes: a power of two >= 1 MiB (default: automatic, 64 MiB and up). */
  regionSize?: number;
}

const pow2 = (n: number) => Number.isSafeInteger(n) && n > 0 && (n & (n - 1)) === 0;

/**
 * Enable change tracking for the disk at `diskPath`: writes `<disk>.rct` (unbound: the first open
 * records the disk's size and identity). Idempotent when already enabled with the same block size;
 * UsageError when enabled with another (disable first). Throws NotFoundError when the disk is missing,
 * CorruptError when it is damaged (the disk is opened read-only to validate it).
 */
export async function enableTracking(diskPath: string, opts: EnableOptions = {}): Promise<void> {
  const blockSize = opts.blockSize ?? DEFAULT_BLOCK_SIZE;
  if (!pow2(blockSize) || blockSize < MIN_BLOCK_SIZE || blockSize > MAX_BLOCK_SIZE) {
    throw new UsageError(`block size ${blockSize} must be a power of two from ${MIN_BLOCK_SIZE} to ${MAX_BLOCK_SIZE} bytes`);
  }
  const regionSize = opts.regionSize ?? 0;
  if (regionSize !== 0 && (!pow2(regionSize) || regionSize < 1024 * 1024 || regionSize < blockSize)) {
    throw new UsageError(`region size ${regionSize} must be a power of two of at least 1 MiB and at least the block size`);
  }
  // Validate the disk before promising to track it: opening it read-only (never modifies it) throws
  // NotFoundError for a missing file, CorruptError for a damaged VHDX, UnsupportedDiskFormatError.
  const dev = await openDisk(diskPath, { readOnly: true });
  await dev.close();
  let existing = null;
  try {
    existing = await readRct(diskPath);
  } catch (err) {
    if (!(err instanceof CorruptError)) throw err; // a corrupt .rct is replaced
  }
  if (existing) {
    if (opts.blockSize === undefined || existing.blockSize === blockSize) return;
    throw new UsageError(`${diskPath}: tracking is already enabled with block size ${existing.blockSize}; disable it first to change the block size`);
  }
  await rm(mrtPathOf(diskPath), { force: true });
  const now = Date.now();
  await atomicWriteFile(rctPathOf(diskPath), encodeRct({
    tracker: randomBytes(16).toString('hex'),
    diskSize: 0,
    blockSize,
    regionSize,
    clean: true,
    unbound: true,
    generation: 1,
    persistSeq: 1,
    leaseUntil: 0,
    createdAt: now,
    identityKind: 'none',
    identities: [],
    invalidation: null,
    ids: [],
  }));
}

/** Disable tracking: remove `<disk>.rct` and `<disk>.mrt` (every ID becomes invalid). Idempotent. */
export async function disableTracking(diskPath: string): Promise<void> {
  for (const p of [rctPathOf(diskPath), mrtPathOf(diskPath), `${rctPathOf(diskPath)}.tmp`, `${mrtPathOf(diskPath)}.tmp`]) await rm(p, { force: true });
  await fsyncDir(dirname(rctPathOf(diskPath)));
}
