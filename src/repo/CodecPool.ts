/**
 * A pool of worker threads that digest, compress and encrypt chunks (the CPU part of a backup), so
 * hashing/zstd run on other cores while the main thread does I/O. Jobs go to the least busy worker.
 * Whether it pays depends on cores: see bench/repo.ts and docs/design.md (repo section) ("worker threads").
 */
import { Worker } from 'node:worker_threads';
import type { DecodeBlobsResult, WindowBlob } from './decodeBlobs.js';
import type { RepoKeys } from './ObjectCodec.js';

interface Pending {
  resolve: (r: { digest: string; bytes: Buffer } | DecodeBlobsResult) => void;
  reject: (e: Error) => void;
}

interface Reply {
  id: number;
  digest?: string;
  bytes?: Uint8Array;
  error?: string;
  decoded?: { ok: true; plain: Uint8Array; lengths: number[] } | { ok: false; blob: number; detail: string };
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
        else if (m.decoded) {
          const d = m.decoded;
          p.resolve(d.ok ? { ok: true, plain: Buffer.from(d.plain.buffer, d.plain.byteOffset, d.plain.byteLength), lengths: d.lengths } : d);
        } else p.resolve({ digest: m.digest!, bytes: Buffer.from(m.bytes!.buffer, m.bytes!.byteOffset, m.bytes!.byteLength) });
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
   * decodeBlobs (chunks) in a worker: one message per read window. The window's memory is transferred
   * to the worker (the caller must not use `window` afterwards), the plaintexts come back transferred.
   */
  decode(window: Buffer, blobs: readonly WindowBlob[]): Promise<DecodeBlobsResult> {
    // Transfer only a buffer the window owns whole; else copy (a transfer would detach shared memory).
    let own = window;
    if (window.byteOffset !== 0 || window.byteLength !== window.buffer.byteLength) {
      own = Buffer.allocUnsafeSlow(window.length); // never from the shared pool
      window.copy(own);
    }
    const ab = own.buffer as ArrayBuffer;
    return this.send({ id: 0, op: 'decode', window: new Uint8Array(ab, 0, own.byteLength), blobs }, [ab]) as Promise<DecodeBlobsResult>;
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
