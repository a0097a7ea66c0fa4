/**
 * One writer per disk: an advisory whole-file lock (flock) on a sidecar `<disk>.lock`.
 *
 * How this works: `acquire` opens (creating if needed) `<disk>.lock` and takes flock LOCK_EX or LOCK_SH
 * without waiting. The kernel ties the lock to the open file, so it disappears when the holder releases,
 * closes or dies: a crashed holder never leaves a stale lock. The file's content is only for messages:
 * one line `<pid>\t<command>` per holder (an exclusive holder truncates it first; shared holders append
 * and leave their line when they release: rewriting the file would race with other shared holders, and
 * briefly upgrading to exclusive to clear it would make a concurrent shared acquirer fail). When the lock is taken by
 * someone else, InUseError names the processes the kernel lists as holding it (/proc/locks), with the
 * commands from their lines ("in use by PID 1234 (tidemark serve)"). The lock file is never deleted (deleting a flock
 * file races with a process that has just opened it).
 */
import { open, readFile, type FileHandle } from 'node:fs/promises';
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

/**
 * "PID 1234 (tidemark serve), PID 99 (tidemark backup)": who holds the lock. The kernel's list of flock
 * holders of this file (/proc/locks) says which processes hold it; the lock file's lines give their
 * commands. Shared holders cannot rewrite the file when they release (others may be appending), so a
 * line can outlive its lock: a process that released its shared lock and lives on must not be named.
 * Without /proc/locks, every live process with a line is named (may include such a former holder).
 */
async function describeHolders(handle: FileHandle): Promise<string> {
  const text = (await handle.readFile({ encoding: 'utf8' })).slice(0, 64 * 1024);
  const commands = new Map<number, string>();
  for (const line of text.split('\n')) {
    const m = /^(\d+)\t(.*)$/.exec(line);
    if (m && !commands.has(Number(m[1]))) commands.set(Number(m[1]), m[2]);
  }
  const holding = await kernelHolders(handle);
  const pids = holding ? [...commands.keys()].filter((p) => holding.has(p)).concat([...holding].filter((p) => !commands.has(p))) : [...commands.keys()].filter(alive);
  const holders = pids.map((pid) => `PID ${pid}${pid === process.pid ? ' (this process)' : commands.get(pid) ? ` (${commands.get(pid)})` : ''}`);
  return holders.length > 0 ? holders.join(', ') : 'another process (not yet recorded in the lock file)';
}

/** PIDs holding a flock on the open file (granted, not waiting), from /proc/locks; null when unreadable. */
async function kernelHolders(handle: FileHandle): Promise<Set<number> | null> {
  let locks: string;
  let st: { dev: bigint; ino: bigint };
  try {
    [locks, st] = await Promise.all([readFile('/proc/locks', 'utf8'), handle.stat({ bigint: true })]);
  } catch {
    return null;
  }
  // glibc's dev_t: major in bits 8-19 and 32-63, minor in bits 0-7 and 20-31; /proc/locks prints them in hex.
  const major = ((st.dev >> 8n) & 0xfffn) | ((st.dev >> 32n) & ~0xfffn);
  const minor = (st.dev & 0xffn) | ((st.dev >> 12n) & ~0xffn);
  const want = `${major.toString(16).padStart(2, '0')}:${minor.toString(16).padStart(2, '0')}:${st.ino}`;
  const out = new Set<number>();
  for (const line of locks.split('\n')) {
    // "12: FLOCK  ADVISORY  WRITE 1234 fe:00:5308453 0 EOF" ("12: -> FLOCK ..." is a waiter).
    const m = /^\d+:\s+FLOCK\s+\S+\s+(?:READ|WRITE)\s+(\d+)\s+(\S+)\s/.exec(line);
    if (m && m[2] === want && Number(m[1]) > 0) out.add(Number(m[1]));
  }
  return out;
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
