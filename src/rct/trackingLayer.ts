import type { BlockDevice, Extent, Layer, WriteIdentity, WriteOptions, ZeroOptions } from '../blockdev/BlockDevice.js';
import { checkRange } from '../blockdev/checkRange.js';
import { ClosedError } from '../errors.js';
import { ChangeTracker, type RctStatus, type TrackerOptions } from './ChangeTracker.js';
import type { Range } from './Range.js';

/**
 * A BlockDevice whose writes, zeroes and trims are tracked, plus the RCT operations.
 * It also satisfies the NBD server's ChangeSource (changesSince / hasId / listIds).
 */
export interface TrackedDevice extends BlockDevice {
  readonly tracker: ChangeTracker;
  /** End the current generation; resolves with a new opaque RCT ID once it is durable. */
  seal(): Promise<string>;
  /** Sorted, merged byte ranges changed after `since` (up to `until`). Throws TrackingInvalidError, UnknownRctIdError, UsageError. */
  changes(since: string, until?: string): Promise<Range[]>;
  /** Synchronous, cheap: the changed ranges since `since` inside [offset, offset+length), clipped to it. */
  changedIn(since: string, offset: number, length: number, until?: string): Range[];
  status(): RctStatus;
  /** Forget an ID and free its state. Throws like `changes`. */
  drop(id: string): Promise<void>;
  /** NBD ChangeSource: `changedIn` as a promise. */
  changesSince(id: string, offset: number, length: number): Promise<Range[]>;
  hasId(id: string): Promise<boolean>;
  listIds(): Promise<string[]>;
}

/** The change-tracking layer over a tracker opened in `write` mode for the device's disk. */
export function trackingLayer(tracker: ChangeTracker): Layer {
  return (next: BlockDevice) => new TrackingDevice(next, tracker);
}

/**
 * Open the tracking state of `diskPath` and wrap `device` (the disk at that path) with it. A writable
 * device starts a tracking epoch; a read-only one only answers queries. Throws TrackingNotEnabledError.
 * Never throws because tracking is invalid: it restarts, and older IDs then fail with TrackingInvalidError.
 */
export async function openTracked(device: BlockDevice, diskPath: string, opts: TrackerOptions = {}): Promise<TrackedDevice> {
  const tracker = await ChangeTracker.open(diskPath, device, device.capabilities.readOnly ? 'meta' : 'write', opts);
  return new TrackingDevice(device, tracker);
}

class TrackingDevice implements TrackedDevice {
  private inflight = 0;
  private idle: Array<() => void> = [];
  private closing: Promise<void> | null = null;

  constructor(
    private readonly next: BlockDevice,
    readonly tracker: ChangeTracker,
  ) {
    if (next.identity) this.identity = () => next.identity!();
    // Reads are not tracked: offer the device's zero-copy read exactly when it has one.
    if (next.readInto) this.readInto = (target, targetOffset, offset, length) => next.readInto!(target, targetOffset, offset, length);
  }

  identity?: () => Promise<WriteIdentity>;
  readInto?: (target: Uint8Array, targetOffset: number, offset: number, length: number) => Promise<void>;

  get size(): number {
    return this.next.size;
  }
  get logicalSectorSize(): number {
    return this.next.logicalSectorSize;
  }
  get physicalSectorSize(): number {
    return this.next.physicalSectorSize;
  }
  get capabilities() {
    return this.next.capabilities;
  }

  read(offset: number, length: number): Promise<Buffer> {
    return this.next.read(offset, length);
  }
  extents(offset: number, length: number): Promise<Extent[]> {
    return this.next.extents(offset, length);
  }

  write(offset: number, data: Uint8Array, opts?: WriteOptions): Promise<void> {
    return this.tracked(offset, data.length, () => this.next.write(offset, data, opts));
  }
  zero(offset: number, length: number, opts?: ZeroOptions): Promise<void> {
    return this.tracked(offset, length, () => this.next.zero(offset, length, opts));
  }
  trim(offset: number, length: number, opts?: WriteOptions): Promise<void> {
    return this.tracked(offset, length, () => this.next.trim(offset, length, opts));
  }

  /**
   * Bits first (so any .rct persisted from now on covers the write), then the durable .mrt mark, then
   * the data. If a seal ran while the write was in flight, record it again in the new generation: the
   * write may land on either side of the seal.
   */
  private tracked(offset: number, length: number, op: () => Promise<void>): Promise<void> {
    if (this.closing) return Promise.reject(new ClosedError('tracked device'));
    if (length === 0 || this.next.capabilities.readOnly) return op();
    const gen = this.tracker.generation;
    let wait: Promise<void> | null;
    try {
      checkRange(offset, length, this.next.size);
      wait = this.tracker.beginWrite(offset, length);
    } catch (err) {
      return Promise.reject(err);
    }
    this.inflight++;
    // No async function here: the hot path (no wait) adds no promise hops beyond the device's own.
    const p = wait ? wait.then(op) : op();
    return p.then(
      () => this.ended(offset, length, gen),
      (err: unknown) => {
        this.ended(offset, length, gen);
        throw err;
      },
    );
  }

  private ended(offset: number, length: number, gen: number): void {
    this.tracker.endWrite(offset, length, gen);
    if (--this.inflight === 0 && this.idle.length > 0) for (const f of this.idle.splice(0)) f();
  }

  async flush(): Promise<void> {
    await this.next.flush();
    if (this.tracker.mode === 'write') await this.tracker.flush();
  }

  /** Clean close: waits for in-flight writes, flushes, closes the device, then persists the exact bits. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      if (this.inflight > 0) await new Promise<void>((r) => this.idle.push(r));
      if (this.tracker.mode === 'meta') {
        await this.next.close();
        await this.tracker.abandon();
        return;
      }
      let after: string | null;
      try {
        await this.next.flush();
        after = this.next.identity ? (await this.next.identity()).current : null;
        await this.next.close();
      } catch (err) {
        // Not a clean close: leave the state as a crash would (the .mrt still covers every write).
        await this.tracker.abandon();
        throw err;
      }
      await this.tracker.closeClean(after);
    })();
    return this.closing;
  }

  seal(): Promise<string> {
    return this.tracker.seal();
  }
  async changes(since: string, until?: string): Promise<Range[]> {
    return this.tracker.changes(since, until);
  }
  changedIn(since: string, offset: number, length: number, until?: string): Range[] {
    return this.tracker.changedIn(since, offset, length, until);
  }
  status(): RctStatus {
    return this.tracker.status();
  }
  drop(id: string): Promise<void> {
    return this.tracker.drop(id);
  }
  async changesSince(id: string, offset: number, length: number): Promise<Range[]> {
    return this.tracker.changedIn(id, offset, length);
  }
  async hasId(id: string): Promise<boolean> {
    try {
      this.tracker.store.indexOf(id);
      return true;
    } catch {
      return false;
    }
  }
  async listIds(): Promise<string[]> {
    return this.tracker.store.ids.map((x) => this.tracker.store.idString(x));
  }
}

/** True when `d` is a TrackedDevice. */
export function isTracked(d: BlockDevice): d is TrackedDevice {
  return typeof (d as Partial<TrackedDevice>).seal === 'function' && (d as Partial<TrackedDevice>).tracker instanceof ChangeTracker;
}
