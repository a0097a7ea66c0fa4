/**
 * verifyRepository: check that every restore point can be restored, and name the damage.
 *
 * 1. Load every manifest (verified by digest).
 * 2. Walk every disk's index tree once per distinct page (shared pages are read once), verifying each
 *    page and collecting the chunks the leaves reference.
 * 0. Load every pack index (an unreadable one is a problem of type `packindex`).
 * 3. Check each referenced chunk: indexed and its pack present (one listing of `packs`), or with
 *    `readData` read every pack holding referenced chunks once, decode and verify each referenced
 *    blob (digest, AES-GCM tag) and check the pack's hash.
 * 4. Attribute every bad object to each snapshot that reaches it (memoised over the page graph), so
 *    the report says which restore points are affected.
 * Unreferenced objects are not errors (garbage from interrupted backups; prune removes them).
 */
import { ObjectNotFoundError } from '../backend/errors.js';
import { ObjectKind, ZERO_DIGEST } from './constants.js';
import { decodeObject } from './ObjectCodec.js';
import { packId } from './PackFormat.js';
import type { BlobLocation } from './PackStore.js';
import { CorruptObjectError } from './errors.js';
import { readIndexPage, treeDepth } from './IndexTree.js';
import { loadManifest, type Snapshot } from './Manifest.js';
import type { Repository } from './Repository.js';
import { RepoLock } from './RepoLock.js';

export interface VerifyProblem {
  /** `packs`: a pack whose bytes no longer hash to its name (damage outside any referenced blob); `packindex`: an unreadable pack index. */
  type: 'snapshots' | 'index' | 'chunks' | 'packs' | 'packindex';
  name: string;
  problem: 'missing' | 'corrupt';
  message: string;
  /** Ids of the snapshots that cannot be fully restored because of this object. */
  snapshots: string[];
}

export interface VerifyReport {
  ok: boolean;
  snapshots: number;
  pages: number;
  chunks: number;
  /** Bytes of chunk data read (readData). */
  bytesRead: number;
  problems: VerifyProblem[];
}

export interface VerifyOptions {
  /** Read and verify every referenced chunk (default: only check that it exists). */
  readData?: boolean;
  concurrency?: number;
  onProgress?: (p: { phase: 'snapshots' | 'index' | 'chunks'; done: number; total: number }) => void;
}

/**
 * Check the repository (see the file comment). Holds a shared repository lock while it runs, so a prune
 * (exclusive) cannot sweep objects out from under it and make them look missing; a concurrent forget
 * (shared) may remove manifests, which are then skipped, not reported.
 */
export async function verifyRepository(repo: Repository, opts: VerifyOptions = {}): Promise<VerifyReport> {
  const lock = await RepoLock.acquire(repo, { exclusive: false });
  try {
    return await verifyLocked(repo, opts);
  } finally {
    await lock.release();
  }
}

async function verifyLocked(repo: Repository, opts: VerifyOptions): Promise<VerifyReport> {
  const concurrency = Math.max(1, opts.concurrency ?? 8);
  const problems = new Map<string, VerifyProblem>();
  const record = (type: VerifyProblem['type'], name: string, err: unknown): void => {
    const missing = err instanceof ObjectNotFoundError;
    if (!missing && !(err instanceof CorruptObjectError)) throw err; // an operational failure, not damage
    problems.set(`${type}/${name}`, { type, name, problem: missing ? 'missing' : 'corrupt', message: (err as Error).message, snapshots: [] });
  };

  // 0. pack indexes (an unreadable one makes its blobs look missing; reported itself too)
  repo.forgetCache({ readAll: true }); // every pack index is read and checked, not the local cache
  await repo.packs.ensureLoaded();
  for (const p of repo.packs.indexProblems) record('packindex', p.name, p.error);

  // 1. manifests
  const snapshots: Snapshot[] = [];
  const ids: string[] = [];
  for await (const id of repo.backend.list('snapshots')) ids.push(id);
  for (const id of ids) {
    try {
      snapshots.push(await loadManifest(repo, id));
    } catch (err) {
      // Listed, then gone: a concurrent forget removed it (forget holds only a shared lock) — not damage.
      if (err instanceof ObjectNotFoundError) continue;
      record('snapshots', id, err);
      problems.get(`snapshots/${id}`)!.snapshots.push(id);
    }
    opts.onProgress?.({ phase: 'snapshots', done: snapshots.length, total: ids.length });
  }

  // 2. pages: children of each page (page digest -> child digests, or chunk digests at leaves)
  const children = new Map<string, string[]>();
  const chunks = new Set<string>();
  const walk = async (digest: string, level: number, fanout: number): Promise<void> => {
    if (digest === ZERO_DIGEST || children.has(digest) || problems.has(`index/${digest}`)) return;
    let entries: string[];
    try {
      entries = (await readIndexPage(repo, digest, level, fanout)).filter((e) => e !== ZERO_DIGEST);
    } catch (err) {
      record('index', digest, err);
      return;
    }
    children.set(digest, entries);
    opts.onProgress?.({ phase: 'index', done: children.size, total: 0 });
    if (level === 0) for (const c of entries) chunks.add(c);
    else for (const c of entries) await walk(c, level - 1, fanout);
  };
  for (const s of snapshots) for (const d of s.disks) await walk(d.indexRoot, treeDepth(d), d.fanout);

  // 3. chunks: indexed, in a pack that exists; with readData each pack holding referenced chunks is
  //    read once, its hash checked, and every referenced blob in it decoded (digest / AES-GCM tag).
  let bytesRead = 0;
  const present = new Set<string>();
  for await (const name of repo.backend.list('packs')) present.add(name);
  const byPack = new Map<string, BlobLocation[]>();
  for (const c of chunks) {
    const loc = repo.packs.locate(ObjectKind.chunk, c);
    if (!loc || !present.has(loc.pack)) {
      record('chunks', c, new ObjectNotFoundError(repo.location, 'chunks', c));
      continue;
    }
    if (!opts.readData) continue;
    const list = byPack.get(loc.pack) ?? [];
    list.push(loc);
    byPack.set(loc.pack, list);
  }
  if (opts.readData) {
    const packs = [...byPack];
    let next = 0;
    let done = 0;
    const worker = async (): Promise<void> => {
      while (next < packs.length) {
        const [id, locs] = packs[next++];
        let bytes: Buffer;
        try {
          bytes = await repo.backend.get('packs', id);
        } catch (err) {
          if (!(err instanceof ObjectNotFoundError)) throw err;
          for (const l of locs) record('chunks', l.digest, new ObjectNotFoundError(repo.location, 'chunks', l.digest));
          continue;
        }
        bytesRead += bytes.length;
        let damagedBlobs = 0;
        for (const l of locs) {
          try {
            decodeObject({ location: repo.location, type: 'chunks', name: l.digest }, ObjectKind.chunk, bytes.subarray(l.offset, l.offset + l.length), repo.objectKeys);
          } catch (err) {
            if (err instanceof CorruptObjectError) Object.assign(err.data, { pack: id, offset: l.offset });
            record('chunks', l.digest, err);
            damagedBlobs++;
          }
        }
        const known = (repo.packs.indexedPacks.get(id) ?? []).some((e) => problems.has(`${e.kind === ObjectKind.chunk ? 'chunks' : 'index'}/${e.digest}`));
        if (damagedBlobs === 0 && !known && packId(bytes) !== id) {
          record('packs', id, new CorruptObjectError(repo.location, 'packs', id, 'pack content does not hash to its name (damage outside the referenced chunks: header or unreferenced blobs)'));
        }
        opts.onProgress?.({ phase: 'chunks', done: (done += locs.length), total: chunks.size });
      }
    };
    await Promise.all(Array.from({ length: Math.min(concurrency, 2) }, worker));
  }

  // 4. attribute damage to snapshots
  const reach = new Map<string, string[]>(); // page -> bad objects below it (memo)
  const badBelow = (digest: string): string[] => {
    if (digest === ZERO_DIGEST) return [];
    const memo = reach.get(digest);
    if (memo) return memo;
    let out: string[] = [];
    if (problems.has(`index/${digest}`)) out = [`index/${digest}`];
    else {
      const kids = children.get(digest) ?? [];
      const bad = new Set<string>();
      for (const k of kids) {
        if (problems.has(`chunks/${k}`)) bad.add(`chunks/${k}`);
        else if (children.has(k) || problems.has(`index/${k}`)) for (const b of badBelow(k)) bad.add(b);
      }
      out = [...bad];
    }
    reach.set(digest, out);
    return out;
  };
  for (const s of snapshots) {
    const bad = new Set<string>();
    for (const d of s.disks) for (const b of badBelow(d.indexRoot)) bad.add(b);
    for (const b of bad) problems.get(b)!.snapshots.push(s.id);
  }

  const list = [...problems.values()];
  return { ok: list.length === 0, snapshots: ids.length, pages: children.size, chunks: chunks.size, bytesRead, problems: list };
}
