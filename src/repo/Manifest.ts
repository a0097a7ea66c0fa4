/**
 * Manifests: one per restore point, a `snapshots` object (envelope, JSON inside) named by its digest,
 * which is the snapshot id. Written LAST, after every chunk and index page it references exists
 * (see docs/design.md (repo section) "Invariants"), so a visible snapshot never dangles.
 */
import { NotFoundError, UsageError } from '../errors.js';
import { ObjectNotFoundError } from '../backend/errors.js';
import { CorruptObjectError } from './errors.js';
import { isChunkSize, isFanout } from './RepoConfig.js';
import type { Repository } from './Repository.js';

export interface DiskEntry {
  /** The disk's name within the source (e.g. "disk0", "scsi0"). */
  name: string;
  size: number;
  chunkSize: number;
  fanout: number;
  /** Root digest of the index tree (ZERO_DIGEST for an all-zero disk). */
  indexRoot: string;
  /** The RCT ID this backup's changes were taken up to, for the next incremental. */
  rctId?: string;
  /** Machine snapshots: the disk's slot in the machine configuration (0..63, unique in the manifest). */
  slot?: number;
}

/**
 * Machine snapshots: the machine as it was registered. `config` is the machine configuration (schema 1,
 * src/vm/MachineConfig.ts) with the disk paths of the backed-up images; the repository layer checks only
 * its shape (an object), the restore validates it in full.
 */
export interface ManifestMachine {
  id: string;
  name: string;
  config: { [key: string]: unknown };
}

export interface BackupStats {
  /** Bytes read from the source devices. */
  bytesRead: number;
  chunksWritten: number;
  chunkBytesWritten: number;
  chunksDeduplicated: number;
  pagesWritten: number;
  pageBytesWritten: number;
  durationMs: number;
}

export interface Manifest {
  version: 1;
  /** ISO time the backup started. */
  time: string;
  host: string;
  source: { id: string; name: string; kind?: string };
  disks: DiskEntry[];
  stats?: Partial<BackupStats>;
  /** The snapshot this one was taken incrementally from. */
  parent?: string;
  tags?: string[];
  /** Present on machine snapshots (`tidemark backup <vm>`): every disk entry then has a `slot`. */
  machine?: ManifestMachine;
}

/** A manifest together with its id (= object name). */
export interface Snapshot extends Manifest {
  id: string;
}

const HEX64 = /^[0-9a-f]{64}$/;

/** Check a manifest's shape; returns a problem description or null. */
export function manifestProblem(m: unknown): string | null {
  const x = m as Manifest;
  if (typeof x !== 'object' || x === null) return 'not an object';
  if (x.version !== 1) return `unknown manifest version ${String(x.version)}`;
  if (typeof x.time !== 'string' || Number.isNaN(Date.parse(x.time))) return 'bad time';
  if (typeof x.host !== 'string') return 'bad host';
  if (typeof x.source !== 'object' || x.source === null || typeof x.source.id !== 'string' || typeof x.source.name !== 'string') return 'bad source';
  if (!Array.isArray(x.disks)) return 'disks is not a list';
  for (const d of x.disks) {
    if (typeof d !== 'object' || d === null || typeof d.name !== 'string') return 'bad disk entry';
    if (!Number.isSafeInteger(d.size) || d.size < 0) return `disk ${d.name}: bad size`;
    if (!isChunkSize(d.chunkSize)) return `disk ${d.name}: bad chunk size`;
    if (!isFanout(d.fanout)) return `disk ${d.name}: bad fanout`;
    if (typeof d.indexRoot !== 'string' || !HEX64.test(d.indexRoot)) return `disk ${d.name}: bad index root`;
    if (d.rctId !== undefined && typeof d.rctId !== 'string') return `disk ${d.name}: bad rctId`;
    if (d.slot !== undefined && (!Number.isInteger(d.slot) || d.slot < 0 || d.slot > 63)) return `disk ${d.name}: bad slot`;
  }
  const slots = x.disks.map((d) => d.slot).filter((s) => s !== undefined);
  if (new Set(slots).size !== slots.length) return 'a disk slot is used twice';
  if (x.machine !== undefined) {
    const mm = x.machine;
    if (typeof mm !== 'object' || mm === null || typeof mm.id !== 'string' || mm.id === '' || typeof mm.name !== 'string') return 'bad machine';
    if (typeof mm.config !== 'object' || mm.config === null || Array.isArray(mm.config)) return 'bad machine config';
    if (x.disks.some((d) => d.slot === undefined)) return 'a machine snapshot disk has no slot';
  }
  if (x.parent !== undefined && (typeof x.parent !== 'string' || !HEX64.test(x.parent))) return 'bad parent';
  return null;
}

/** Store a manifest (the commit point of a backup). Resolves the snapshot id. */
export async function saveManifest(repo: Repository, m: Manifest, beforePublish?: () => Promise<void>): Promise<string> {
  const problem = manifestProblem(m);
  if (problem) throw new TypeError(`saveManifest: invalid manifest: ${problem}`);
  const { name } = await repo.putObject('snapshots', Buffer.from(JSON.stringify(m)), beforePublish);
  return name;
}

/** Load and verify one manifest. */
export async function loadManifest(repo: Repository, id: string): Promise<Snapshot> {
  const raw = await repo.getObject('snapshots', id);
  let m: unknown;
  try {
    m = JSON.parse(raw.toString('utf8'));
  } catch {
    throw new CorruptObjectError(repo.location, 'snapshots', id, 'manifest is not JSON');
  }
  const problem = manifestProblem(m);
  if (problem) throw new CorruptObjectError(repo.location, 'snapshots', id, `invalid manifest: ${problem}`);
  return { ...(m as Manifest), id };
}

/**
 * Every snapshot, oldest first. A manifest listed and then gone (removed by a concurrent forget) is
 * skipped. A damaged manifest rejects, unless `onDamaged` is given: then it is reported there and
 * skipped (listing and forget stay usable; prune stays strict — it must know every reference).
 */
export async function listSnapshots(repo: Repository, opts: { onDamaged?: (id: string, err: CorruptObjectError) => void } = {}): Promise<Snapshot[]> {
  const out: Snapshot[] = [];
  for await (const id of repo.backend.list('snapshots')) {
    try {
      out.push(await loadManifest(repo, id));
    } catch (err) {
      if (err instanceof ObjectNotFoundError) continue;
      if (err instanceof CorruptObjectError && opts.onDamaged) {
        opts.onDamaged(id, err);
        continue;
      }
      throw err;
    }
  }
  return out.sort((a, b) => Date.parse(a.time) - Date.parse(b.time) || a.id.localeCompare(b.id));
}

/** Find a snapshot by id or unique id prefix (>= 4 hex characters). */
export async function findSnapshot(repo: Repository, idOrPrefix: string): Promise<Snapshot> {
  const matches: string[] = [];
  for await (const id of repo.backend.list('snapshots')) if (id.startsWith(idOrPrefix)) matches.push(id);
  if (matches.length !== 1 || idOrPrefix.length < 4) {
    if (matches.length > 1) throw new UsageError(`snapshot id ${idOrPrefix} is ambiguous (${matches.length} match); give more characters`);
    throw new NotFoundError(`snapshot ${idOrPrefix}`, 'list snapshots to see the ids');
  }
  return loadManifest(repo, matches[0]);
}
