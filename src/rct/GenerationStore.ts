import { UsageError } from '../errors.js';
import { TrackingInvalidError, UnknownRctIdError } from './errors.js';
import type { Range } from './Range.js';
import { formatRctId, parseRctId } from './RctId.js';
import { SparseBitmap } from './SparseBitmap.js';

/** One live RCT ID and the fine blocks changed after it, up to the next live ID (or now). */
export interface LiveId {
  gen: number;
  nonce: string;
  createdAt: number;
  /** Blocks changed in generations (gen, next live ID's gen] — or up to the current generation. */
  changes: SparseBitmap;
}

/**
 * The in-memory change-tracking state machine. Pure: no I/O, no clocks (callers pass times and nonces).
 *
 * How it works: `generation` is the one now accumulating writes. `seal()` ends it, issues an ID naming
 * it, and starts the next. Each live ID owns one bitmap: the blocks changed after it and up to the next
 * live ID. So `changes(since, until)` is the OR of the bitmaps of the live IDs from `since` up to (not
 * including) `until`. Writes go to the newest ID's bitmap; with no live ID they need not be kept.
 * Dropping an ID merges its bitmap into the previous ID's (or discards it when it is the oldest), so
 * memory is one bitmap per live ID, each holding only what changed in its span.
 */
export class GenerationStore {
  constructor(
    readonly diskPath: string,
    readonly tracker: string,
    readonly blockSize: number,
    public diskSize: number,
    public generation: number,
    readonly ids: LiveId[],
    /** Why the previous tracker was invalidated (cited when its IDs are used). */
    public invalidation: { reason: string; at: number; previousTracker: string | null } | null = null,
  ) {}

  get blockCount(): number {
    return Math.ceil(this.diskSize / this.blockSize);
  }

  /** Record that [offset, offset+length) may have changed in the current generation. */
  record(offset: number, length: number): void {
    if (length <= 0) return;
    const last = this.ids[this.ids.length - 1];
    if (!last) return;
    const first = Math.floor(offset / this.blockSize);
    const end = Math.ceil(Math.min(offset + length, this.diskSize) / this.blockSize);
    last.changes.setRange(first, end);
  }

  /** Record the whole blocks [firstBlock, endBlock). */
  recordBlocks(firstBlock: number, endBlock: number): void {
    const last = this.ids[this.ids.length - 1];
    if (last) last.changes.setRange(firstBlock, Math.min(endBlock, this.blockCount));
  }

  /** End the current generation; returns the ID naming the state at this instant. */
  seal(nonce: string, now: number): string {
    const gen = this.generation;
    this.ids.push({ gen, nonce, createdAt: now, changes: new SparseBitmap() });
    this.generation = gen + 1;
    return formatRctId({ tracker: this.tracker, gen, nonce });
  }

  /** Forget an ID; its changes merge into the previous ID's span. Throws like `resolve`. */
  drop(id: string): void {
    const i = this.indexOf(id);
    const [gone] = this.ids.splice(i, 1);
    if (i > 0) this.ids[i - 1]!.changes.orWith(gone!.changes);
  }

  /** Sorted, merged byte ranges changed after `since` (and up to `until`, when given). */
  changes(since: string, until?: string): Range[] {
    return this.changedIn(since, 0, this.diskSize, until);
  }

  /** The part of `changes(since, until)` inside [offset, offset+length), clipped to it. */
  changedIn(since: string, offset: number, length: number, until?: string): Range[] {
    const maps = this.spanMaps(since, until);
    const bs = this.blockSize;
    const end = Math.min(offset + length, this.diskSize);
    if (end <= offset) return [];
    const runs = SparseBitmap.runs(maps, Math.floor(offset / bs), Math.ceil(end / bs));
    return runs.map(([s, e]) => {
      const a = Math.max(s * bs, offset);
      const b = Math.min(e * bs, end);
      return { offset: a, length: b - a };
    });
  }

  /** Bytes of bitmap held for all live IDs. */
  get memoryBytes(): number {
    return this.ids.reduce((n, id) => n + id.changes.memoryBytes, 0);
  }

  idString(id: LiveId): string {
    return formatRctId({ tracker: this.tracker, gen: id.gen, nonce: id.nonce });
  }

  private spanMaps(since: string, until?: string): SparseBitmap[] {
    const a = this.indexOf(since);
    const b = until === undefined ? this.ids.length : this.indexOf(until);
    if (b < a) throw new UsageError(`--until ID (${until}) is older than --since ID (${since})`);
    return this.ids.slice(a, b).map((x) => x.changes);
  }

  /** Index of a live ID; throws TrackingInvalidError (other tracker) or UnknownRctIdError. */
  indexOf(id: string): number {
    const p = parseRctId(id);
    if (!p) throw new UnknownRctIdError(this.diskPath, id, 'is not a Tidemark RCT ID (expected rct:…)');
    if (p.tracker !== this.tracker) {
      const inv = this.invalidation;
      const reason = inv && inv.previousTracker === p.tracker
        ? `${inv.reason}, at ${new Date(inv.at).toISOString()}`
        : inv ? `tracking restarted at ${new Date(inv.at).toISOString()} (${inv.reason}), or the ID belongs to another disk`
          : 'the ID belongs to an earlier tracking instance or to another disk';
      throw new TrackingInvalidError(this.diskPath, reason, { id });
    }
    const i = this.ids.findIndex((x) => x.gen === p.gen && x.nonce === p.nonce);
    if (i < 0) throw new UnknownRctIdError(this.diskPath, id, p.gen >= this.generation ? 'was never issued' : 'was dropped or never issued');
    return i;
  }
}
