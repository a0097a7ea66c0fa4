import type { ObjectType } from '../backend/Backend.js';
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
  /** Sum of the virtual sizes of every disk of every snapshot (what full copies would cost). */
  logicalBytes: number;
}

/** Count and size the repository's objects (stored bytes, after compression) and its snapshots. */
export async function repositoryStats(repo: Repository): Promise<RepositoryStats> {
  const snaps = await listSnapshots(repo);
  const sizeOf = async (type: ObjectType): Promise<{ n: number; bytes: number }> => {
    const names: string[] = [];
    for await (const name of repo.backend.list(type)) names.push(name);
    let bytes = 0;
    let i = 0;
    const worker = async (): Promise<void> => {
      while (i < names.length) {
        const name = names[i++]!;
        bytes += await repo.backend.stat(type, name).then((s) => s.size, () => 0); // removed meanwhile
      }
    };
    await Promise.all(Array.from({ length: 16 }, worker));
    return { n: names.length, bytes };
  };
  const [c, p] = [await sizeOf('chunks'), await sizeOf('index')];
  return {
    location: repo.location,
    encryption: repo.config.encryption,
    compression: repo.config.compression,
    snapshots: snaps.length,
    sources: new Set(snaps.map((s) => s.source.id)).size,
    chunks: c.n,
    chunkBytes: c.bytes,
    indexPages: p.n,
    indexBytes: p.bytes,
    logicalBytes: snaps.reduce((n, s) => n + s.disks.reduce((m, d) => m + d.size, 0), 0),
  };
}
