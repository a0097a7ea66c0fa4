/**
 * DeferredSyncBackend: a LocalBackend whose chunk and index puts are made durable in batches.
 *
 * Why: LocalBackend makes every put durable on its own (fsync the temp file, link, fsync the
 * directory): two fsyncs per 32 KiB chunk, which bounds a local backup at a few hundred chunks a second.
 *
 * How this works (and why it is safe): a chunk/index put only writes `tmp/<name>.<random>` (no fsync)
 * and remembers it as pending; the object is NOT published under its name yet. `barrier()` fsyncs every
 * pending temp file (many at once, so the filesystem commits them together), then links each to its
 * final name, then fsyncs each touched directory once. So a name only ever appears for durable content:
 * after a crash there is never a torn object under a valid name that a later backup could deduplicate
 * against (the objection to simply skipping fsync). Pending objects are visible to this process
 * (has/get/stat/list answer for them), so deduplication within the run works.
 *
 * The repository's invariant "a manifest only references objects that are durable" is kept by ordering:
 * a put of any other type (snapshots, locks, config, keys) first runs `barrier()`, then is delegated to
 * LocalBackend's own durable put. A manifest is therefore written only after every chunk and page put
 * before it is durable and published. The pending set is also flushed whenever it reaches `maxPending`
 * objects (in the background; puts wait only when 4x that many are pending). A crash leaves only unpublished temp files, which
 * `cleanup` (prune) removes.
 */
import { copyInto } from '../backend/copyInto.js';
import { randomBytes } from 'node:crypto';
import { link, mkdir, open, readFile, stat, unlink } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Backend, ObjectInfo, ObjectType, PutOptions } from '../backend/Backend.js';
import { checkName, checkType } from '../backend/checkName.js';
import { BackendIOError, NoSpaceError, ObjectNotFoundError } from '../backend/errors.js';
import { LocalBackend } from '../backend/LocalBackend.js';
import { writeNewFile } from '../backend/writeNewFile.js';
import { fsyncDir } from '../util/fsyncDir.js';

const DEFERRED: ReadonlySet<ObjectType> = new Set<ObjectType>(['chunks', 'index']);

export interface DeferredSyncOptions {
  /** Publish once this many objects are pending (default 1024). */
  maxPending?: number;
  /** fsyncs in flight during a barrier (default 64). */
  syncConcurrency?: number;
}

interface Pending {
  type: ObjectType;
  name: string;
  tmp: string;
  final: string;
}

export class DeferredSyncBackend implements Backend {
  readonly location: string;
  private pending = new Map<string, Pending>();
  private chain: Promise<void> = Promise.resolve();
  private background: Promise<unknown> | null = null;
  private readonly maxPending: number;
  private readonly syncConcurrency: number;

  constructor(readonly local: LocalBackend, opts: DeferredSyncOptions = {}) {
    this.location = local.location;
    this.maxPending = Math.max(1, opts.maxPending ?? 1024);
    this.syncConcurrency = Math.max(1, opts.syncConcurrency ?? 64);
  }

  async put(type: ObjectType, name: string, data: Uint8Array, opts?: PutOptions): Promise<boolean> {
    checkName(type, name);
    if (!DEFERRED.has(type)) {
      await this.barrier();
      return this.local.put(type, name, data, opts);
    }
    const key = `${type}/${name}`;
    if (this.pending.has(key) || (await this.local.has(type, name))) return false;
    const tmp = join(this.local.root, 'tmp', `${name}.${randomBytes(6).toString('hex')}`);
    try {
      await writeNewFile(tmp, data, { sync: false });
    } catch (err) {
      await unlink(tmp).catch(() => undefined);
      throw mapError(this.location, err, type, name);
    }
    if (this.pending.has(key)) {
      await unlink(tmp).catch(() => undefined); // a concurrent put of the same name won
      return false;
    }
    this.pending.set(key, { type, name, tmp, final: this.local.path(type, name) });
    if (this.pending.size >= this.maxPending && !this.background) {
      // Publish in the background while puts go on; block only when far behind. A failed background
      // barrier leaves its objects pending, so the next barrier (at the latest, the manifest's) retries
      // them and reports the failure.
      this.background = this.barrier()
        .catch(() => undefined)
        .finally(() => (this.background = null));
    }
    if (this.pending.size >= 4 * this.maxPending) await this.barrier();
    return true;
  }

  /**
   * Make every object put so far durable and published under its name. Resolves when done; rejects
   * (NoSpaceError/BackendIOError) when an fsync or link fails — then nothing put since the previous
   * barrier may be relied on, and no manifest must be written.
   */
  barrier(): Promise<void> {
    const batch = [...this.pending.values()];
    const run = this.chain.then(() => this.publish(batch));
    this.chain = run.catch(() => undefined);
    return run;
  }

  private async publish(all: Pending[]): Promise<void> {
    const batch = all.filter((p) => this.pending.get(`${p.type}/${p.name}`) === p); // not removed meanwhile
    if (batch.length === 0) return;
    // 1. Content durable (concurrently: the filesystem commits them together).
    await pool(batch, this.syncConcurrency, async (p) => {
      const fh = await open(p.tmp, 'r+').catch((err) => {
        throw mapError(this.location, err, p.type, p.name);
      });
      try {
        await fh.sync();
      } catch (err) {
        throw mapError(this.location, err, p.type, p.name);
      } finally {
        await fh.close();
      }
    });
    // 2. Publish under the final names (never replacing), 3. make the names durable.
    const dirs = new Set<string>();
    await pool(batch, this.syncConcurrency, async (p) => {
      try {
        await linkOrExists(p.tmp, p.final);
      } catch (err) {
        throw mapError(this.location, err, p.type, p.name);
      }
      dirs.add(dirname(p.final));
    });
    await pool([...dirs], this.syncConcurrency, (d) => fsyncDir(d));
    for (const p of batch) {
      if (this.pending.get(`${p.type}/${p.name}`) === p) this.pending.delete(`${p.type}/${p.name}`);
      await unlink(p.tmp).catch(() => undefined);
    }
  }

  async get(type: ObjectType, name: string): Promise<Buffer> {
    checkName(type, name);
    const p = this.pending.get(`${type}/${name}`);
    if (p) {
      try {
        return await readFile(p.tmp);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw mapError(this.location, err, type, name);
        // published meanwhile: read it under its name
      }
    }
    return this.local.get(type, name);
  }

  async getRange(type: ObjectType, name: string, offset: number, length: number, into?: Uint8Array): Promise<Buffer> {
    checkName(type, name);
    if (this.pending.has(`${type}/${name}`)) return copyInto((await this.get(type, name)).subarray(offset, offset + length), into);
    return this.local.getRange(type, name, offset, length, into);
  }

  async has(type: ObjectType, name: string): Promise<boolean> {
    checkName(type, name);
    return this.pending.has(`${type}/${name}`) || this.local.has(type, name);
  }

  async *list(type: ObjectType): AsyncIterable<string> {
    checkType(type);
    const seen = new Set<string>();
    for (const p of [...this.pending.values()]) {
      if (p.type !== type) continue;
      seen.add(p.name);
      yield p.name;
    }
    for await (const n of this.local.list(type)) if (!seen.has(n)) yield n;
  }

  async remove(type: ObjectType, name: string): Promise<void> {
    checkName(type, name);
    const key = `${type}/${name}`;
    const p = this.pending.get(key);
    if (p) {
      this.pending.delete(key);
      await unlink(p.tmp).catch(() => undefined);
    }
    await this.local.remove(type, name);
  }

  async stat(type: ObjectType, name: string): Promise<ObjectInfo> {
    checkName(type, name);
    const p = this.pending.get(`${type}/${name}`);
    if (p) {
      const st = await stat(p.tmp).catch(() => null);
      if (st) return { type, name, size: st.size, mtimeMs: st.mtimeMs };
    }
    return this.local.stat(type, name);
  }

  async cleanup(olderThanMs: number): Promise<number> {
    return this.local.cleanup(olderThanMs);
  }
}

/** link() without replacing; an existing name already holds equivalent content (content addressing). */
async function linkOrExists(tmp: string, final: string): Promise<void> {
  const attempt = async (): Promise<void> => {
    try {
      await link(tmp, final);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
  };
  try {
    await attempt();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    await mkdir(dirname(final), { recursive: true });
    await attempt();
  }
}

function mapError(location: string, err: unknown, type: ObjectType, name: string): Error {
  const code = (err as NodeJS.ErrnoException)?.code;
  if (code === 'ENOENT') return new ObjectNotFoundError(location, type, name);
  if (code === 'ENOSPC' || code === 'EDQUOT') return new NoSpaceError(location, type, name, { cause: err });
  if (err instanceof Error && 'exitCode' in err) return err;
  return new BackendIOError(location, 'put', `${type}/${name}`, err);
}

async function pool<T>(items: T[], n: number, fn: (x: T) => Promise<void>): Promise<void> {
  let i = 0;
  let failure: unknown = null;
  const worker = async (): Promise<void> => {
    while (i < items.length && !failure) {
      const x = items[i++]!;
      try {
        await fn(x);
      } catch (err) {
        failure ??= err;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(n, items.length) }, worker));
  if (failure) throw failure;
}
