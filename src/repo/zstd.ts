import { createRequire } from 'node:module';

interface ZstdModule {
  compress(data: Uint8Array, params?: Record<string, unknown>): Buffer;
  decompress(data: Uint8Array): Buffer;
}

/**
 * zstd through the `zstd-napi` addon (Node 20 has no built-in zstd). Loaded lazily and optionally:
 * when the addon is missing or fails to load, `zstd` is null, writers store objects uncompressed
 * (the envelope's compressed flag stays clear) and only reading an already-compressed object fails.
 */
export const zstd: ZstdModule | null = (() => {
  try {
    const req = createRequire(import.meta.url);
    const m = req('zstd-napi') as ZstdModule;
    const probe = Buffer.alloc(64, 1);
    if (!m.decompress(m.compress(probe)).equals(probe)) return null;
    return m;
  } catch {
    return null;
  }
})();
