import type { FileHandle, open as fsOpen } from 'node:fs/promises';
import { unlink } from 'node:fs/promises';
import type { ObjectWriter } from './Backend.js';
import { openNewFile } from './writeNewFile.js';
import { writevAllHandle } from '../util/writevAll.js';

/** Buffers handed to one pwritev (libuv splits beyond IOV_MAX anyway; this bounds one call's work). */
const WRITEV_BATCH = 256;

/** What a LocalObjectWriter needs from its LocalBackend. */
export interface LocalWriterIO {
  /** How the temp file is opened (LocalBackend's fault-injection seam). */
  open: typeof fsOpen;
  /** fdatasync after this many bytes were written since the last one (0: only at commit). */
  syncEvery: number;
  /** Link the fsynced, closed temp file under `name` once `after` resolves; removes it on any failure. */
  publish(tmp: string, name: string, after: Promise<unknown> | undefined): Promise<boolean>;
  /** The error to report for a failed write or sync (ENOSPC -> NoSpaceError...). */
  fail(err: unknown, name: string): Error;
}

/**
 * An object streamed into `<root>/tmp/<type>.<random>.part` while it is built (Backend.openWriter).
 *
 * Writes are queued and appended by one drain loop (pwritev of everything queued, in order), so callers
 * never wait for the disk per piece. Every `syncEvery` bytes the loop fdatasyncs: the kernel writes the
 * pack out while it fills instead of all at once at commit, and the fsync at commit only has the last
 * few MiB to write. Nothing is visible under an object name before commit, which fsyncs and closes the
 * temp file and then publishes it exactly like LocalBackend.put (link without replacing, fsync the
 * directory). The first failure is sticky: later writes and the commit reject with it, and the temp file
 * is removed. A crash leaves only the temp file, which `cleanup` (prune) removes.
 */
export class LocalObjectWriter implements ObjectWriter {
  private fh: FileHandle | null = null;
  private queue: Uint8Array[] = [];
  private running: Promise<void> | null = null;
  private failure: unknown = null;
  private position = 0;
  private unsynced = 0;
  private state: 'open' | 'committing' | 'done' = 'open';

  constructor(
    private readonly tmp: string,
    private readonly io: LocalWriterIO,
  ) {}

  write(data: Uint8Array): Promise<void> {
    if (this.state !== 'open') return Promise.reject(new Error('ObjectWriter: write after commit or abort'));
    if (data.length > 0) this.queue.push(data);
    const p = this.failure ? Promise.reject(this.failure) : this.drain();
    p.catch(() => undefined); // sticky: commit reports it, so an unawaited write is not an unhandled rejection
    return p;
  }

  async commit(name: string, after?: Promise<unknown>): Promise<boolean> {
    after?.catch(() => undefined); // observed below
    if (this.state !== 'open') throw new Error('ObjectWriter: commit after commit or abort');
    this.state = 'committing';
    try {
      await this.drain();
      if (this.failure) throw this.failure;
      this.fh ??= await openNewFile(this.tmp, this.io.open); // an empty object
      await this.fh.sync();
      await this.closeFile();
    } catch (err) {
      await this.discard();
      await after?.catch(() => undefined);
      throw this.io.fail(err, name);
    }
    this.state = 'done';
    return this.io.publish(this.tmp, name, after);
  }

  async abort(): Promise<void> {
    if (this.state === 'done') return;
    this.state = 'done';
    await this.discard();
  }

  /** Run the drain loop unless it runs already; resolves when the queue is empty (rejects on failure). */
  private drain(): Promise<void> {
    this.running ??= (async () => {
      try {
        while (this.queue.length > 0 && !this.failure) await this.step();
      } finally {
        this.running = null; // same tick as the loop's last check: a later write starts a new loop
      }
    })();
    return this.running;
  }

  private async step(): Promise<void> {
    const bufs = this.queue.splice(0, WRITEV_BATCH);
    let total = 0;
    for (const b of bufs) total += b.length;
    try {
      this.fh ??= await openNewFile(this.tmp, this.io.open);
      await writevAllHandle(this.fh, this.position, bufs, total, this.tmp);
      this.position += total;
      this.unsynced += total;
      if (this.io.syncEvery > 0 && this.unsynced >= this.io.syncEvery) {
        this.unsynced = 0;
        await this.fh.datasync();
      }
    } catch (err) {
      this.failure ??= err;
      this.queue = [];
      throw err;
    }
  }

  /** Wait for the loop, close and remove the temp file (errors ignored: best effort after a failure). */
  private async discard(): Promise<void> {
    this.queue = [];
    await this.running?.catch(() => undefined);
    await this.closeFile().catch(() => undefined);
    await unlink(this.tmp).catch(() => undefined);
  }

  private async closeFile(): Promise<void> {
    const fh = this.fh;
    this.fh = null;
    await fh?.close();
  }
}
