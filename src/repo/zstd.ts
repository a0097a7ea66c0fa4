import { createRequire } from 'node:module';

interface ZstdModule {
  compress(data: Uint8Array, params?: Record<string, unknown>): Buffer;
  decompress(data: Uint8Array): Buffer;
}

interface ZstdBinding {
  DCtx: new () => { decompress(dst: Uint8Array, src: Uint8Array): number };
  CCtx: new () => { compress(dst: Uint8Array, src: Uint8Array, level: number): number };
  compressBound(size: number): number;
}

export interface Zstd extends ZstdModule {
  /**
   * Decompress `src` (complete frames) into `dst`; resolves the bytes written. Throws when the output
   * would not fit or the data is not valid zstd. One decompression context per thread, reused.
   */
  decompressInto(dst: Uint8Array, src: Uint8Array): number;
  /**
   * Compress `src` at `level` into `dst`; resolves the bytes written. Throws when the result would not
   * fit `dst` (give `dst` of src.length - 1 bytes to ask "only if it gets smaller"). One context per
   * thread, reused; no allocation.
   */
  compressInto(dst: Uint8Array, src: Uint8Array, level: number): number;
  compressBound(size: number): number;
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
    let cctx: InstanceType<ZstdBinding['CCtx']> | null = null;
    const z: Zstd = {
      compress: m.compress,
      decompress: m.decompress,
      decompressInto: (dst, src) => (dctx ??= new binding.DCtx()).decompress(dst, src),
      compressInto: (dst, src, level) => (cctx ??= new binding.CCtx()).compress(dst, src, level),
      compressBound: (size) => binding.compressBound(size),
    };
    const probe = Buffer.alloc(64, 1);
    const packed = z.compress(probe);
    const out = Buffer.alloc(64);
    const packed2 = Buffer.alloc(z.compressBound(64));
    const n = z.compressInto(packed2, probe, 3);
    if (!z.decompress(packed).equals(probe) || z.decompressInto(out, packed) !== 64 || !out.equals(probe) || !z.decompress(packed2.subarray(0, n)).equals(probe)) return null;
    return z;
  } catch {
    return null;
  }
})();
