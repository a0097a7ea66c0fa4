import { randomBytes } from 'node:crypto';
import { link, mkdir, open as fsOpen, readdir, readFile, rename, stat, unlink } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Backend, ObjectInfo, ObjectType, ObjectWriter, PutOptions } from './Backend.js';
import { LocalObjectWriter } from './LocalObjectWriter.js';
import { checkName, checkType } from './checkName.js';
import { BackendIOError, NoSpaceError, ObjectNotFoundError } from './errors.js';
import { fsyncDir } from '../util/fsyncDir.js';
import { writeNewFile } from './writeNewFile.js';

/** Types with many objects get a 256-way fan-out by the first two characters of the name. */
const FANNED: ReadonlySet<ObjectType> = new Set<ObjectType>(['chunks', 'index', 'packs']);

export interface LocalBackendOptions {
  /** Test seam: how temp files are opened (inject a handle whose write fails with ENOSPC). */
  open?: typeof fsOpen;
  /** openWriter: fdatasync a streamed object every this many bytes (default 4 MiB; 0: only at commit). */
  streamSyncBytes?: number;
}

const STREAM_SYNC_BYTES = 4 * 1024 * 1024;

/**
 * Objects as files in a directory tree:
 *
 *   <root>/config/config  <root>/keys/<id>  <root>/snapshots/<id>  <root>/locks/<id>
 *   <root>/packs/ab/ab12…  <root>/packindex/<id>  <root>/tmp/ (in-flight puts)
 *   (<root>/chunks/ab/… and <root>/index/cd/… for the generic chunks/index types)
 *
 * How `put` stays atomic and never overwrites: write `tmp/<name>.<random>`, fsync, then `link()` it
 * to the final name — link fails with EEXIST instead of replacing, so the first writer of a name wins
 * and a later put resolves `false` — then unlink the temp and fsync the directory (not for
 * `nameDurable: false`: locks). `putAfter` writes and fsyncs the temp file at once and links it only
 * when the awaited promise resolves (a pack index after its packs: the fsyncs overlap). `openWriter`
 * streams an object into `tmp/<type>.<random>.part` as it is built (LocalObjectWriter) and publishes it
 * the same way at commit. A failure at any step removes the temp file, so a full disk leaves nothing behind. Filesystems without hard links
 * fall back to rename after an existence check (a tiny race between two writers of the same name,
 * harmless because names are content addresses).
 */
export class LocalBackend implements Backend {
  readonly location: string;
  private readonly openFile: typeof fsOpen;
  private readonly streamSyncBytes: number;

  constructor(readonly root: string, opts: LocalBackendOptions = {}) {
    this.location = root;
    this.openFile = opts.open ?? fsOpen;
    this.streamSyncBytes = opts.streamSyncBytes ?? STREAM_SYNC_BYTES;
  }

  /** The file holding an object. */
  path(type: ObjectType, name: string): string {
    return FANNED.has(type) ? join(this.root, type, name.slice(0, 2), name) : join(this.root, type, name);
  }

  put(type: ObjectType, name: string, data: Uint8Array, opts: PutOptions = {}): Promise<boolean> {
    return this.store(type, name, data, null, opts.nameDurable !== false);
  }

  /** The temp file is written and fsynced while `after` runs; linked (and the directory fsynced) once it resolves. */
  putAfter(type: ObjectType, name: string, data: Uint8Array, after: Promise<unknown>): Promise<boolean> {
    return this.store(type, name, data, after, true);
  }

  openWriter(type: ObjectType): ObjectWriter {
    checkType(type);
    return new LocalObjectWriter(join(this.root, 'tmp', `${type}.${randomBytes(6).toString('hex')}.part`), {
      open: this.openFile,
      syncEvery: this.streamSyncBytes,
      publish: (tmp, name, after) => this.publish(tmp, type, name, after, true),
      fail: (err, name) => this.mapError(err, 'put', type, name),
    });
  }

  private async store(type: ObjectType, name: string, data: Uint8Array, after: Promise<unknown> | null, syncDir: boolean): Promise<boolean> {
    checkName(type, name);
    after?.catch(() => undefined); // observed below
    const final = this.path(type, name);
    if (await exists(final)) {
      await after;
      return false;
    }
    const tmpDir = join(this.root, 'tmp');
    const tmp = join(tmpDir, `${name}.${randomBytes(6).toString('hex')}`);
    try {
      await this.writeTemp(tmp, data);
    } catch (err) {
      await unlink(tmp).catch(() => undefined);
      await after?.catch(() => undefined);
      throw this.mapError(err, 'put', type, name);
    }
    return this.publish(tmp, type, name, after, syncDir);
  }

  /** Link the written, fsynced temp file `tmp` under (type, name) once `after` resolves; on any failure remove it. */
  private async publish(tmp: string, type: ObjectType, name: string, after: Promise<unknown> | null | undefined, syncDir: boolean): Promise<boolean> {
    try {
      checkName(type, name);
      await after;
    } catch (err) {
      await unlink(tmp).catch(() => undefined);
      throw err; // a bad name, or what we waited for failed: publish nothing
    }
    try {
      return await this.commit(tmp, this.path(type, name), syncDir);
    } catch (err) {
      await unlink(tmp).catch(() => undefined);
      throw this.mapError(err, 'put', type, name);
    }
  }

  async get(type: ObjectType, name: string): Promise<Buffer> {
    checkName(type, name);
    try {
      return await readFile(this.path(type, name));
    } catch (err) {
      throw this.mapError(err, 'get', type, name);
    }
  }

  async getRange(type: ObjectType, name: string, offset: number, length: number, into?: Uint8Array): Promise<Buffer> {
    checkName(type, name);
    if (into && into.length < length) throw new RangeError(`getRange: target of ${into.length} bytes cannot hold ${length}`);
    let fh;
    try {
      fh = await this.openFile(this.path(type, name), 'r');
    } catch (err) {
      throw this.mapError(err, 'get', type, name);
    }
    try {
      const buf = into ? Buffer.from(into.buffer, into.byteOffset, length) : Buffer.allocUnsafe(length);
      let got = 0;
      while (got < length) {
        const { bytesRead } = await fh.read(buf, got, length - got, offset + got);
        if (bytesRead === 0) break;
        got += bytesRead;
      }
      return got === length ? buf : buf.subarray(0, got);
    } catch (err) {
      throw this.mapError(err, 'get', type, name);
    } finally {
      await fh.close();
    }
  }

  async has(type: ObjectType, name: string): Promise<boolean> {
    checkName(type, name);
    return exists(this.path(type, name));
  }

  async *list(type: ObjectType): AsyncIterable<string> {
    checkType(type);
    const base = join(this.root, type);
    const dirs = FANNED.has(type) ? (await readdirOrEmpty(base)).filter((d) => /^[0-9a-zA-Z._-]{2}$/.test(d)).map((d) => join(base, d)) : [base];
    for (const d of dirs) {
      for (const name of await readdirOrEmpty(d)) {
        if (!name.startsWith('.')) yield name;
      }
    }
  }

  async remove(type: ObjectType, name: string): Promise<void> {
    checkName(type, name);
    try {
      await unlink(this.path(type, name));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw this.mapError(err, 'remove', type, name);
    }
  }

  async stat(type: ObjectType, name: string): Promise<ObjectInfo> {
    checkName(type, name);
    try {
      const st = await stat(this.path(type, name));
      return { type, name, size: st.size, mtimeMs: st.mtimeMs };
    } catch (err) {
      throw this.mapError(err, 'stat', type, name);
    }
  }

  async cleanup(olderThanMs: number): Promise<number> {
    const dir = join(this.root, 'tmp');
    let n = 0;
    for (const name of await readdirOrEmpty(dir)) {
      const p = join(dir, name);
      const st = await stat(p).catch(() => null);
      if (st && Date.now() - st.mtimeMs >= olderThanMs) {
        await unlink(p).catch(() => undefined);
        n++;
      }
    }
    return n;
  }

  private async writeTemp(tmp: string, data: Uint8Array): Promise<void> {
    await writeNewFile(tmp, data, { sync: true, open: this.openFile });
  }

  /** Publish the temp file under its final name without replacing anything. */
  /**
   * Publish the temp file under its final name without replacing anything; with `syncDir` make the
   * name durable (fsync its directory — and the parent too when the directory had to be created, or
   * the new directory's own entry could be lost in a crash).
   */
  private async commit(tmp: string, final: string, syncDir: boolean): Promise<boolean> {
    let created: boolean;
    let madeFrom: string | undefined; // the topmost directory mkdir created
    try {
      created = await linkNoReplace(tmp, final);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      madeFrom = await mkdir(dirname(final), { recursive: true });
      created = await linkNoReplace(tmp, final);
    }
    await unlink(tmp).catch(() => undefined);
    if (created && syncDir) {
      await fsyncDir(dirname(final));
      // Each directory created here is an entry in its parent: make those durable too (rare: once per fan-out dir).
      for (let d = dirname(final); madeFrom !== undefined; d = dirname(d)) {
        await fsyncDir(dirname(d));
        if (d === madeFrom || dirname(d) === d) break;
      }
    }
    return created;
  }

  private mapError(err: unknown, op: string, type: ObjectType, name: string): Error {
    const code = (err as NodeJS.ErrnoException)?.code;
    if (code === 'ENOENT' && op !== 'put') return new ObjectNotFoundError(this.location, type, name);
    if (code === 'ENOSPC' || code === 'EDQUOT') return new NoSpaceError(this.location, type, name, { cause: err });
    if (err instanceof Error && 'exitCode' in err) return err;
    return new BackendIOError(this.location, op, `${type}/${name}`, err);
  }
}

async function linkNoReplace(tmp: string, final: string): Promise<boolean> {
  try {
    await link(tmp, final);
    return true;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') return false;
    if (code !== 'EPERM' && code !== 'ENOTSUP' && code !== 'EOPNOTSUPP' && code !== 'EMLINK') throw err;
    if (await exists(final)) return false;
    await rename(tmp, final);
    return true;
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

async function readdirOrEmpty(dir: string): Promise<string[]> {
  try {
    return await readdir(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
}
