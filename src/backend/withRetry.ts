import type { Backend, ObjectType } from './Backend.js';
import { TidemarkError } from '../errors.js';

export interface RetryOptions {
  /** Attempts after the first (default 4). */
  retries?: number;
  /** First back-off delay; doubles each attempt (default 100 ms). */
  baseDelayMs?: number;
  /** Which failures are worth another attempt. Default: anything but a typed Tidemark error, plus E_BACKEND_IO. */
  isRetryable?: (err: unknown) => boolean;
  /** Called before each retry (logging). */
  onRetry?: (op: string, attempt: number, err: unknown) => void;
}

function defaultRetryable(err: unknown): boolean {
  if (err instanceof TidemarkError) return err.code === 'E_BACKEND_IO';
  return true;
}

/**
 * A backend that retries transient failures with exponential back-off. Safe because every operation is
 * idempotent on immutable objects (a repeated put of a name that landed resolves `false`). A listing
 * is retried only when it fails before yielding its first name.
 */
export function withRetry(next: Backend, opts: RetryOptions = {}): Backend {
  const retries = opts.retries ?? 4;
  const base = opts.baseDelayMs ?? 100;
  const retryable = opts.isRetryable ?? defaultRetryable;
  async function attempt<T>(op: string, fn: () => Promise<T>): Promise<T> {
    for (let i = 0; ; i++) {
      try {
        return await fn();
      } catch (err) {
        if (i >= retries || !retryable(err)) throw err;
        opts.onRetry?.(op, i + 1, err);
        await new Promise((r) => setTimeout(r, base * 2 ** i));
      }
    }
  }
  return {
    location: next.location,
    ...(next.cleanup ? { cleanup: (ms: number) => attempt('cleanup', () => next.cleanup!(ms)) } : {}),
    put: (t, n, d, o) => attempt('put', () => next.put(t, n, d, o)),
    get: (t, n) => attempt('get', () => next.get(t, n)),
    ...(next.getRange ? { getRange: (t: ObjectType, n: string, o: number, l: number, into?: Uint8Array) => attempt('getRange', () => next.getRange!(t, n, o, l, into)) } : {}),
    has: (t, n) => attempt('has', () => next.has(t, n)),
    remove: (t, n) => attempt('remove', () => next.remove(t, n)),
    stat: (t, n) => attempt('stat', () => next.stat(t, n)),
    list: (t: ObjectType) => ({
      async *[Symbol.asyncIterator]() {
        for (let i = 0; ; i++) {
          let yielded = false;
          try {
            for await (const name of next.list(t)) {
              yielded = true;
              yield name;
            }
            return;
          } catch (err) {
            if (yielded || i >= retries || !retryable(err)) throw err;
            opts.onRetry?.('list', i + 1, err);
            await new Promise((r) => setTimeout(r, base * 2 ** i));
          }
        }
      },
    }),
  };
}
