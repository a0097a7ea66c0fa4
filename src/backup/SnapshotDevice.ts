/**
 * SnapshotDevice: one disk of a restore point as a read-only BlockDevice that reads chunks from the
 * repository by index — what `tidemark mount` serves over NBD (and, under a copy-on-write overlay,
 * instant recovery).
 *
 * read: the chunks covering the range are looked up in the index tree and fetched concurrently (each
 * verified against its digest by the repository); a small LRU cache holds recently read chunks, since
 * NBD clients read in pieces smaller than a chunk. extents: the index tree is walked, skipping all-zero
 * subtrees without reading them: zero chunks are `hole`, stored ones `data`.
 */
import type { BlockDevice, Capabilities, Extent } from '../blockdev/BlockDevice.js';
import { checkRange } from '../blockdev/checkRange.js';
import { pushExtent } from '../blockdev/mergeExtents.js';
import { ClosedError, ReadOnlyError } from '../errors.js';
import { ZERO_DIGEST } from '../repo/constants.js';
import { CorruptObjectError } from '../repo/errors.js';
import { IndexTree, readIndexPage } from '../repo/IndexTree.js';
import type { DiskEntry } from '../repo/Manifest.js';
import type { Repository } from '../repo/Repository.js';

export interface SnapshotDeviceOptions {
  /** Chunks kept in memory (default 64). */
  cacheChunks?: number;
}

export class SnapshotDevice implements BlockDevice {
  readonly logicalSectorSize = 512;
  readonly physicalSectorSize = 4096;
  readonly capabilities: Capabilities = { readOnly: true, trim: false, fastZero: false, fua: false, extents: true };
  private readonly tree: IndexTree;
  private readonly cache = new Map<number, Promise<Buffer>>();
  private readonly cacheChunks: number;
  private closed = false;

  constructor(readonly repo: Repository, readonly disk: DiskEntry, opts: SnapshotDeviceOptions = {}) {
    this.tree = IndexTree.open(repo, disk);
    this.cacheChunks = Math.max(1, opts.cacheChunks ?? 64);
  }

  get size(): number {
    return this.disk.size;
  }

  private check(offset: number, length: number): void {
    if (this.closed) throw new ClosedError('snapshot device');
    checkRange(offset, length, this.size);
  }

  /** Chunk `index`, verified, exactly its length in the disk. */
  private chunk(index: number): Promise<Buffer> {
    const hit = this.cache.get(index);
    if (hit) {
      this.cache.delete(index);
      this.cache.set(index, hit);
      return hit;
    }
    const cs = this.disk.chunkSize;
    const len = Math.min(cs, this.size - index * cs);
    const p = (async () => {
      const digest = await this.tree.lookup(index);
      if (digest === ZERO_DIGEST) return Buffer.alloc(len);
      const data = await this.repo.getChunk(digest);
      if (data.length !== len) throw new CorruptObjectError(this.repo.location, 'chunks', digest, `chunk ${index} of disk ${this.disk.name} is ${data.length} bytes, expected ${len}`);
      return data;
    })();
    p.catch(() => this.cache.delete(index));
    this.cache.set(index, p);
    while (this.cache.size > this.cacheChunks) this.cache.delete(this.cache.keys().next().value as number);
    return p;
  }

  async read(offset: number, length: number): Promise<Buffer> {
    this.check(offset, length);
    const out = Buffer.alloc(length);
    if (length === 0) return out;
    const cs = this.disk.chunkSize;
    const first = Math.floor(offset / cs);
    const last = Math.floor((offset + length - 1) / cs);
    const jobs: Promise<void>[] = [];
    for (let i = first; i <= last; i++) {
      jobs.push(
        this.chunk(i).then((data) => {
          const cStart = i * cs;
          const from = Math.max(offset, cStart);
          const to = Math.min(offset + length, cStart + data.length);
          data.copy(out, from - offset, from - cStart, to - cStart);
        }),
      );
    }
    await Promise.all(jobs);
    return out;
  }

  async write(): Promise<void> {
    if (this.closed) throw new ClosedError('snapshot device');
    throw new ReadOnlyError('snapshot device');
  }
  async zero(): Promise<void> {
    return this.write();
  }
  async trim(): Promise<void> {
    return this.write();
  }
  async flush(): Promise<void> {
    if (this.closed) throw new ClosedError('snapshot device');
  }

  async extents(offset: number, length: number): Promise<Extent[]> {
    this.check(offset, length);
    const out: Extent[] = [];
    if (length === 0) return out;
    const cs = this.disk.chunkSize;
    const F = this.disk.fanout;
    const c0 = Math.floor(offset / cs);
    const c1 = Math.ceil((offset + length) / cs);
    const end = offset + length;
    const emit = (firstChunk: number, count: number, type: 'data' | 'hole'): void => {
      const a = Math.max(offset, firstChunk * cs);
      const b = Math.min(end, (firstChunk + count) * cs);
      if (b > a) pushExtent(out, { offset: a, length: b - a, type });
    };
    // A page of level L has F entries, each covering F^L chunks (level 0: chunk digests).
    const walk = async (digest: string, level: number, first: number): Promise<void> => {
      const span = F ** level;
      const lo = Math.max(first, c0);
      const hi = Math.min(first + span * F, c1);
      if (hi <= lo) return;
      if (digest === ZERO_DIGEST) return emit(lo, hi - lo, 'hole');
      const entries = await readIndexPage(this.repo, digest, level, F);
      for (let s = Math.floor((lo - first) / span); s < F && first + s * span < hi; s++) {
        const e = entries[s] ?? ZERO_DIGEST;
        if (level === 0) emit(first + s, 1, e === ZERO_DIGEST ? 'hole' : 'data');
        else await walk(e, level - 1, first + s * span);
      }
    };
    await walk(this.disk.indexRoot, this.tree.depth, 0);
    return out;
  }

  async close(): Promise<void> {
    this.closed = true;
    this.cache.clear();
  }
}
