/**
 * Copy-on-write: a writable device made of a base that is never written and an overlay that takes
 * every change (the shape of nbdkit's cow filter).
 *
 * How this works: the device is cut into blocks of `blockSize` bytes. A bitmap holds one bit per block:
 * set means the block's current content lives in the overlay, clear means it is still the base's.
 * Reads and extents take each run of blocks from the side its bits name. A change to a block whose bit
 * is clear first makes the overlay hold the whole block (copy-up: read base block, apply the change in
 * memory, write the block to the overlay; a change covering the whole block is written directly), then
 * sets the bit. Bits only ever go from clear to set. Every change holds a range lock on the blocks it
 * touches, so overlapping changes run one after the other (each lands whole, and concurrent partial
 * writes into one block cannot lose each other during copy-up); disjoint changes run concurrently.
 *
 * The bitmap lives in memory. To resume a session, keep the overlay and pass the `bitmap` read from the
 * previous device (after flush) as `opts.bitmap`.
 */
import type { BlockDevice, Capabilities, Extent, WriteOptions, ZeroOptions } from './BlockDevice.js';
import { checkRange } from './checkRange.js';
import { Gate } from './Gate.js';
import { pushExtent } from './mergeExtents.js';
import { RangeLock } from './RangeLock.js';
import { NotSupportedError, UsageError } from '../errors.js';

export interface CopyOnWriteOptions {
  /** Bitmap granularity in bytes: a power of two >= 512 (default 64 KiB). */
  blockSize?: number;
  /** Resume with the bitmap of an earlier session over the same overlay (length ceil(blocks/8)). */
  bitmap?: Uint8Array;
}

/**
 * Layer `base` with `overlay` (writable, at least base.size bytes). The result has base's size and
 * sector sizes; it owns both devices (closing it closes them). Throws UsageError for a read-only or
 * too small overlay, a bad block size or a bitmap of the wrong length.
 */
export function copyOnWrite(base: BlockDevice, overlay: BlockDevice, opts: CopyOnWriteOptions = {}): CopyOnWriteDevice {
  return new CopyOnWriteDevice(base, overlay, opts);
}

/** A block run: [start, end) all in blocks whose bit equals `overlaid`. */
interface Run {
  start: number;
  end: number;
  overlaid: boolean;
}

/** How one change applies: directly to an overlay range, or to a copied-up block buffer. */
interface Change {
  direct(offset: number, length: number): Promise<void>;
  apply(block: Buffer, blockStart: number, start: number, end: number): void;
}

export class CopyOnWriteDevice implements BlockDevice {
  readonly capabilities: Capabilities;
  readonly blockSize: number;
  private readonly bits: Uint8Array;
  private readonly lock = new RangeLock();
  private readonly gate = new Gate('copy-on-write device');
  private closing: Promise<void> | undefined;

  constructor(
    private readonly base: BlockDevice,
    private readonly overlay: BlockDevice,
    opts: CopyOnWriteOptions = {},
  ) {
    const bs = opts.blockSize ?? 64 * 1024;
    if (!Number.isSafeInteger(bs) || bs < 512 || (bs & (bs - 1)) !== 0) throw new UsageError(`copy-on-write block size must be a power of two >= 512, got ${bs}`);
    if (overlay.capabilities.readOnly) throw new UsageError('copy-on-write overlay is read-only; give a writable overlay device');
    if (overlay.size < base.size) throw new UsageError(`copy-on-write overlay (${overlay.size} bytes) is smaller than the base (${base.size} bytes)`);
    this.blockSize = bs;
    const bytes = Math.ceil(Math.ceil(base.size / bs) / 8);
    if (opts.bitmap && opts.bitmap.length !== bytes) throw new UsageError(`copy-on-write bitmap has ${opts.bitmap.length} bytes; ${bytes} expected for ${base.size} bytes in ${bs}-byte blocks`);
    this.bits = opts.bitmap ? Uint8Array.from(opts.bitmap) : new Uint8Array(bytes);
    this.capabilities = {
      readOnly: false,
      trim: overlay.capabilities.trim,
      fastZero: overlay.capabilities.fastZero,
      fua: overlay.capabilities.fua,
      extents: base.capabilities.extents && overlay.capabilities.extents,
    };
  }

  get size(): number {
    return this.base.size;
  }
  get logicalSectorSize(): number {
    return this.base.logicalSectorSize;
  }
  get physicalSectorSize(): number {
    return this.base.physicalSectorSize;
  }

  /** A copy of the bitmap (bit b of byte b>>3 set = block b lives in the overlay). */
  get bitmap(): Uint8Array {
    return Uint8Array.from(this.bits);
  }

  async read(offset: number, length: number): Promise<Buffer> {
    return this.gate.run(async () => {
      checkRange(offset, length, this.size);
      const out = Buffer.alloc(length);
      await Promise.all(
        this.runs(offset, length).map(async (r) => {
          const part = await (r.overlaid ? this.overlay : this.base).read(r.start, r.end - r.start);
          part.copy(out, r.start - offset);
        }),
      );
      return out;
    });
  }

  async write(offset: number, data: Uint8Array, opts?: WriteOptions): Promise<void> {
    const src = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    return this.change(offset, data.length, opts, {
      direct: (off, len) => this.overlay.write(off, src.subarray(off - offset, off - offset + len), opts),
      apply: (block, blockStart, start, end) => src.copy(block, start - blockStart, start - offset, end - offset),
    });
  }

  async zero(offset: number, length: number, opts?: ZeroOptions): Promise<void> {
    return this.change(offset, length, opts, {
      direct: (off, len) => this.overlay.zero(off, len, opts),
      apply: (block, blockStart, start, end) => block.fill(0, start - blockStart, end - blockStart),
    }, opts?.fast);
  }

  async trim(offset: number, length: number, opts?: WriteOptions): Promise<void> {
    return this.change(offset, length, opts, {
      direct: (off, len) => this.overlay.trim(off, len, opts),
      apply: (block, blockStart, start, end) => block.fill(0, start - blockStart, end - blockStart),
    });
  }

  flush(): Promise<void> {
    return this.gate.run(() => this.overlay.flush());
  }

  async extents(offset: number, length: number): Promise<Extent[]> {
    return this.gate.run(async () => {
      checkRange(offset, length, this.size);
      const parts = await Promise.all(this.runs(offset, length).map((r) => (r.overlaid ? this.overlay : this.base).extents(r.start, r.end - r.start)));
      const out: Extent[] = [];
      for (const list of parts) for (const e of list) pushExtent(out, e);
      return out;
    });
  }

  /** Flush the overlay, then close overlay and base. Idempotent. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      await this.gate.close();
      try {
        await this.overlay.close();
      } finally {
        await this.base.close();
      }
    })();
    return this.closing;
  }

  private change(offset: number, length: number, opts: WriteOptions | undefined, c: Change, fast = false): Promise<void> {
    return this.gate.run(async () => {
      checkRange(offset, length, this.size);
      if (fast && !this.overlay.capabilities.fastZero) throw new NotSupportedError('fast zeroing on the copy-on-write overlay');
      const bs = this.blockSize;
      const end = offset + length;
      await this.lock.with(Math.floor(offset / bs) * bs, Math.ceil(end / bs) * bs, async () => {
        for (const r of this.runs(offset, length)) {
          if (r.overlaid) {
            await c.direct(r.start, r.end - r.start);
            continue;
          }
          for (let pos = r.start; pos < r.end; ) {
            const block = Math.floor(pos / bs);
            const blockStart = block * bs;
            const blockEnd = Math.min(blockStart + bs, this.size);
            const segEnd = Math.min(blockEnd, r.end);
            if (pos === blockStart && segEnd === blockEnd) {
              // Whole blocks: write them directly, then mark them all.
              let runEnd = blockEnd;
              while (runEnd < r.end && Math.min(runEnd + bs, this.size) <= r.end) runEnd = Math.min(runEnd + bs, this.size);
              await c.direct(blockStart, runEnd - blockStart);
              for (let b = block; b * bs < runEnd; b++) this.setBit(b);
              pos = runEnd;
              continue;
            }
            const buf = await this.base.read(blockStart, blockEnd - blockStart);
            c.apply(buf, blockStart, pos, segEnd);
            await this.overlay.write(blockStart, buf, opts);
            this.setBit(block);
            pos = segEnd;
          }
        }
      });
    });
  }

  private setBit(block: number): void {
    this.bits[Math.floor(block / 8)]! |= 1 << block % 8;
  }

  private bit(block: number): boolean {
    return ((this.bits[Math.floor(block / 8)]! >> block % 8) & 1) === 1;
  }

  /** Split [offset, offset+length) into maximal runs of blocks with the same bit. */
  private runs(offset: number, length: number): Run[] {
    const out: Run[] = [];
    const end = offset + length;
    const lastBlock = Math.ceil(end / this.blockSize);
    let pos = offset;
    while (pos < end) {
      const block = Math.floor(pos / this.blockSize);
      const overlaid = this.bit(block);
      const stop = Math.min(this.firstBlockNot(overlaid, block + 1, lastBlock) * this.blockSize, end);
      out.push({ start: pos, end: stop, overlaid });
      pos = stop;
    }
    return out;
  }

  /** The first block in [from, limit) whose bit differs from `overlaid`, else `limit`. Skips whole bytes. */
  private firstBlockNot(overlaid: boolean, from: number, limit: number): number {
    const same = overlaid ? 0xff : 0;
    let b = from;
    while (b < limit) {
      if (b % 8 === 0 && this.bits[b / 8] === same) {
        b += 8;
        continue;
      }
      if (this.bit(b) !== overlaid) return b;
      b++;
    }
    return limit;
  }
}
