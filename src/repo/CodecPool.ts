/**
 * A pool of worker threads that digest, compress and encrypt chunks (the CPU part of a backup), so
 * hashing/zstd run on other cores while the main thread does I/O. Jobs go to the least busy worker.
 * Whether it pays depends on cores: see bench/repo.ts and docs/design.md (repo section) ("worker threads").
 */
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import type { DecodeBlobsResult, WindowBlob } from './decodeBlobs.js';
import type { RepoKeys } from './ObjectCodec.js';

/**
 * Codec workers a backup uses unless told otherwise: one per core beyond the first, at most 4; none on
 * 2 cores, where hashing and compressing inline measured as fast as one worker (the second core is
 * busy with the kernel's I/O; see docs/design.md "Packs: measured").
 */
export function defaultCodecWorkers(cores = availableParallelism()): number {
  return cores > 2 ? Math.min(4, cores - 1) : 0;
}

interface Pending {
  resolve: (r: { digest: string; bytes: Buffer } | DecodeBlobsResult) => void;
  reject: (e: Error) => void;
}

interface Reply {
  id: number;
  digest?: string;
  bytes?: Uint8Array;
  error?: string;
  decoded?: DecodeBlobsResult;
}

export class CodecPool {
  private readonly workers: Array<{ w: Worker; busy: number }> = [];
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;

  constructor(size: number, keys: RepoKeys | null, zstdLevel: number) {
    const url = new URL('./codecWorker.js', import.meta.url);
    for (let i = 0; i < size; i++) {
      const w = new Worker(url, { workerData: { encKey: keys?.encKey, idKey: keys?.idKey, zstdLevel } });
      const slot = { w, busy: 0 };
      w.on('message', (m: Reply) => {
        if (--slot.busy === 0) w.unref(); // idle workers do not keep the process alive
        const p = this.pending.get(m.id);
        this.pending.delete(m.id);
        if (!p) return;
        if (m.error !== undefined) p.reject(new Error(`codec worker: ${m.error}`));
        else if (m.decoded) p.resolve(m.decoded);
        else p.resolve({ digest: m.digest!, bytes: Buffer.from(m.bytes!.buffer, m.bytes!.byteOffset, m.bytes!.byteLength) });
      });
      w.on('error', (err) => {
        for (const [id, p] of this.pending) {
          this.pending.delete(id);
          p.reject(err);
        }
      });
      w.unref();
      this.workers.push(slot);
    }
  }

  /** Digest and envelope-encode one chunk in a worker. */
  encode(data: Uint8Array): Promise<{ digest: string; bytes: Buffer }> {
    return this.send({ id: 0, data }) as Promise<{ digest: string; bytes: Buffer }>;
  }

  /**
   * decodeBlobs (chunks) in a worker: one message per read window. `window` and `plain` must be views of
   * SharedArrayBuffers (restore's reusable slots): the worker reads the window and writes plaintexts
   * into `plain` in place; the caller must not touch either until the promise settles.
   */
  decode(window: Uint8Array, blobs: readonly WindowBlob[], plain: Uint8Array): Promise<DecodeBlobsResult> {
    if (!(window.buffer instanceof SharedArrayBuffer) || !(plain.buffer instanceof SharedArrayBuffer)) throw new TypeError('CodecPool.decode: window and plain must be views of SharedArrayBuffers');
    const view = (b: Uint8Array): Uint8Array => new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
    return this.send({ id: 0, op: 'decode', window: view(window), plain: view(plain), blobs }) as Promise<DecodeBlobsResult>;
  }

  private send(msg: { id: number } & Record<string, unknown>, transfer: ArrayBuffer[] = []): Promise<unknown> {
    const slot = this.workers.reduce((a, b) => (b.busy < a.busy ? b : a));
    const id = this.nextId++;
    msg.id = id;
    if (slot.busy++ === 0) slot.w.ref();
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as Pending['resolve'], reject });
      slot.w.postMessage(msg, transfer);
    });
  }

  async close(): Promise<void> {
    await Promise.all(this.workers.map((s) => s.w.terminate()));
    this.workers.length = 0;
  }
}
