import { createRequire } from 'node:module';

interface ZstdModule {
  compress(data: Uint8Array, params?: Record<string, unknown>): Buffer;
  decompress(data: Uint8Array): Buffer;
}

interface ZstdBinding {
  DCtx: new () => { decompress(dst: Uint8Array, src: Uint8Array): number };
}

export interface Zstd extends ZstdModule {
  /**
   * Decompress `src` (complete frames) into `dst`; resolves the bytes written. Throws when the output
   * would not fit or the data is not valid zstd. One decompression context per thread, reused.
   */
  decompressInto(dst: Uint8Array, src: Uint8Array): number;
}

/**
 * zstd through the `zstd-napi` addon (Node 20 has no built-in zstd). Loaded lazily and optionally:
 * when the addon is missing or fails to load, `zstd` is null, writers store objects uncompressed
 * (the envelope's compressed flag stays clear) and only reading an already-compressed object fails.
 */
export const zstd: Zstd | null = (() => {
  try {
    const req = createRequire(import.meta.url);
    const m = req('zstd-napi') as ZstdModule;
    const binding = req('zstd-napi/binding') as ZstdBinding;
    let dctx: InstanceType<ZstdBinding['DCtx']> | null = null;
    const z: Zstd = {
      compress: m.compress,
      decompress: m.decompress,
      decompressInto: (dst, src) => (dctx ??= new binding.DCtx()).decompress(dst, src),
    };
    const probe = Buffer.alloc(64, 1);
    const packed = z.compress(probe);
    const out = Buffer.alloc(64);
    if (!z.decompress(packed).equals(probe) || z.decompressInto(out, packed) !== 64 || !out.equals(probe)) return null;
    return z;
  } catch {
    return null;
  }
})();
