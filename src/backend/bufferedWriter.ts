import type { ObjectWriter } from './Backend.js';

/**
 * An ObjectWriter for a store without streaming writes: the pieces are kept (by reference) and
 * `put(name, bytes)` runs at commit, after `after`. For MemoryBackend and for wrappers that want
 * openWriter semantics on top of their own `put`.
 */
export function bufferedWriter(put: (name: string, data: Uint8Array) => Promise<boolean>): ObjectWriter {
  let pieces: Uint8Array[] | null = [];
  const closed = (): Promise<never> => Promise.reject(new Error('ObjectWriter: used after commit or abort'));
  return {
    write(data) {
      if (!pieces) return closed();
      pieces.push(data);
      return Promise.resolve();
    },
    async commit(name, after) {
      after?.catch(() => undefined); // observed below
      if (!pieces) return closed();
      const data = Buffer.concat(pieces);
      pieces = null;
      await after;
      return put(name, data);
    },
    async abort() {
      pieces = null;
    },
  };
}
