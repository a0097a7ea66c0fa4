import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Backend } from '../../src/backend/Backend.js';
import { MemoryBackend } from '../../src/backend/MemoryBackend.js';
import { ObjectNotFoundError } from '../../src/backend/errors.js';
import { withConcurrencyLimit } from '../../src/backend/withConcurrencyLimit.js';
import { withRetry } from '../../src/backend/withRetry.js';

/** A backend whose next `failures` calls fail with a transient network-ish error. */
function flaky(next: Backend, failures: { n: number }): Backend {
  const maybeFail = (): void => {
    if (failures.n > 0) {
      failures.n--;
      throw Object.assign(new Error('ECONNRESET'), { code: 'ECONNRESET' });
    }
  };
  return {
    location: next.location,
    put: async (t, n, d) => (maybeFail(), next.put(t, n, d)),
    get: async (t, n) => (maybeFail(), next.get(t, n)),
    has: async (t, n) => (maybeFail(), next.has(t, n)),
    remove: async (t, n) => (maybeFail(), next.remove(t, n)),
    stat: async (t, n) => (maybeFail(), next.stat(t, n)),
    list: (t) => ({
      async *[Symbol.asyncIterator]() {
        maybeFail();
        yield* next.list(t);
      },
    }),
  };
}

test('withRetry: transient failures are retried until they pass', async () => {
  const failures = { n: 3 };
  const retried: string[] = [];
  const b = withRetry(flaky(new MemoryBackend(), failures), { baseDelayMs: 1, onRetry: (op) => retried.push(op) });
  assert.equal(await b.put('chunks', 'aabb', Buffer.from('x')), true);
  assert.deepEqual(retried, ['put', 'put', 'put']);
  failures.n = 2;
  const names: string[] = [];
  for await (const n of b.list('chunks')) names.push(n);
  assert.deepEqual(names, ['aabb']);
});

test('withRetry: gives up after `retries` and never retries a typed error', async () => {
  const failures = { n: 10 };
  const b = withRetry(flaky(new MemoryBackend(), failures), { baseDelayMs: 1, retries: 2 });
  await assert.rejects(b.get('chunks', 'aabb'), /ECONNRESET/);
  assert.equal(failures.n, 7, 'one attempt + 2 retries');
  let calls = 0;
  const inner = new MemoryBackend();
  const counting: Backend = { ...inner, location: inner.location, list: (t) => inner.list(t), put: inner.put.bind(inner), has: inner.has.bind(inner), remove: inner.remove.bind(inner), stat: inner.stat.bind(inner), get: (t, n) => (calls++, inner.get(t, n)) };
  await assert.rejects(withRetry(counting, { baseDelayMs: 1 }).get('chunks', 'aabb'), ObjectNotFoundError);
  assert.equal(calls, 1);
});

test('withConcurrencyLimit: never more than n operations in flight, all complete', async () => {
  const inner = new MemoryBackend();
  let inFlight = 0;
  let peak = 0;
  const slow: Backend = {
    location: 'slow',
    put: async (t, n, d) => {
      inFlight++;
      peak = Math.max(peak, inFlight);
      await new Promise((r) => setTimeout(r, 2));
      inFlight--;
      return inner.put(t, n, d);
    },
    get: (t, n) => inner.get(t, n),
    has: (t, n) => inner.has(t, n),
    remove: (t, n) => inner.remove(t, n),
    stat: (t, n) => inner.stat(t, n),
    list: (t) => inner.list(t),
  };
  const b = withConcurrencyLimit(slow, 3);
  await Promise.all(Array.from({ length: 30 }, (_, i) => b.put('chunks', `c${i}`, Buffer.from([i]))));
  assert.equal(peak, 3);
  let count = 0;
  for await (const n of b.list('chunks')) {
    await b.get('chunks', n); // calling the backend inside a listing must not deadlock
    count++;
  }
  assert.equal(count, 30);
  assert.throws(() => withConcurrencyLimit(inner, 0), RangeError);
});
