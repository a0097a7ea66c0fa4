import { createHash, randomBytes } from 'node:crypto';
import type { Backend, ObjectType } from '../../src/backend/Backend.js';
import type { BlockDevice } from '../../src/blockdev/BlockDevice.js';
import { open } from 'node:fs/promises';
import { LocalBackend } from '../../src/backend/LocalBackend.js';
import { MemoryBackend } from '../../src/backend/MemoryBackend.js';
import { ObjectKind } from '../../src/repo/constants.js';
import { PackStore, type BlobLocation } from '../../src/repo/PackStore.js';
import { Repository, type InitOptions } from '../../src/repo/Repository.js';

/** Cheap scrypt for tests (the format stores the parameters; production uses N=2^15). */
export const FAST_SCRYPT = { N: 1024, r: 8, p: 1 };

export function initRepo(backend: Backend, opts: InitOptions = {}): Promise<Repository> {
  return Repository.init(backend, { scrypt: FAST_SCRYPT, ...opts });
}

/** SHA-256 of a device's whole content, read in 1 MiB pieces, skipping holes. */
export async function deviceHash(dev: BlockDevice, size = dev.size): Promise<string> {
  const h = createHash('sha256');
  const extents = await dev.extents(0, size);
  const zero = Buffer.alloc(1 << 20);
  for (const e of extents) {
    for (let off = e.offset; off < e.offset + e.length; off += 1 << 20) {
      const len = Math.min(1 << 20, e.offset + e.length - off);
      h.update(e.type === 'data' ? await dev.read(off, len) : zero.subarray(0, len));
    }
  }
  return h.digest('hex');
}

/** Total bytes and count of objects per type. */
export async function usage(backend: Backend): Promise<Record<string, { count: number; bytes: number }>> {
  const out: Record<string, { count: number; bytes: number }> = {};
  for (const type of ['packs', 'packindex', 'snapshots', 'locks', 'keys', 'config'] as const) {
    let count = 0;
    let bytes = 0;
    for await (const name of backend.list(type)) {
      count++;
      bytes += (await backend.stat(type, name)).size;
    }
    out[type] = { count, bytes };
  }
  return out;
}

/**
 * Names of the durable objects of a type: snapshots from the backend listing; chunks and index pages
 * from a fresh read of the pack indexes (only blobs whose pack file exists).
 */
export async function objectNames(repo: Repository, type: 'chunks' | 'index' | 'snapshots'): Promise<Set<string>> {
  const s = new Set<string>();
  if (type === 'snapshots') {
    for await (const n of repo.backend.list(type)) s.add(n);
    return s;
  }
  const store = new PackStore(repo.backend, repo.objectKeys);
  await store.ensureLoaded();
  const kind = type === 'chunks' ? ObjectKind.chunk : ObjectKind.indexPage;
  for (const [id, entries] of store.indexedPacks) {
    if (!(await repo.backend.has('packs', id))) continue;
    for (const e of entries) if (e.kind === kind) s.add(e.digest);
  }
  return s;
}

/** Where a durable blob is stored (fresh read of the pack indexes). */
export async function locateBlob(repo: Repository, type: 'chunks' | 'index', digest: string): Promise<BlobLocation> {
  const store = new PackStore(repo.backend, repo.objectKeys);
  await store.ensureLoaded();
  const loc = store.locate(type === 'chunks' ? ObjectKind.chunk : ObjectKind.indexPage, digest);
  if (!loc) throw new Error(`${type}/${digest} is not in any pack index`);
  return loc;
}

/** Flip one byte of a stored blob, `at` bytes into its envelope, in its pack (Memory or Local backend). */
export async function flipBlobByte(repo: Repository, type: 'chunks' | 'index', digest: string, at: number): Promise<BlobLocation> {
  const loc = await locateBlob(repo, type, digest);
  const b = repo.backend;
  if (b instanceof MemoryBackend) b.raw('packs', loc.pack)[loc.offset + at] ^= 1;
  else if (b instanceof LocalBackend) {
    const fh = await open(b.path('packs', loc.pack), 'r+');
    try {
      const one = Buffer.alloc(1);
      await fh.read(one, 0, 1, loc.offset + at);
      one[0] ^= 1;
      await fh.write(one, 0, 1, loc.offset + at);
    } finally {
      await fh.close();
    }
  } else throw new Error('flipBlobByte: Memory or Local backend only');
  return loc;
}

/** A deterministic pseudo-random generator (xorshift32) so tests repeat. */
/**
 * Record the object types `backend` publishes, in the order their puts, putAfters and streamed
 * writers' commits resolve: the repository's write-ordering invariants, observed on a real LocalBackend.
 * `starting(type)` runs as each of them starts (a test can abort there).
 */
export function recordPublishOrder(backend: LocalBackend, starting: (type: ObjectType) => void = () => undefined): string[] {
  const order: string[] = [];
  const put = backend.put.bind(backend);
  const putAfter = backend.putAfter.bind(backend);
  const openWriter = backend.openWriter.bind(backend);
  backend.put = async (type, name, data, o) => {
    starting(type);
    const r = await put(type, name, data, o);
    order.push(type);
    return r;
  };
  backend.putAfter = async (type, name, data, after) => {
    starting(type);
    const r = await putAfter(type, name, data, after);
    order.push(type);
    return r;
  };
  backend.openWriter = (type) => {
    const w = openWriter(type);
    return {
      write: (data) => w.write(data),
      abort: () => w.abort(),
      commit: async (name, after) => {
        starting(type);
        const r = await w.commit(name, after);
        order.push(type);
        return r;
      },
    };
  };
  return order;
}

export function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x / 0x100000000;
  };
}

export function randomData(n: number): Buffer {
  return randomBytes(n);
}

/**
 * Whether two devices hold the same bytes, reading only where either has data (holes on both sides
 * are equal without reading, so huge sparse devices compare quickly).
 */
export async function sameContent(a: BlockDevice, b: BlockDevice): Promise<boolean> {
  if (a.size !== b.size) return false;
  const ranges = [...(await a.extents(0, a.size)), ...(await b.extents(0, b.size))].filter((e) => e.type === 'data').sort((x, y) => x.offset - y.offset);
  let covered = 0;
  for (const r of ranges) {
    const start = Math.max(r.offset, covered);
    const end = r.offset + r.length;
    for (let off = start; off < end; off += 1 << 20) {
      const len = Math.min(1 << 20, end - off);
      if (!(await a.read(off, len)).equals(await b.read(off, len))) return false;
    }
    covered = Math.max(covered, end);
  }
  return true;
}
