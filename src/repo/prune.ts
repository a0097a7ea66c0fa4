/**
 * forget and prune.
 *
 * forget: apply a policy and remove the manifests it drops. Removing a manifest never breaks another
 * one (objects are shared, not owned), so forget needs only a shared lock.
 *
 * prune: mark and sweep under an EXCLUSIVE lock.
 *   mark  — load every manifest (a damaged one aborts prune: its references are unknown) and walk every
 *           index tree, collecting referenced pages and chunks (a damaged page aborts too).
 *   sweep — list `index` and `chunks`; remove objects not marked AND older than the grace period.
 * Why it is safe against a concurrent backup: backups hold shared locks for their whole run, so prune
 * cannot start while one runs, and a backup cannot start while prune runs. The grace period (2 h by
 * default, > the lock staleness of 30 min) additionally protects objects written by a backup whose
 * lock was wrongly judged stale (a paused process, a clock skew): young unreferenced objects are left
 * for the next prune. Objects are removed chunks first, then pages, so a crash mid-sweep leaves only
 * unreferenced pages pointing at already-deleted unreferenced chunks — still garbage, never reachable.
 */
import { PRUNE_GRACE_MS } from './constants.js';
import { IndexTree } from './IndexTree.js';
import { listSnapshots, type Snapshot } from './Manifest.js';
import { applyForgetPolicy, policyIsEmpty, type ForgetPolicy } from './forgetPolicy.js';
import { RepoLock } from './RepoLock.js';
import type { Repository } from './Repository.js';

export interface ForgetResult {
  kept: Array<{ snapshot: Snapshot; reasons: string[] }>;
  removed: Snapshot[];
}

export async function forget(repo: Repository, policy: ForgetPolicy, opts: { dryRun?: boolean; groupBy?: (s: Snapshot) => string } = {}): Promise<ForgetResult> {
  if (policyIsEmpty(policy)) return { kept: (await listSnapshots(repo)).map((s) => ({ snapshot: s, reasons: ['no policy'] })), removed: [] };
  const lock = opts.dryRun ? null : await RepoLock.acquire(repo, { exclusive: false });
  try {
    const d = applyForgetPolicy(await listSnapshots(repo), policy, opts.groupBy);
    if (!opts.dryRun) for (const s of d.remove) await repo.backend.remove('snapshots', s.id);
    return { kept: d.keep, removed: d.remove };
  } finally {
    await lock?.release();
  }
}

export interface PruneOptions {
  /** Keep unreferenced objects younger than this (default 2 h). */
  graceMs?: number;
  dryRun?: boolean;
  /** Clock (tests). */
  now?: number;
  onProgress?: (p: { phase: 'mark' | 'sweep'; done: number }) => void;
}

export interface PruneResult {
  snapshots: number;
  referencedPages: number;
  referencedChunks: number;
  removedChunks: number;
  removedPages: number;
  bytesFreed: number;
  /** Unreferenced objects kept because they are younger than the grace period. */
  keptYoung: number;
  /** Leftovers of interrupted puts removed by the backend (older than the grace period). */
  tempFilesRemoved: number;
}

export async function prune(repo: Repository, opts: PruneOptions = {}): Promise<PruneResult> {
  const grace = opts.graceMs ?? PRUNE_GRACE_MS;
  const lock = await RepoLock.acquire(repo, { exclusive: true });
  try {
    const now = opts.now ?? Date.now();
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
    const result: PruneResult = { snapshots: snapshots.length, referencedPages: pages.size, referencedChunks: chunks.size, removedChunks: 0, removedPages: 0, bytesFreed: 0, keptYoung: 0, tempFilesRemoved: 0 };
    for (const [type, marked] of [['chunks', chunks], ['index', pages]] as const) {
      const names: string[] = [];
      for await (const name of repo.backend.list(type)) if (!marked.has(name)) names.push(name);
      for (const name of names) {
        const st = await repo.backend.stat(type, name).catch(() => null);
        if (!st) continue;
        if (now - st.mtimeMs < grace) {
          result.keptYoung++;
          continue;
        }
        if (!opts.dryRun) await repo.backend.remove(type, name);
        if (type === 'chunks') result.removedChunks++;
        else result.removedPages++;
        result.bytesFreed += st.size;
        opts.onProgress?.({ phase: 'sweep', done: result.removedChunks + result.removedPages });
      }
    }
    if (!opts.dryRun && repo.backend.cleanup) result.tempFilesRemoved = await repo.backend.cleanup(grace);
    repo.forgetCache();
    return result;
  } finally {
    await lock.release();
  }
}
