/**
 * Repository locks (restic-style). A lock is a `locks` object (envelope, JSON inside) saying who holds
 * it: { time, exclusive, host, pid, user, nonce }. Backups take shared locks; prune takes an exclusive
 * one. Many shared locks coexist; an exclusive lock excludes every other lock.
 *
 * Acquire = check for conflicts, write our lock, check again (excluding ours); on a conflict remove
 * ours and fail. Two racing processes may both back off, but never both proceed: each one's second
 * check happens after its own lock is durable, so the later checker sees the earlier one.
 *
 * Staleness: a lock whose time is older than `staleMs` (30 min; holders refresh every 5 min), or one
 * from this host whose pid no longer exists, is stale and ignored (and removed by removeStaleLocks).
 */
import { randomBytes } from 'node:crypto';
import { hostname, userInfo } from 'node:os';
import { LOCK_REFRESH_MS, LOCK_STALE_MS } from './constants.js';
import { RepositoryLockedError } from './errors.js';
import type { Repository } from './Repository.js';

export interface LockInfo {
  time: string;
  exclusive: boolean;
  host: string;
  pid: number;
  user: string;
  nonce: string;
}

export interface LockOptions {
  exclusive: boolean;
  staleMs?: number;
  /** Refresh period; 0 disables the timer (callers may call refresh()). */
  refreshMs?: number;
  /** Clock (tests). */
  now?: () => number;
}

export interface LockEntry {
  name: string;
  /** null when the lock object cannot be read (damaged). */
  info: LockInfo | null;
  mtimeMs: number;
}

export async function listLocks(repo: Repository): Promise<LockEntry[]> {
  const out: LockEntry[] = [];
  for await (const name of repo.backend.list('locks')) {
    let info: LockInfo | null = null;
    let mtimeMs = 0;
    try {
      mtimeMs = (await repo.backend.stat('locks', name)).mtimeMs;
      info = JSON.parse((await repo.getObject('locks', name)).toString('utf8')) as LockInfo;
    } catch (err) {
      if ((err as { code?: string }).code === 'E_NOT_FOUND') continue; // released meanwhile
    }
    out.push({ name, info, mtimeMs });
  }
  return out;
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Is this lock stale at time `now`? */
export function isStale(l: LockEntry, now: number, staleMs = LOCK_STALE_MS): boolean {
  const t = l.info ? Date.parse(l.info.time) : l.mtimeMs;
  if (!Number.isFinite(t) || now - t > staleMs) return true;
  if (l.info && l.info.host === hostname() && l.info.pid !== process.pid && !pidAlive(l.info.pid)) return true;
  return false;
}

/** Remove stale locks; resolves how many were removed. */
export async function removeStaleLocks(repo: Repository, opts: { staleMs?: number; now?: number } = {}): Promise<number> {
  let n = 0;
  for (const l of await listLocks(repo)) {
    if (isStale(l, opts.now ?? Date.now(), opts.staleMs)) {
      await repo.backend.remove('locks', l.name);
      n++;
    }
  }
  return n;
}

export class RepoLock {
  private name: string | null = null;
  private timer: NodeJS.Timeout | null = null;

  private constructor(readonly repo: Repository, readonly opts: Required<Omit<LockOptions, 'now'>> & { now: () => number }) {}

  /** Take a lock; RepositoryLockedError names a conflicting holder. Release it in a `finally`. */
  static async acquire(repo: Repository, opts: LockOptions): Promise<RepoLock> {
    const lock = new RepoLock(repo, { exclusive: opts.exclusive, staleMs: opts.staleMs ?? LOCK_STALE_MS, refreshMs: opts.refreshMs ?? LOCK_REFRESH_MS, now: opts.now ?? Date.now });
    await lock.checkConflicts();
    await lock.write();
    try {
      await lock.checkConflicts();
    } catch (err) {
      await lock.release();
      throw err;
    }
    if (lock.opts.refreshMs > 0) {
      lock.timer = setInterval(() => void lock.refresh().catch(() => undefined), lock.opts.refreshMs);
      lock.timer.unref();
    }
    return lock;
  }

  get exclusive(): boolean {
    return this.opts.exclusive;
  }

  /** The lock object's current name (changes on refresh). */
  get objectName(): string | null {
    return this.name;
  }

  /** Write a fresh lock object, then remove the old one (the lock is never absent in between). */
  async refresh(): Promise<void> {
    if (!this.name) return;
    const old = this.name;
    await this.write();
    if (old !== this.name) await this.repo.backend.remove('locks', old);
  }

  /** Remove the lock. Idempotent. */
  async release(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    const name = this.name;
    this.name = null;
    if (name) await this.repo.backend.remove('locks', name);
  }

  private async write(): Promise<void> {
    const info: LockInfo = {
      time: new Date(this.opts.now()).toISOString(),
      exclusive: this.opts.exclusive,
      host: hostname(),
      pid: process.pid,
      user: safeUser(),
      nonce: randomBytes(8).toString('hex'),
    };
    this.name = (await this.repo.putObject('locks', Buffer.from(JSON.stringify(info)))).name;
  }

  private async checkConflicts(): Promise<void> {
    const now = this.opts.now();
    for (const l of await listLocks(this.repo)) {
      if (l.name === this.name || isStale(l, now, this.opts.staleMs)) continue;
      const otherExclusive = l.info ? l.info.exclusive : true;
      if (this.opts.exclusive || otherExclusive) {
        const holder = l.info ? `pid ${l.info.pid} on ${l.info.host} since ${l.info.time}` : `an unreadable lock ${l.name}`;
        throw new RepositoryLockedError(this.repo.location, holder, otherExclusive);
      }
    }
  }
}

function safeUser(): string {
  try {
    return userInfo().username;
  } catch {
    return '';
  }
}
