import { DEFAULT_CHUNK_SIZE, DEFAULT_FANOUT, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE, REPO_FORMAT_VERSION } from './constants.js';

/**
 * The `config/config` object: plain JSON (it holds no secrets; it says whether keys are needed).
 * `chunkSize` and `fanout` are the defaults for new disks; each disk entry records its own.
 */
export interface RepoConfig {
  /** Format version: 2 (packs). */
  version: 2;
  /** Random 128-bit repository id (hex). */
  id: string;
  created: string;
  encryption: 'none' | 'aes-256-gcm';
  compression: 'none' | 'zstd';
  chunkSize: number;
  fanout: number;
}

export function encodeRepoConfig(c: RepoConfig): Buffer {
  return Buffer.from(JSON.stringify(c, null, 2) + '\n');
}

/** Parse and validate; returns a description of the problem instead of a config when invalid. */
export function decodeRepoConfig(bytes: Uint8Array): RepoConfig | string {
  let c: RepoConfig;
  try {
    c = JSON.parse(Buffer.from(bytes).toString('utf8')) as RepoConfig;
  } catch {
    return 'config is not JSON';
  }
  if (typeof c !== 'object' || c === null) return 'config is not an object';
  if ((c.version as number) === 1) return 'repository format version 1 (one file per chunk) is not supported by this build, which stores chunks in pack files (format 2); create a new repository with `repo init` and back up again (there is no converter)';
  if (c.version !== REPO_FORMAT_VERSION) return `repository format version ${String(c.version)} is not supported`;
  if (c.encryption !== 'none' && c.encryption !== 'aes-256-gcm') return `encryption ${String(c.encryption)} is not supported`;
  if (c.compression !== 'none' && c.compression !== 'zstd') return `compression ${String(c.compression)} is not supported`;
  if (!isChunkSize(c.chunkSize)) return `chunk size ${String(c.chunkSize)} is invalid`;
  if (!isFanout(c.fanout)) return `fanout ${String(c.fanout)} is invalid`;
  if (typeof c.id !== 'string' || !/^[0-9a-f]{32}$/.test(c.id)) return 'repository id is invalid';
  return c;
}

export function newRepoConfig(id: string, opts: { encrypted: boolean; compression: 'none' | 'zstd'; chunkSize?: number; fanout?: number }): RepoConfig {
  return {
    version: REPO_FORMAT_VERSION,
    id,
    created: new Date().toISOString(),
    encryption: opts.encrypted ? 'aes-256-gcm' : 'none',
    compression: opts.compression,
    chunkSize: opts.chunkSize ?? DEFAULT_CHUNK_SIZE,
    fanout: opts.fanout ?? DEFAULT_FANOUT,
  };
}

/** A power of two between 4 KiB and 4 MiB. */
export function isChunkSize(n: unknown): n is number {
  return typeof n === 'number' && Number.isInteger(n) && n >= MIN_CHUNK_SIZE && n <= MAX_CHUNK_SIZE && (n & (n - 1)) === 0;
}

/** 2..65536 digests per index page. */
export function isFanout(n: unknown): n is number {
  return typeof n === 'number' && Number.isInteger(n) && n >= 2 && n <= 65536;
}
