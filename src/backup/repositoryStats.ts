import { ObjectKind } from '../repo/constants.js';
import { listSnapshots } from '../repo/Manifest.js';
import type { Repository } from '../repo/Repository.js';

export interface RepositoryStats {
  location: string;
  encryption: string;
  compression: string;
  snapshots: number;
  /** Distinct sources (disks / machines) with at least one snapshot. */
  sources: number;
  chunks: number;
  chunkBytes: number;
  indexPages: number;
  indexBytes: number;
  /** Pack files and their bytes on the backend. */
  packs: number;
  packBytes: number;
  /** Sum of the virtual sizes of every disk of every snapshot (what full copies would cost). */
  logicalBytes: number;
}

/**
 * Count and size the repository's blobs (stored bytes, after compression; from the pack index) and its
 * snapshots. `chunkBytes + indexBytes` is the blob bytes; `packBytes` the pack files themselves
 * (blobs + headers + blobs not yet pruned) and `packs` their number.
 */
export async function repositoryStats(repo: Repository): Promise<RepositoryStats> {
  const snaps = await listSnapshots(repo);
  await repo.packs.ensureLoaded();
  const seen = new Set<string>();
  let chunks = 0, chunkBytes = 0, indexPages = 0, indexBytes = 0;
  for (const entries of repo.packs.indexedPacks.values()) {
    for (const e of entries) {
      const k = `${e.kind}${e.digest}`;
      if (seen.has(k)) continue;
      seen.add(k);
      if (e.kind === ObjectKind.chunk) {
        chunks++;
        chunkBytes += e.length;
      } else {
        indexPages++;
        indexBytes += e.length;
      }
    }
  }
  let packs = 0;
  let packBytes = 0;
  for await (const name of repo.backend.list('packs')) {
    packs++;
    packBytes += await repo.backend.stat('packs', name).then((s) => s.size, () => 0); // removed meanwhile
  }
  return {
    location: repo.location,
    encryption: repo.config.encryption,
    compression: repo.config.compression,
    snapshots: snaps.length,
    sources: new Set(snaps.map((s) => s.source.id)).size,
    chunks,
    chunkBytes,
    indexPages,
    indexBytes,
    packs,
    packBytes,
    logicalBytes: snaps.reduce((n, s) => n + s.disks.reduce((m, d) => m + d.size, 0), 0),
  };
}
