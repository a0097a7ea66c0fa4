import type { Backend, ObjectType } from './Backend.js';

/**
 * A backend that runs at most `n` operations of `next` at once. Callers may fire as many requests as
 * they like; the excess waits in FIFO order. A listing takes one slot while it reads all names and
 * releases it before yielding, so a consumer that calls the backend inside its loop cannot deadlock.
 */
export function withConcurrencyLimit(next: Backend, n: number): Backend {
  if (!Number.isInteger(n) || n < 1) throw new RangeError(`concurrency limit must be a positive integer, got ${n}`);
  let active = 0;
  const waiting: Array<() => void> = [];
  const acquire = async (): Promise<void> => {
    if (active < n) {
      active++;
      return;
    }
    await new Promise<void>((r) => waiting.push(r));
  };
  const release = (): void => {
    const w = waiting.shift();
    if (w) w();
    else active--;
  };
  async function limited<T>(fn: () => Promise<T>): Promise<T> {
    await acquire();
    try {
      return await fn();
    } finally {
      release();
    }
  }
  return {
    location: next.location,
    ...(next.cleanup ? { cleanup: (ms: number) => limited(() => next.cleanup!(ms)) } : {}),
    put: (t, name, d, o) => limited(() => next.put(t, name, d, o)),
    get: (t, name) => limited(() => next.get(t, name)),
    ...(next.getRange ? { getRange: (t: ObjectType, name: string, o: number, l: number, into?: Uint8Array) => limited(() => next.getRange!(t, name, o, l, into)) } : {}),
    has: (t, name) => limited(() => next.has(t, name)),
    remove: (t, name) => limited(() => next.remove(t, name)),
    stat: (t, name) => limited(() => next.stat(t, name)),
    list: (t: ObjectType) => ({
      async *[Symbol.asyncIterator]() {
        const names = await limited(async () => {
          const out: string[] = [];
          for await (const name of next.list(t)) out.push(name);
          return out;
        });
        yield* names;
      },
    }),
  };
}
