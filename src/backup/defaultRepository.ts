import { stat } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { LocalBackend } from '../backend/LocalBackend.js';
import { defaultCacheRoot, readPassphrase, type PassphraseSource } from '../repo/openRepositoryAt.js';
import { decodeRepoConfig } from '../repo/RepoConfig.js';
import { Repository } from '../repo/Repository.js';

/** `$TIDEMARK_HOME`, default `~/.local/share/tidemark`. */
export function tidemarkHome(env: NodeJS.ProcessEnv = process.env): string {
  return resolve(env.TIDEMARK_HOME || join(homedir(), '.local', 'share', 'tidemark'));
}

/** The default repository directory: `$TIDEMARK_HOME/repo`. */
export function defaultRepositoryPath(env: NodeJS.ProcessEnv = process.env): string {
  return join(tidemarkHome(env), 'repo');
}

/**
 * Open the repository at `path` (default: `$TIDEMARK_HOME/repo`). When `create` is set and the
 * directory holds no repository yet, create an unencrypted one with the built-in defaults and call
 * `onCreated(path)`. Only a missing `config` counts as "no repository": anything else (damage, wrong
 * passphrase) is reported as the repository layer reports it. The passphrase is asked for only when the
 * repository is encrypted.
 */
export async function openOrCreateRepository(path: string | undefined, opts: PassphraseSource & { create?: boolean; onCreated?: (path: string) => void; workers?: number } = {}): Promise<Repository> {
  const dir = resolve(path ?? defaultRepositoryPath(opts.env));
  const exists = await stat(join(dir, 'config', 'config')).then(() => true, () => false);
  const local = new LocalBackend(dir);
  // DeferredSyncBackend (batched fsyncs) is not the default: on the shared 2-core test VM it measured
  // 0.7x-1.3x of the plain backend (bench/backup.ts); pack files are the real fix.
  const backend = local;
  if (!exists && opts.create) {
    const repo = await Repository.init(backend, { workers: opts.workers, cacheRoot: defaultCacheRoot(opts.env) });
    opts.onCreated?.(dir);
    return repo;
  }
  let encrypted = false;
  try {
    const c = decodeRepoConfig(await local.get('config', 'config'));
    encrypted = typeof c !== 'string' && c.encryption !== 'none';
  } catch {
    // Repository.open reports a missing or bad config precisely.
  }
  return Repository.open(backend, { passphrase: encrypted ? await readPassphrase(opts) : undefined, workers: opts.workers, cacheRoot: defaultCacheRoot(opts.env) });
}
