/**
 * forget and prune.
 *
 * forget: apply a policy and remove the manifests it drops. Removing a manifest never breaks another
 * one (objects are shared, not owned), so forget needs only a shared lock.
 *
 * prune: mark and sweep under an EXCLUSIVE lock.
 *   mark  — load every pack index (an unreadable one aborts prune: which packs are live would be
 *           unknown) and every manifest (a damaged one aborts: its references are unknown), and walk
 *           every index tree, collecting referenced pages and chunks (a damaged page aborts too).
 *   sweep — per pack older than the grace period: no referenced blob -> delete; at least
 *           `repackUnused` (20%) of its bytes unreferenced -> copy the live blobs (verified) into new
 *           packs, then delete; else keep. Packs no index names and older than the grace period are
 *           deleted. Order: new packs durable -> a new pack index of everything kept durable -> old
 *           pack indexes removed -> old packs removed. A crash at any step leaves duplicates (two
 *           indexes naming a blob) or unindexed packs: garbage for the next prune, never a lost blob.
 * Why it is safe against a concurrent backup: backups hold shared locks for their whole run, so prune
 * cannot start while one runs, and a backup cannot start while prune runs. The grace period (2 h by
 * default, > the lock staleness of 30 min) additionally protects objects written by a backup whose
 * lock was wrongly judged stale (a paused process, a clock skew): young unreferenced objects are left
 * for the next prune (young packs are kept whole, with every entry in the new index).
 */
import { ObjectKind, PACK_INDEX_MAX_ENTRIES, PACK_TARGET_SIZE, PRUNE_GRACE_MS, PRUNE_REPACK_UNUSED } from './constants.js';
import { decodeObject } from './ObjectCodec.js';
import type { BlobKind, PackEntry, PackIndexPack } from './PackFormat.js';
import type { BlobLocation } from './PackStore.js';
import { IndexTree } from './IndexTree.js';
import { listSnapshots, type Snapshot } from './Manifest.js';
import { applyForgetPolicy, policyIsEmpty, type ForgetPolicy } from './forgetPolicy.js';
import { RepoLock } from './RepoLock.js';
import { NotFoundError, UsageError } from '../errors.js';
import type { Repository } from './Repository.js';

export interface ForgetResult {
  kept: Array<{ snapshot: Snapshot; reasons: string[] }>;
  removed: Snapshot[];
  /** Manifests that could not be read (skipped by the policy; remove them with `ids`). */
  damaged: Array<{ id: string; message: string }>;
  /** Manifests removed by id (`ids`), readable or not. */
  removedIds: string[];
}

export interface ForgetOptions {
  dryRun?: boolean;
  groupBy?: (s: Snapshot) => string;
  /**
   * Remove these snapshots (full ids or unique prefixes of >= 4 characters) whatever the policy says —
   * also damaged manifests, which cannot be loaded and so never match a policy.
   */
  ids?: string[];
}

/**
 * Apply a retention policy (and/or remove snapshots by id) under a shared lock: manifests are removed,
 * data stays until `prune`. A damaged manifest does not stop forget: it is reported in `damaged` and
 * kept unless named in `ids`.
 */
export async function forget(repo: Repository, policy: ForgetPolicy, opts: ForgetOptions = {}): Promise<ForgetResult> {
  const lock = opts.dryRun ? null : await RepoLock.acquire(repo, { exclusive: false });
  try {
    const damaged: ForgetResult['damaged'] = [];
    const all = await listSnapshots(repo, { onDamaged: (id, err) => damaged.push({ id, message: err.message }) });
    const removedIds = await resolveIds(repo, opts.ids ?? []);
    const named = new Set(removedIds);
    const rest = all.filter((s) => !named.has(s.id));
    const d = policyIsEmpty(policy) ? { keep: rest.map((s) => ({ snapshot: s, reasons: ['no policy'] })), remove: [] as Snapshot[] } : applyForgetPolicy(rest, policy, opts.groupBy);
    if (!opts.dryRun) {
      for (const id of removedIds) await repo.backend.remove('snapshots', id);
      for (const s of d.remove) await repo.backend.remove('snapshots', s.id);
    }
    return { kept: d.keep, removed: d.remove, damaged: damaged.filter((x) => !named.has(x.id)), removedIds };
  } finally {
    await lock?.release();
  }
}

/** Full manifest names for ids or unique prefixes (listing only: damaged manifests resolve too). */
async function resolveIds(repo: Repository, ids: string[]): Promise<string[]> {
  if (ids.length === 0) return [];
  const names: string[] = [];
  for await (const n of repo.backend.list('snapshots')) names.push(n);
  return ids.map((id) => {
    const m = names.filter((n) => n.startsWith(id));
    if (id.length < 4 || m.length > 1) throw new UsageError(`snapshot id ${id} is ${id.length < 4 ? 'too short' : 'ambiguous'}; give at least 4 characters that match one snapshot`);
    if (m.length === 0) throw new NotFoundError(`snapshot ${id}`, 'list snapshots to see the ids');
    return m[0]!;
  });
}

export interface PruneOptions {
  /** Keep unreferenced objects younger than this (default 2 h). */
  graceMs?: number;
  dryRun?: boolean;
  /** Clock (tests). */
  now?: number;
  /** Repack a pack when at least this fraction of its blob bytes is unreferenced (default 0.2; 0: any garbage). */
  repackUnused?: number;
  onProgress?: (p: { phase: 'mark' | 'sweep'; done: number }) => void;
}

export interface PruneResult {
  snapshots: number;
  referencedPages: number;
  referencedChunks: number;
  /** Unreferenced chunks / index pages dropped (with their packs, or by repacking). */
  removedChunks: number;
  removedPages: number;
  /** Packs deleted (all blobs unreferenced, or repacked, or never indexed). */
  removedPacks: number;
  /** Packs whose live blobs were copied into new packs before deleting them. */
  repackedPacks: number;
  /** Bytes of deleted packs minus bytes of the new packs. */
  bytesFreed: number;
  /** Unreferenced blobs (and unindexed packs) kept because they are younger than the grace period. */
  keptYoung: number;
  /** Leftovers of interrupted puts removed by the backend (older than the grace period). */
  tempFilesRemoved: number;
}

export async function prune(repo: Repository, opts: PruneOptions = {}): Promise<PruneResult> {
  const grace = opts.graceMs ?? PRUNE_GRACE_MS;
  const threshold = opts.repackUnused ?? PRUNE_REPACK_UNUSED;
  const lock = await RepoLock.acquire(repo, { exclusive: true });
  try {
    const now = opts.now ?? Date.now();
    repo.forgetCache({ readAll: true }); // must see every pack index, damaged ones included
    const store = repo.packs;
    await store.ensureLoaded();
    // An unreadable pack index hides which packs are live: deleting "unindexed" packs would be unsafe.
    if (store.indexProblems.length > 0) throw store.indexProblems[0].error;

    // mark
    const snapshots = await listSnapshots(repo);
    const pages = new Set<string>();
    const chunks = new Set<string>();
    for (const s of snapshots) {
      for (const d of s.disks) {
        for await (const p of IndexTree.open(repo, d).pages(pages)) {
          if (p.level === 0) for (const e of p.entries) chunks.add(e);
          opts.onProgress?.({ phase: 'mark', done: pages.size });
        }
      }
    }
    const result: PruneResult = { snapshots: snapshots.length, referencedPages: pages.size, referencedChunks: chunks.size, removedChunks: 0, removedPages: 0, removedPacks: 0, repackedPacks: 0, bytesFreed: 0, keptYoung: 0, tempFilesRemoved: 0 };
    const referenced = (e: PackEntry): boolean => (e.kind === ObjectKind.chunk ? chunks : pages).has(e.digest);

    // Which packs exist, and how old they are.
    const stored = new Map<string, { size: number; mtimeMs: number }>();
    for await (const name of repo.backend.list('packs')) {
      const st = await repo.backend.stat('packs', name).catch(() => null);
      if (st) stored.set(name, { size: st.size, mtimeMs: st.mtimeMs });
    }

    // Plan: young packs keep everything; each referenced blob is kept once, preferring the packs with
    // the largest live fraction; a pack with no kept blob is deleted, one with too much garbage repacked.
    // A pack named by several pack indexes (a flush racing a seal, a crash between a pack and its
    // index) is listed with its entries repeated: one entry per (kind, digest, offset) is the pack.
    // Counted twice, its blobs would look half garbage and the pack would be "repacked" into an
    // identical pack (same id: put keeps the existing one) and then deleted with the live blobs.
    const indexed = [...store.indexedPacks].filter(([id]) => stored.has(id)).map(([id, entries]): [string, readonly BlobLocation[]] => {
      const seen = new Set<string>();
      return [id, entries.filter((e) => !seen.has(`${e.kind}:${e.digest}:${e.offset}`) && !!seen.add(`${e.kind}:${e.digest}:${e.offset}`))];
    });
    const kept = new Set<string>();
    const blobKey = (e: PackEntry): string => `${e.kind}${e.digest}`;
    const young = (id: string): boolean => now - stored.get(id)!.mtimeMs < grace;
    for (const [id, entries] of indexed) {
      if (!young(id)) continue;
      for (const e of entries) {
        kept.add(blobKey(e));
        if (!referenced(e)) result.keptYoung++;
      }
    }
    const liveFraction = (entries: readonly PackEntry[]): number => entries.filter(referenced).length / Math.max(1, entries.length);
    const old = indexed.filter(([id]) => !young(id)).sort((a, b) => liveFraction(b[1]) - liveFraction(a[1]));
    const keepPacks: Array<[string, readonly BlobLocation[]]> = indexed.filter(([id]) => young(id));
    const deletePacks: string[] = [];
    const repack: Array<{ id: string; live: BlobLocation[] }> = [];
    const countDropped = (entries: readonly PackEntry[], live: ReadonlySet<PackEntry>): void => {
      for (const e of entries) {
        if (live.has(e) || referenced(e)) continue; // kept here, or a duplicate of a blob kept elsewhere
        if (e.kind === ObjectKind.chunk) result.removedChunks++;
        else result.removedPages++;
      }
    };
    for (const [id, entries] of old) {
      const live = new Set<BlobLocation>();
      for (const e of entries) {
        if (referenced(e) && !kept.has(blobKey(e))) {
          kept.add(blobKey(e));
          live.add(e);
        }
      }
      let total = 0;
      let used = 0;
      for (const e of entries) {
        total += e.length;
        if (live.has(e)) used += e.length;
      }
      if (live.size === 0) {
        deletePacks.push(id);
        countDropped(entries, live);
      } else if (used < total && (total - used) / total >= threshold && (total - used) > 0) {
        repack.push({ id, live: entries.filter((e) => live.has(e)) });
        countDropped(entries, live);
      } else {
        keepPacks.push([id, entries]);
      }
    }
    // Packs no index names: written by an interrupted backup (or a prune). Old ones are garbage.
    const indexedIds = new Set(store.indexedPacks.keys());
    const unindexed: string[] = [];
    for (const [id, st] of stored) {
      if (indexedIds.has(id)) continue;
      if (now - st.mtimeMs < grace) result.keptYoung++;
      else unindexed.push(id);
    }
    const missing = [...store.indexedPacks.keys()].filter((id) => !stored.has(id));
    const changes = deletePacks.length + repack.length + unindexed.length + missing.length > 0;

    if (!opts.dryRun && changes) {
      // 1. Copy live blobs of repacked packs into new packs (each blob verified first: never spread damage).
      const newPacks: PackIndexPack[] = [];
      let batch: Array<{ kind: BlobKind; digest: string; bytes: Buffer }> = [];
      let batchSize = 0;
      const writeBatch = async (): Promise<void> => {
        if (batch.length === 0) return;
        const p = await store.writePack(batch);
        newPacks.push(p);
        result.bytesFreed -= batchSize;
        batch = [];
        batchSize = 0;
      };
      for (const r of repack) {
        const bytes = await repo.backend.get('packs', r.id);
        for (const e of r.live) {
          const blob = bytes.subarray(e.offset, e.offset + e.length);
          decodeObject({ location: repo.location, type: e.kind === ObjectKind.chunk ? 'chunks' : 'index', name: e.digest }, e.kind, blob, repo.objectKeys);
          batch.push({ kind: e.kind, digest: e.digest, bytes: Buffer.from(blob) });
          batchSize += e.length;
          if (batchSize >= PACK_TARGET_SIZE) await writeBatch();
        }
        result.repackedPacks++;
        opts.onProgress?.({ phase: 'sweep', done: result.repackedPacks });
      }
      await writeBatch();
      // 2. A new index of everything kept (durable), 3. then the old indexes go, 4. then the packs.
      const all: PackIndexPack[] = [...keepPacks.map(([id, entries]) => ({ id, entries: entries.map(({ kind, digest, offset, length }) => ({ kind, digest, offset, length })) })), ...newPacks];
      const oldIndexes = [...store.indexObjects];
      const newIndexes = new Set<string>();
      for (let i = 0; i < all.length; ) {
        const part: PackIndexPack[] = [];
        let n = 0;
        while (i < all.length && (part.length === 0 || n + all[i].entries.length <= PACK_INDEX_MAX_ENTRIES)) {
          n += all[i].entries.length;
          part.push(all[i++]);
        }
        newIndexes.add(await store.putIndex(part));
      }
      for (const name of oldIndexes) if (!newIndexes.has(name)) await repo.backend.remove('packindex', name);
      const written = new Set(newPacks.map((p) => p.id));
      for (const id of [...deletePacks, ...repack.map((r) => r.id), ...unindexed]) {
        if (written.has(id)) continue; // a repack that produced the very same pack: it is the new one
        result.bytesFreed += stored.get(id)!.size;
        result.removedPacks++;
        await repo.backend.remove('packs', id);
        opts.onProgress?.({ phase: 'sweep', done: result.removedPacks });
      }
    } else {
      result.repackedPacks = opts.dryRun ? repack.length : 0;
      result.removedPacks = opts.dryRun ? deletePacks.length + repack.length + unindexed.length : 0;
      if (opts.dryRun) for (const id of [...deletePacks, ...repack.map((r) => r.id), ...unindexed]) result.bytesFreed += stored.get(id)!.size;
    }
    if (!opts.dryRun && repo.backend.cleanup) result.tempFilesRemoved = await repo.backend.cleanup(grace);
    repo.forgetCache();
    return result;
  } finally {
    await lock.release();
  }
}
