import { readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { LocalBackend } from '../backend/LocalBackend.js';
import { UsageError } from '../errors.js';
import { decodeRepoConfig } from './RepoConfig.js';
import { Repository } from './Repository.js';

export interface PassphraseSource {
  /** A file whose first line is the passphrase. */
  passphraseFile?: string;
  /** Environment to read TIDEMARK_PASSPHRASE from (default process.env). */
  env?: NodeJS.ProcessEnv;
}

/** The passphrase from a file (first line) or TIDEMARK_PASSPHRASE, or undefined. */
export async function readPassphrase(src: PassphraseSource): Promise<string | undefined> {
  if (src.passphraseFile !== undefined) {
    const text = await readFile(src.passphraseFile, 'utf8').catch((err: NodeJS.ErrnoException) => {
      throw new UsageError(`cannot read passphrase file ${src.passphraseFile}: ${err.code ?? err.message}`);
    });
    const line = text.split(/\r?\n/)[0] ?? '';
    if (!line) throw new UsageError(`passphrase file ${src.passphraseFile} is empty`);
    return line;
  }
  const env = (src.env ?? process.env).TIDEMARK_PASSPHRASE;
  return env ? env : undefined;
}

/**
 * Where the local caches of repositories live (Repository `cacheRoot`): `$TIDEMARK_CACHE_DIR`, else
 * `$XDG_CACHE_HOME/tidemark`, else `~/.cache/tidemark`; `TIDEMARK_CACHE_DIR=off` turns caching off.
 */
export function defaultCacheRoot(env: NodeJS.ProcessEnv = process.env): string | undefined {
  const v = env.TIDEMARK_CACHE_DIR;
  if (v === 'off') return undefined;
  if (v) return resolve(v);
  return join(env.XDG_CACHE_HOME ? resolve(env.XDG_CACHE_HOME) : join(homedir(), '.cache'), 'tidemark');
}

/**
 * Open the repository in directory `path` (LocalBackend), asking for the passphrase only when the
 * repository is encrypted — a TIDEMARK_PASSPHRASE set for other repositories does not get in the way.
 */
export async function openRepositoryAt(path: string, src: PassphraseSource & { workers?: number } = {}): Promise<Repository> {
  const backend = new LocalBackend(path);
  let encrypted = false;
  try {
    const c = decodeRepoConfig(await backend.get('config', 'config'));
    encrypted = typeof c !== 'string' && c.encryption !== 'none';
  } catch {
    // Repository.open reports a missing or bad config precisely.
  }
  return Repository.open(backend, { passphrase: encrypted ? await readPassphrase(src) : undefined, workers: src.workers, cacheRoot: defaultCacheRoot(src.env) });
}
