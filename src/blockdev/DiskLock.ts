/**
 * One writer per disk: an advisory whole-file lock (flock) on a sidecar `<disk>.lock`.
 *
 * How this works: `acquire` opens (creating if needed) `<disk>.lock` and takes flock LOCK_EX or LOCK_SH
 * without waiting. The kernel ties the lock to the open file, so it disappears when the holder releases,
 * closes or dies: a crashed holder never leaves a stale lock. The file's content is only for messages:
 * one line `<pid>\t<command>` per holder (an exclusive holder truncates it first; shared holders append).
 * When the lock is taken by someone else, the lines whose PID is still alive name the holder in
 * InUseError ("in use by PID 1234 (tidemark serve)"). The lock file is never deleted (deleting a flock
 * file races with a process that has just opened it).
 */
import { open, type FileHandle } from 'node:fs/promises';
import { basename } from 'node:path';
import { InUseError, withContext } from '../errors.js';
import { flock } from '../native/native.js';

export interface DiskLockOptions {
  /** Exclusive (one writer, no readers) or shared (any number of readers). */
  exclusive: boolean;
  /** What to call this process in other processes' errors (default: script name and arguments). */
  holder?: string;
}

export class DiskLock {
  private released: Promise<void> | undefined;

  private constructor(
    /** The sidecar lock file. */
    readonly lockPath: string,
    readonly exclusive: boolean,
    private readonly handle: FileHandle,
  ) {}

  /**
   * Lock `path` (a disk image; it need not exist yet) through `<path>.lock`. Never waits: rejects with
   * InUseError naming the holder(s) when another open file — in this or another process — holds a
   * conflicting lock. Errno errors (EACCES, EROFS) when the lock file can't be created.
   */
  /**
   * Read-only probe: "PID 1234 (tidemark serve)" when another open file holds `<path>.lock`
   * exclusively, else undefined (not locked, only shared holders, or no lock file). It opens the lock
   * file read-only and tries a shared flock without waiting; it never creates or writes the file.
   */
  static async exclusiveHolder(path: string): Promise<string | undefined> {
    let fh: FileHandle;
    try {
      fh = await open(`${path}.lock`, 'r');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
    try {
      if (await flock(fh.fd, 'shared', false)) {
        await flock(fh.fd, 'unlock', false);
        return undefined;
      }
      return await describeHolders(fh);
    } finally {
      await fh.close();
    }
  }

  static async acquire(path: string, opts: DiskLockOptions): Promise<DiskLock> {
    const lockPath = `${path}.lock`;
    const handle = await withContext(`lock ${path}`, open(lockPath, 'a+', 0o644));
    try {
      if (!(await flock(handle.fd, opts.exclusive ? 'exclusive' : 'shared', false))) {
        throw new InUseError(path, await describeHolders(handle));
      }
      if (opts.exclusive) await handle.truncate(0);
      await handle.write(`${process.pid}\t${oneLine(opts.holder ?? defaultHolder())}\n`);
      return new DiskLock(lockPath, opts.exclusive, handle);
    } catch (err) {
      await handle.close();
      throw err;
    }
  }

  /** Drop the lock (an exclusive holder clears the file first). Idempotent. */
  release(): Promise<void> {
    this.released ??= (async () => {
      try {
        if (this.exclusive) await this.handle.truncate(0);
        await flock(this.handle.fd, 'unlock', false);
      } finally {
        await this.handle.close();
      }
    })();
    return this.released;
  }
}

/** "PID 1234 (tidemark serve), PID 99 (tidemark backup)" from the live lines of the lock file. */
async function describeHolders(handle: FileHandle): Promise<string> {
  const text = (await handle.readFile({ encoding: 'utf8' })).slice(0, 64 * 1024);
  const seen = new Set<number>();
  const holders: string[] = [];
  for (const line of text.split('\n')) {
    const m = /^(\d+)\t(.*)$/.exec(line);
    if (!m) continue;
    const pid = Number(m[1]);
    if (seen.has(pid) || !alive(pid)) continue;
    seen.add(pid);
    holders.push(`PID ${pid}${pid === process.pid ? ' (this process)' : m[2] ? ` (${m[2]})` : ''}`);
  }
  return holders.length > 0 ? holders.join(', ') : 'another process (not yet recorded in the lock file)';
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function defaultHolder(): string {
  return [basename(process.argv[1] ?? process.argv0), ...process.argv.slice(2)].join(' ');
}

function oneLine(text: string): string {
  return text.replace(/[\r\n\t]+/g, ' ').slice(0, 200);
}
