/**
 * Typed access to the tidemark_native addon (src/native/*.c, built by node-gyp into build/Release):
 * Linux file primitives Node does not offer. Every function runs its system call on the libuv thread
 * pool and returns a Promise. Failures reject with a {@link NativeErrnoError} whose `code` is spelled as
 * Node spells it ('ENOTSUP' also stands for EOPNOTSUPP, 'EAGAIN' for EWOULDBLOCK), `errno` is negative
 * and `syscall` names the call ('fallocate(PUNCH_HOLE)', 'ioctl(FICLONE)', ...).
 *
 * The addon is loaded on first use, not at import, so modules that merely import this one work where
 * the addon is missing; the first call then rejects with NativeAddonError.
 *
 * File descriptors are raw numbers: the caller must keep the owning FileHandle open until the promise
 * settles (a closed and reused fd would be acted on otherwise).
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { NativeAddonError } from './errors.js';

/** An Error from a failed system call, shaped like Node's own fs errors. */
export interface NativeErrnoError extends Error {
  code: string;
  errno: number;
  syscall: string;
}

export type FlockMode = 'exclusive' | 'shared' | 'unlock';

interface Addon {
  seekData(fd: number, offset: number): Promise<number>;
  seekHole(fd: number, offset: number): Promise<number>;
  punchHole(fd: number, offset: number, length: number): Promise<void>;
  zeroRange(fd: number, offset: number, length: number): Promise<void>;
  allocate(fd: number, offset: number, length: number): Promise<void>;
  ficlone(destFd: number, srcFd: number): Promise<void>;
  ficloneRange(destFd: number, srcFd: number, srcOffset: number, length: number, destOffset: number): Promise<void>;
  flock(fd: number, mode: FlockMode, wait: boolean): Promise<boolean>;
  alignGap(view: Uint8Array, align: number): number;
}

const ADDON = join('build', 'Release', 'tidemark_native.node');
let addon: Addon | undefined;

/**
 * Where the addon may be: $TIDEMARK_NATIVE, then build/Release in the nearest ancestor of this module
 * (dist/src/native/ -> repo root), then in the nearest ancestor of the working directory (for builds
 * with --outDir outside the repository).
 */
function candidates(): string[] {
  const out: string[] = [];
  if (process.env.TIDEMARK_NATIVE) out.push(process.env.TIDEMARK_NATIVE);
  for (let start of [dirname(fileURLToPath(import.meta.url)), process.cwd()]) {
    for (;;) {
      out.push(join(start, ADDON));
      const up = dirname(start);
      if (up === start) break;
      start = up;
    }
  }
  return out;
}

function load(): Addon {
  if (addon) return addon;
  if (process.platform !== 'linux') throw new NativeAddonError(`it needs Linux (this is ${process.platform})`);
  const tried = candidates();
  const path = tried.find((p) => existsSync(p));
  if (!path) throw new NativeAddonError(`${ADDON} not found near ${dirname(fileURLToPath(import.meta.url))} or ${process.cwd()}`);
  try {
    addon = createRequire(import.meta.url)(path) as Addon;
  } catch (err) {
    throw new NativeAddonError(`cannot load ${path}: ${(err as Error).message}`, { cause: err });
  }
  return addon;
}

/** True when the addon can be loaded (never throws). */
export function nativeAvailable(): boolean {
  try {
    load();
    return true;
  } catch {
    return false;
  }
}

function checkFd(fd: number, name = 'fd'): void {
  if (!Number.isInteger(fd) || fd < 0 || fd > 0x7fffffff) throw new TypeError(`${name} must be a file descriptor, got ${fd}`);
}

function checkOffset(value: number, name: string): void {
  if (!Number.isSafeInteger(value) || value < 0) throw new TypeError(`${name} must be a non-negative safe integer, got ${value}`);
}

/** The first offset >= `offset` holding data, or -1 when only a hole follows (up to EOF). */
export async function seekData(fd: number, offset: number): Promise<number> {
  checkFd(fd);
  checkOffset(offset, 'offset');
  return load().seekData(fd, offset);
}

/** The first offset >= `offset` inside a hole; EOF counts as a hole. Rejects ENXIO when offset >= EOF. */
export async function seekHole(fd: number, offset: number): Promise<number> {
  checkFd(fd);
  checkOffset(offset, 'offset');
  return load().seekHole(fd, offset);
}

/** Deallocate [offset, offset+length) (partial blocks are zeroed); the size stays. ENOTSUP if the fs can't. */
export async function punchHole(fd: number, offset: number, length: number): Promise<void> {
  checkFd(fd);
  checkOffset(offset, 'offset');
  checkOffset(length, 'length');
  return load().punchHole(fd, offset, length);
}

/** Make [offset, offset+length) read as zeros, keeping it allocated; the size stays. ENOTSUP if the fs can't (tmpfs). */
export async function zeroRange(fd: number, offset: number, length: number): Promise<void> {
  checkFd(fd);
  checkOffset(offset, 'offset');
  checkOffset(length, 'length');
  return load().zeroRange(fd, offset, length);
}

/** Reserve storage for [offset, offset+length) (fallocate mode 0); grows the file when past EOF. */
export async function allocate(fd: number, offset: number, length: number): Promise<void> {
  checkFd(fd);
  checkOffset(offset, 'offset');
  checkOffset(length, 'length');
  return load().allocate(fd, offset, length);
}

/**
 * Make `destFd` share all of `srcFd`'s extents (reflink; dest becomes a copy of src). Rejects ENOTSUP on
 * filesystems without reflink (ext4, tmpfs), EXDEV across filesystems, EINVAL for unsuitable files.
 */
export async function ficlone(destFd: number, srcFd: number): Promise<void> {
  checkFd(destFd, 'destFd');
  checkFd(srcFd, 'srcFd');
  return load().ficlone(destFd, srcFd);
}

/**
 * Share [srcOffset, srcOffset+length) of src at destOffset in dest. Offsets and length must be
 * multiples of the filesystem block size (length may run to src's EOF; 0 means "to EOF").
 */
export async function ficloneRange(destFd: number, srcFd: number, srcOffset: number, length: number, destOffset: number): Promise<void> {
  checkFd(destFd, 'destFd');
  checkFd(srcFd, 'srcFd');
  checkOffset(srcOffset, 'srcOffset');
  checkOffset(length, 'length');
  checkOffset(destOffset, 'destOffset');
  return load().ficloneRange(destFd, srcFd, srcOffset, length, destOffset);
}

/**
 * Whole-file advisory lock (flock(2)): held by the open file description, so it is released when the
 * file is closed or the process dies. Resolves true when taken (or released), false when `wait` is false
 * and another open file holds a conflicting lock. `wait: true` occupies a thread-pool thread until granted.
 */
export async function flock(fd: number, mode: FlockMode, wait: boolean): Promise<boolean> {
  checkFd(fd);
  if (mode !== 'exclusive' && mode !== 'shared' && mode !== 'unlock') throw new TypeError(`mode must be 'exclusive', 'shared' or 'unlock', got ${String(mode)}`);
  return load().flock(fd, mode, wait);
}

/**
 * Bytes from `view[0]` to the first address that is a multiple of `align` (a power of two). Synchronous.
 * JavaScript cannot see addresses; O_DIRECT I/O needs aligned memory (see alignedSharedBuffer).
 */
export function alignGap(view: Uint8Array, align: number): number {
  return load().alignGap(view, align);
}

const NOT_SUPPORTED = new Set(['ENOTSUP', 'EOPNOTSUPP', 'ENOSYS', 'ENOTTY']);

/** True for errors meaning "this filesystem/file cannot do that operation" (as opposed to I/O failures). */
export function isNotSupported(err: unknown): boolean {
  return typeof err === 'object' && err !== null && NOT_SUPPORTED.has((err as { code?: unknown }).code as string);
}
