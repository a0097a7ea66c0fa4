/** Shared helpers of the backup tests: the real CLI, tracked writes through the library, hashing. */
import { spawn, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { DiskLock } from '../../src/blockdev/DiskLock.js';
import { openTrackedDisk } from '../../src/rct/openTrackedDisk.js';

export const MAIN = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));

export interface CliResult {
  status: number;
  stdout: string;
  stderr: string;
}

/** Run `tidemark ...args` with TIDEMARK_HOME=home. */
export function cli(home: string, args: string[]): CliResult {
  const r = spawnSync(process.execPath, [MAIN, ...args], { encoding: 'utf8', env: { ...process.env, TIDEMARK_HOME: home }, maxBuffer: 64 << 20 });
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/** Run and parse --json output; throws with stderr when the exit code is not 0. */
export function cliJson<T = Record<string, unknown>>(home: string, args: string[]): T {
  const r = cli(home, [...args, '--json']);
  if (r.status !== 0) throw new Error(`tidemark ${args.join(' ')} exited ${r.status}: ${r.stderr}${r.stdout}`);
  return JSON.parse(r.stdout) as T;
}

/** Start `tidemark ...args` in the background. */
export function cliSpawn(home: string, args: string[]) {
  return spawn(process.execPath, [MAIN, ...args], { env: { ...process.env, TIDEMARK_HOME: home }, stdio: ['ignore', 'pipe', 'pipe'] });
}

export async function sha256File(path: string): Promise<string> {
  return createHash('sha256').update(await readFile(path)).digest('hex');
}

/** A deterministic pseudo-random generator (tests repeat). */
export function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 2 ** 32;
  };
}

/**
 * Write `count` random buffers at random offsets through Tidemark (lock + tracked open), as a guest
 * would. Returns the set of 64 KiB blocks touched (RCT's default granularity).
 */
/**
 * `count` random writes through change tracking; resolves the tracking blocks they touched, numbered at
 * `blockSize` (default 32 KiB: the granularity `tidemark backup` enables tracking with, the repository's
 * chunk size).
 */
export async function trackedWrites(path: string, size: number, count: number, next: () => number, blockSize = TRACKING_BLOCK): Promise<Set<number>> {
  const lock = await DiskLock.acquire(path, { exclusive: true, holder: 'test writer' });
  const dev = await openTrackedDisk(path);
  const blocks = new Set<number>();
  try {
    for (let i = 0; i < count; i++) {
      const len = 1 + Math.floor(next() * 100_000);
      const off = Math.floor(next() * (size - len));
      await dev.write(off, randomBytes(len));
      for (let b = Math.floor(off / blockSize); b <= Math.floor((off + len - 1) / blockSize); b++) blocks.add(b);
    }
  } finally {
    await dev.close();
    await lock.release();
  }
  return blocks;
}

/** The tracking granularity `tidemark backup` enables on an untracked disk (the default repository chunk size). */
export const TRACKING_BLOCK = 32 * 1024;

export interface BackupJson {
  snapshot: string;
  mode: 'full' | 'incremental' | 'full-scan';
  reason?: string;
  parent?: string;
  bytesRead: number;
  chunksNew: number;
  bytesStored: number;
  diskSize: number;
  trackingEnabled: boolean;
}
