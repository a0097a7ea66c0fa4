import { randomBytes } from 'node:crypto';
import { link, mkdir, open as fsOpen, readdir, readFile, rename, stat, unlink } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Backend, ObjectInfo, ObjectType } from './Backend.js';
import { checkName, checkType } from './checkName.js';
import { BackendIOError, NoSpaceError, ObjectNotFoundError } from './errors.js';
import { fsyncDir } from '../util/fsyncDir.js';
import { writeNewFile } from './writeNewFile.js';

/** Types with many objects get a 256-way fan-out by the first two characters of the name. */
const FANNED: ReadonlySet<ObjectType> = new Set<ObjectType>(['chunks', 'index', 'packs']);

export interface LocalBackendOptions {
  /** Test seam: how temp files are opened (inject a handle whose write fails with ENOSPC). */
  open?: typeof fsOpen;
}

/**
 * Objects as files in a directory tree:
 *
 *   <root>/config/config  <root>/keys/<id>  <root>/snapshots/<id>  <root>/locks/<id>
 *   <root>/packs/ab/ab12…  <root>/packindex/<id>  <root>/tmp/ (in-flight puts)
 *   (<root>/chunks/ab/… and <root>/index/cd/… for the generic chunks/index types)
 *
 * How `put` stays atomic and never overwrites: write `tmp/<name>.<random>`, fsync, then `link()` it
 * to the final name — link fails with EEXIST instead of replacing, so the first writer of a name wins
 * and a later put resolves `false` — then unlink the temp and fsync the directory. A failure at any
 * step removes the temp file, so a full disk leaves nothing behind. Filesystems without hard links
 * fall back to rename after an existence check (a tiny race between two writers of the same name,
 * harmless because names are content addresses).
 */
export class LocalBackend implements Backend {
  readonly location: string;
  private readonly openFile: typeof fsOpen;

  constructor(readonly root: string, opts: LocalBackendOptions = {}) {
    this.location = root;
    this.openFile = opts.open ?? fsOpen;
  }

  /** The file holding an object. */
  path(type: ObjectType, name: string): string {
    return FANNED.has(type) ? join(this.root, type, name.slice(0, 2), name) : join(this.root, type, name);
  }

  async put(type: ObjectType, name: string, data: Uint8Array): Promise<boolean> {
    checkName(type, name);
    const final = this.path(type, name);
    if (await exists(final)) return false;
    const tmpDir = join(this.root, 'tmp');
    const tmp = join(tmpDir, `${name}.${randomBytes(6).toString('hex')}`);
    try {
      await this.writeTemp(tmp, data);
      return await this.commit(tmp, final);
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

  async getRange(type: ObjectType, name: string, offset: number, length: number): Promise<Buffer> {
    checkName(type, name);
    let fh;
    try {
      fh = await this.openFile(this.path(type, name), 'r');
    } catch (err) {
      throw this.mapError(err, 'get', type, name);
    }
    try {
      const buf = Buffer.allocUnsafe(length);
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
  private async commit(tmp: string, final: string): Promise<boolean> {
    let created: boolean;
    try {
      created = await linkNoReplace(tmp, final);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      await mkdir(dirname(final), { recursive: true });
      created = await linkNoReplace(tmp, final);
    }
    await unlink(tmp).catch(() => undefined);
    if (created) await fsyncDir(dirname(final));
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
