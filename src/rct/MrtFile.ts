import { open, readFile, type FileHandle } from 'node:fs/promises';
import { atomicWriteFile } from '../util/atomicWriteFile.js';
import { decodeMrt, encodeMrtSlot, mrtSlotSize, type MrtSlot } from './mrtCodec.js';

/**
 * The `.mrt` modified-region table of one open epoch.
 *
 * How it works: the file holds two slots of the same size. A mark writes the whole table (all regions
 * marked so far plus the new ones) with sequence n+1 into slot (n+1) % 2 and fdatasyncs it; the other
 * slot still holds sequence n. A torn write therefore loses at most the new marks, whose data writes
 * have not been issued yet (they wait for this fsync). Marks requested while a write is in flight are
 * grouped into the next write (group commit), so each newly dirtied region costs at most one fsync and
 * concurrent writers to the same new region wait on the same fsync.
 *
 * Epoch rollover: every .rct persist (a snapshot of the fine bits) is followed by a table holding only
 * the regions written since that snapshot, so after a crash the answer is "bits at the last persist +
 * regions written since", not "+ every region written this session".
 */
export class MrtFile {
  private durable: Uint8Array;
  private next: Uint8Array;
  private nextPromise: Promise<void> | null = null;
  /** Table writes run one at a time, in order. */
  private tail: Promise<void> = Promise.resolve();
  /** Regions of writes begun since the last fine-bit snapshot (null when no snapshot is pending). */
  private collecting: Uint8Array | null = null;
  private waiters = new Map<number, Promise<void>>();
  private seq: number;
  private closed = false;

  private constructor(
    readonly path: string,
    private fh: FileHandle,
    readonly tracker: string,
    readonly regionSize: number,
    readonly regionCount: number,
    seq: number,
  ) {
    this.durable = new Uint8Array(Math.ceil(regionCount / 8));
    this.next = new Uint8Array(this.durable.length);
    this.seq = seq;
  }

  /** Atomically (re)create an empty table (both slots, sequences seq and seq+1) and open it for marks. */
  static async create(path: string, tracker: string, regionSize: number, regionCount: number, seq = 1): Promise<MrtFile> {
    const bits = new Uint8Array(Math.ceil(regionCount / 8));
    const s0 = encodeMrtSlot({ tracker, seq, regionSize, regionCount, bits });
    const s1 = encodeMrtSlot({ tracker, seq: seq + 1, regionSize, regionCount, bits });
    await atomicWriteFile(path, Buffer.concat([s0, s1]));
    const fh = await open(path, 'r+');
    return new MrtFile(path, fh, tracker, regionSize, regionCount, seq + 1);
  }

  /** Read and validate a table; throws ENOENT errors and CorruptError. */
  static async read(path: string): Promise<MrtSlot> {
    return decodeMrt(await readFile(path), path);
  }

  /** Regions marked durable in this epoch. */
  get markedCount(): number {
    let n = 0;
    for (const b of this.durable) for (let x = b; x; x &= x - 1) n++;
    return n;
  }

  /**
   * Make sure regions [first, end) are durably marked. Returns null when they already are (the hot
   * path: no promise, no await); otherwise a promise that resolves once a covering mark is on disk.
   */
  ensureMarked(first: number, end: number): Promise<void> | null {
    let waits: Promise<void>[] | null = null;
    for (let r = first; r < end; r++) {
      if (this.collecting) this.collecting[r >> 3]! |= 1 << (r & 7);
      if (this.durable[r >> 3]! & (1 << (r & 7))) continue;
      let w = this.waiters.get(r);
      if (!w) {
        this.next[r >> 3]! |= 1 << (r & 7);
        w = this.batch();
        this.waiters.set(r, w);
      }
      (waits ??= []).push(w);
    }
    if (!waits) return null;
    return waits.length === 1 ? waits[0]! : Promise.all(waits).then(() => undefined);
  }

  private enqueue(job: () => Promise<void>): Promise<void> {
    const p = this.tail.then(job);
    this.tail = p.catch(() => undefined);
    return p;
  }

  private batch(): Promise<void> {
    this.nextPromise ??= this.enqueue(() => this.writeBatch());
    return this.nextPromise;
  }

  private async writeBatch(): Promise<void> {
    this.nextPromise = null;
    const adding = this.next;
    this.next = new Uint8Array(this.durable.length);
    const bits = Uint8Array.from(this.durable);
    for (let i = 0; i < bits.length; i++) bits[i]! |= adding[i]!;
    try {
      await this.writeTable(bits);
      this.durable = bits;
    } finally {
      for (let r = 0; r < this.regionCount; r++) if (adding[r >> 3]! & (1 << (r & 7))) this.waiters.delete(r);
    }
  }

  private async writeTable(bits: Uint8Array): Promise<void> {
    if (this.closed) throw new Error(`${this.path}: mark after close`);
    const seq = this.seq + 1;
    const slot = encodeMrtSlot({ tracker: this.tracker, seq, regionSize: this.regionSize, regionCount: this.regionCount, bits });
    await this.fh.write(slot, 0, slot.length, (seq % 2) * slot.length);
    await this.fh.datasync();
    this.seq = seq;
  }

  /**
   * Epoch rollover, step 1: call in the same synchronous section that snapshots the fine bits, with the
   * regions of the writes in flight. From now on every write's regions are collected too (writes that
   * began earlier are in the snapshot).
   */
  startSnapshot(inflightPerRegion: ArrayLike<number>): void {
    const c = new Uint8Array(this.durable.length);
    // Writes still in flight may be re-recorded after the snapshot (a seal while they ran): keep their regions.
    for (let r = 0; r < this.regionCount; r++) if (inflightPerRegion[r]) c[r >> 3]! |= 1 << (r & 7);
    this.collecting = c;
  }

  /** The snapshot was not persisted: keep the table as it is. */
  cancelSnapshot(): void {
    this.collecting = null;
  }

  /**
   * Epoch rollover, step 2, once the snapshot is durable in the .rct: replace the table by the regions
   * of writes begun since the snapshot. Until the new table is on disk only regions in both tables
   * count as marked (safe whichever slot survives); others are marked again by their next write.
   */
  rollover(): Promise<void> {
    return this.enqueue(async () => {
      const table = this.collecting;
      this.collecting = null;
      if (!table || this.closed) return;
      for (let i = 0; i < table.length; i++) this.durable[i]! &= table[i]!;
      await this.writeTable(table);
      this.durable = table;
    });
  }

  /** Wait for in-flight marks and close the handle. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    await this.tail;
    this.closed = true;
    await this.fh.close();
  }

  static slotSize(regionCount: number): number {
    return mrtSlotSize(regionCount);
  }
}
