/**
 * A disk's index: a Merkle tree of index pages (src/repo/IndexPage.ts) mapping chunk number -> digest.
 *
 * Shape: n = ceil(size / chunkSize) chunks; leaves (level 0) hold `fanout` chunk digests; a level-L
 * page holds `fanout` digests of level L-1 pages; the root is the single page at level `depth`, the
 * smallest d with fanout^(d+1) >= n. Entry e of level L covers chunks [e*fanout^L, (e+1)*fanout^L).
 * ZERO_DIGEST stands for an all-zero chunk or an all-zero subtree, which is never stored: an empty
 * 1 TiB disk has root ZERO_DIGEST and costs no pages at all.
 *
 * Updating (IndexWriter): changes arrive in ascending chunk order; the writer keeps one "open" page
 * per level (copied from the base tree on first touch), and when the stream moves past a page it
 * writes the page (if it changed) and sets its new digest in the open parent. So an update writes
 * exactly the changed leaves plus their paths to the root — O(changed pages) — and memory is
 * O(depth x fanout). Unchanged pages are shared with the base tree by digest.
 */
import { DIGEST_SIZE, ZERO_DIGEST } from './constants.js';
import { CorruptObjectError } from './errors.js';
import { decodeIndexPage, decodeIndexPageBytes, encodeIndexPageBytes, isAllZero } from './IndexPage.js';
import type { Repository } from './Repository.js';

export interface DiskGeometry {
  /** Disk size in bytes. */
  size: number;
  chunkSize: number;
  fanout: number;
}

export interface IndexRef extends DiskGeometry {
  indexRoot: string;
}

export function chunkCount(g: DiskGeometry): number {
  return Math.ceil(g.size / g.chunkSize);
}

/** Number of levels above the leaves (0: the root is a leaf). */
export function treeDepth(g: DiskGeometry): number {
  const n = chunkCount(g);
  let d = 0;
  let span = g.fanout;
  while (span < n) {
    span *= g.fanout;
    d++;
  }
  return d;
}

/** Read one page as a full `fanout`-long entry array (ZERO padded). Verified; corruption names the page. */
export async function readIndexPage(repo: Repository, digest: string, level: number, fanout: number): Promise<string[]> {
  if (digest === ZERO_DIGEST) return new Array<string>(fanout).fill(ZERO_DIGEST);
  return parseIndexPage(repo, digest, await repo.getObject('index', digest), level, fanout);
}

/** A page's verified plaintext as a full `fanout`-long entry array (ZERO padded); a bad layout names the page. */
export function parseIndexPage(repo: Repository, digest: string, plain: Buffer, level: number, fanout: number): string[] {
  const entries = new Array<string>(fanout).fill(ZERO_DIGEST);
  const page = decodeIndexPage(plain, level, fanout);
  if (typeof page === 'string') throw new CorruptObjectError(repo.location, 'index', digest, page);
  for (let i = 0; i < page.entries.length; i++) entries[i] = page.entries[i];
  return entries;
}

/** Like readIndexPage, as `fanout` x 32 bytes of digests (zero-padded): the writer's form, no hex strings. */
export async function readIndexPageBytes(repo: Repository, digest: string, level: number, fanout: number): Promise<Buffer> {
  if (digest === ZERO_DIGEST) return Buffer.alloc(fanout * DIGEST_SIZE);
  return parseIndexPageBytes(repo, digest, await repo.getObject('index', digest), level, fanout);
}

/** Like parseIndexPage, as `fanout` x 32 bytes of digests (zero-padded). */
export function parseIndexPageBytes(repo: Repository, digest: string, plain: Buffer, level: number, fanout: number): Buffer {
  const page = decodeIndexPageBytes(plain, level, fanout);
  if (typeof page === 'string') throw new CorruptObjectError(repo.location, 'index', digest, page);
  return page;
}

/** Entry `i` of a page held as bytes, as a hex digest. */
const hexAt = (digests: Buffer, i: number): string => digests.toString('hex', i * DIGEST_SIZE, (i + 1) * DIGEST_SIZE);

export interface IndexUpdateResult {
  root: string;
  pagesWritten: number;
  pageBytesWritten: number;
}

/** Read access to one disk's index tree. */
export class IndexTree {
  readonly depth: number;
  readonly chunkCount: number;
  private path: Array<{ digest: string; entries: string[] } | undefined> = [];

  private constructor(readonly repo: Repository, readonly ref: IndexRef) {
    this.depth = treeDepth(ref);
    this.chunkCount = chunkCount(ref);
  }

  static open(repo: Repository, ref: IndexRef): IndexTree {
    return new IndexTree(repo, ref);
  }

  get root(): string {
    return this.ref.indexRoot;
  }

  /** The digest of chunk `chunkIndex` (ZERO_DIGEST for a zero chunk). Caches the last path walked. */
  async lookup(chunkIndex: number): Promise<string> {
    if (!Number.isInteger(chunkIndex) || chunkIndex < 0 || chunkIndex >= this.chunkCount) throw new RangeError(`chunk ${chunkIndex} is outside the disk (${this.chunkCount} chunks)`);
    const F = this.ref.fanout;
    let digest = this.ref.indexRoot;
    for (let level = this.depth; level >= 0; level--) {
      if (digest === ZERO_DIGEST) return ZERO_DIGEST;
      let cached = this.path[level];
      if (!cached || cached.digest !== digest) {
        cached = { digest, entries: await readIndexPage(this.repo, digest, level, F) };
        this.path[level] = cached;
      }
      digest = cached.entries[Math.floor(chunkIndex / F ** level) % F];
    }
    return digest;
  }

  /** Every non-zero chunk in ascending order. Zero subtrees are skipped without reading anything. */
  async *entries(): AsyncGenerator<{ index: number; digest: string }> {
    for await (const p of this.pages()) {
      if (p.level !== 0) continue;
      for (let i = 0; i < p.entries.length; i++) {
        const index = p.first + i;
        if (p.entries[i] !== ZERO_DIGEST && index < this.chunkCount) yield { index, digest: p.entries[i] };
      }
    }
  }

  /**
   * Every stored page, depth first in chunk order, with the first chunk it covers. With `visited`, pages
   * already in the set are skipped with their whole subtree (shared between trees), and new ones added.
   */
  async *pages(visited?: Set<string>): AsyncGenerator<{ digest: string; level: number; first: number; entries: string[] }> {
    const F = this.ref.fanout;
    const self = this;
    async function* visit(digest: string, level: number, first: number): AsyncGenerator<{ digest: string; level: number; first: number; entries: string[] }> {
      if (digest === ZERO_DIGEST) return;
      if (visited) {
        if (visited.has(digest)) return;
        visited.add(digest);
      }
      const entries = await readIndexPage(self.repo, digest, level, F);
      yield { digest, level, first, entries };
      if (level === 0) return;
      const span = F ** level;
      for (let i = 0; i < F; i++) if (entries[i] !== ZERO_DIGEST) yield* visit(entries[i], level - 1, first + i * span);
    }
    yield* visit(this.ref.indexRoot, this.depth, 0);
  }

  /**
   * A new tree equal to `base` with `changes` applied (chunk index -> digest; ZERO_DIGEST for zeros).
   * Writes only the changed pages and their paths to the root.
   */
  static async update(repo: Repository, base: IndexRef, changes: Map<number, string>): Promise<IndexUpdateResult> {
    const w = new IndexWriter(repo, base, base.indexRoot);
    for (const i of [...changes.keys()].sort((a, b) => a - b)) await w.set(i, changes.get(i)!);
    return w.finish();
  }
}

interface OpenPage {
  pageNo: number;
  /** `fanout` x 32 bytes: the page's digests (entries are patched in place, never turned into strings). */
  digests: Buffer;
  dirty: boolean;
}

/** Leaf pages `prefetch` reads ahead of the writer (memory: this many pages, 16 KiB each at fanout 512). */
export const PREFETCH_AHEAD = 128;
/** Leaves per prefetch batch (one getIndexPages call). */
export const PREFETCH_BATCH = 64;

/**
 * Builds a new index tree from a base tree (ZERO_DIGEST: empty disk) and a stream of changes in
 * strictly ascending chunk order. `set` calls must not overlap (await each); `finish` once.
 *
 * Base pages are read through one memo (`basePage`, keyed by level and page number) that `prefetch`
 * fills ahead of the writer: an incremental touching hundreds of scattered leaves would otherwise read
 * them one after another inside `set` (measured: ~1 s of a 4 GiB disk's incremental). A page is taken
 * out of the memo when the writer opens it (the open page is a copy; parents when the writer passes
 * them), so memory stays bounded by PREFETCH_AHEAD leaves plus their parents. Reading a base page for
 * page number p gives the same digest as the writer's open parent would: the parent's entry for p
 * changes only when p is flushed, after the writer has passed it.
 */
export class IndexWriter {
  private readonly depth: number;
  private readonly n: number;
  private readonly open: Array<OpenPage | undefined> = [];
  private root: string;
  private last = -1;
  private pagesWritten = 0;
  private pageBytesWritten = 0;
  private finished = false;
  private readonly baseRoot: string;
  private readonly base = new Map<string, Promise<Buffer>>();
  /** A digest being set, as bytes. */
  private readonly scratch = Buffer.alloc(DIGEST_SIZE);
  /** The writer's current leaf (taken out of the memo: the prefetcher never refills it or one before). */
  private leafTaken = -1;
  /** The prefetcher, waiting for the writer to advance. */
  private advanced: (() => void) | null = null;

  constructor(private readonly repo: Repository, private readonly geometry: DiskGeometry, baseRoot: string = ZERO_DIGEST) {
    this.depth = treeDepth(geometry);
    this.n = chunkCount(geometry);
    this.root = baseRoot;
    this.baseRoot = baseRoot;
  }

  /**
   * Read the base leaves the coming `set`s will need (chunks in `intervals`, ascending, half-open) in
   * the background, PREFETCH_BATCH leaves per `getIndexPages` call (a few coalesced ranged reads) and
   * at most PREFETCH_AHEAD leaves ahead of the writer. Errors are not raised here: the `set` that
   * needs a bad page raises it (its memo entry holds the rejection).
   */
  prefetch(intervals: Iterable<{ start: number; end: number }>): void {
    if (this.baseRoot === ZERO_DIGEST) return; // an empty base: nothing to read
    const F = this.geometry.fanout;
    const self = this;
    function* leaves(): Generator<number> {
      let last = -1;
      for (const iv of intervals) {
        for (let p = Math.max(Math.floor(iv.start / F), last + 1); p <= Math.floor((iv.end - 1) / F); p++) yield (last = p);
      }
    }
    const fetch = async (batch: number[]): Promise<void> => {
      const todo = batch.filter((leaf) => leaf > self.leafTaken && !self.base.has(`0:${leaf}`));
      if (todo.length === 0) return;
      const digests = await Promise.all(todo.map(async (leaf) => (self.depth === 0 ? self.baseRoot : hexAt(await self.basePage(1, Math.floor(leaf / F)), leaf % F))));
      const pages = self.repo.getIndexPages(digests.filter((d) => d !== ZERO_DIGEST));
      pages.catch(() => undefined); // raised by the set that needs it
      todo.forEach((leaf, i) => {
        const key = `0:${leaf}`;
        if (leaf <= self.leafTaken || self.base.has(key)) return;
        // A failed batch (one damaged page) falls back to reading each leaf alone: the writer gets
        // the error of the page it needs, naming it, and intact pages still load.
        const page = pages.then(
          (m) => (digests[i] === ZERO_DIGEST ? Buffer.alloc(F * DIGEST_SIZE) : parseIndexPageBytes(self.repo, digests[i], m.get(digests[i])!, 0, F)),
          () => readIndexPageBytes(self.repo, digests[i], 0, F),
        );
        page.catch(() => undefined); // raised when (if) the writer takes it
        self.base.set(key, page);
      });
      await pages.catch(() => undefined);
    };
    void (async () => {
      let batch: number[] = [];
      for (const leaf of leaves()) {
        while (!self.finished && leaf - self.leafTaken > PREFETCH_AHEAD) await new Promise<void>((r) => (self.advanced = r));
        if (self.finished) return;
        batch.push(leaf);
        if (batch.length >= PREFETCH_BATCH) {
          await fetch(batch).catch(() => undefined);
          batch = [];
        }
      }
      if (!self.finished) await fetch(batch).catch(() => undefined);
    })();
  }

  /** Page `pageNo` of `level` as it is in the base tree (memoized until the writer opens it). */
  private basePage(level: number, pageNo: number): Promise<Buffer> {
    const key = `${level}:${pageNo}`;
    let p = this.base.get(key);
    if (!p) {
      const F = this.geometry.fanout;
      p = (async () => {
        const digest = level === this.depth ? this.baseRoot : hexAt(await this.basePage(level + 1, Math.floor(pageNo / F)), pageNo % F);
        return readIndexPageBytes(this.repo, digest, level, F);
      })();
      this.base.set(key, p);
    }
    return p;
  }

  /** Record chunk `chunkIndex`'s digest. Indexes must be strictly ascending. */
  async set(chunkIndex: number, digest: string): Promise<void> {
    if (this.finished) throw new Error('IndexWriter: set after finish');
    if (!Number.isInteger(chunkIndex) || chunkIndex <= this.last || chunkIndex >= this.n) {
      throw new RangeError(`IndexWriter: chunk ${chunkIndex} out of order or outside the disk (last ${this.last}, ${this.n} chunks)`);
    }
    if (!/^[0-9a-f]{64}$/.test(digest)) throw new TypeError(`IndexWriter: bad digest ${digest}`);
    this.last = chunkIndex;
    await this.setEntry(0, chunkIndex, digest);
  }

  /** Write the remaining open pages bottom-up; resolves the new root. */
  async finish(): Promise<IndexUpdateResult> {
    if (!this.finished) {
      this.finished = true; // stops the prefetcher
      this.advanced?.();
      for (let level = 0; level <= this.depth; level++) await this.flush(level);
    }
    return { root: this.root, pagesWritten: this.pagesWritten, pageBytesWritten: this.pageBytesWritten };
  }

  private async setEntry(level: number, entryNo: number, digest: string): Promise<void> {
    const F = this.geometry.fanout;
    const page = await this.ensure(level, Math.floor(entryNo / F));
    const at = (entryNo % F) * DIGEST_SIZE;
    const d = this.scratch;
    d.write(digest, 0, 'hex');
    if (d.compare(page.digests, at, at + DIGEST_SIZE) !== 0) {
      d.copy(page.digests, at);
      page.dirty = true;
    }
  }

  /** Make page `pageNo` of `level` the open one, closing the previous open page of that level. */
  private async ensure(level: number, pageNo: number): Promise<OpenPage> {
    const cur = this.open[level];
    if (cur && cur.pageNo === pageNo) return cur;
    if (cur) await this.flush(level);
    if (level < this.depth) await this.ensure(level + 1, Math.floor(pageNo / this.geometry.fanout)); // open the parent
    const base = this.basePage(level, pageNo);
    // A leaf is needed once; a parent stays memoized while the prefetcher may still descend through
    // it. Pages the writer has passed are dropped.
    if (level === 0) {
      this.base.delete(`0:${pageNo}`);
      this.leafTaken = pageNo;
      this.advanced?.();
      this.advanced = null;
    } else {
      // Parents the writer has passed (few: the prefetcher runs at most PREFETCH_AHEAD leaves ahead).
      for (const k of this.base.keys()) {
        if (!k.startsWith(`${level}:`)) continue;
        if (Number(k.slice(k.indexOf(':') + 1)) < pageNo) this.base.delete(k);
      }
    }
    const page: OpenPage = { pageNo, digests: Buffer.from(await base), dirty: false };
    this.open[level] = page;
    return page;
  }

  private async flush(level: number): Promise<void> {
    const page = this.open[level];
    this.open[level] = undefined;
    if (!page || !page.dirty) return;
    let digest = ZERO_DIGEST;
    if (!isAllZero(page.digests)) {
      const r = await this.repo.putIndexPage(encodeIndexPageBytes(level, page.digests));
      digest = r.digest;
      if (r.written > 0) {
        this.pagesWritten++;
        this.pageBytesWritten += r.written;
      }
    }
    if (level === this.depth) this.root = digest;
    else await this.setEntry(level + 1, page.pageNo, digest);
  }
}
