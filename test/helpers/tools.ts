import { spawnSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestContext } from 'node:test';

/**
 * Interop tests need real tools (qemu-img, qemu-io, qemu-nbd, nbdinfo, nbdcopy, qemu-system-x86_64).
 * Locally a missing tool skips the test with a note; under CI=true it fails: interop never silently
 * skips in CI.
 */
export function hasTool(name: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${name}`], { stdio: 'ignore' }).status === 0;
}

/** Returns false (and skips `t`) when a tool is missing outside CI; throws under CI. */
export function requireTools(t: TestContext, ...names: string[]): boolean {
  const missing = names.filter((n) => !hasTool(n));
  if (missing.length === 0) return true;
  if (process.env.CI === 'true') throw new Error(`required tool(s) missing in CI: ${missing.join(', ')} (install them in .ci/run)`);
  t.skip(`missing tool(s): ${missing.join(', ')}`);
  return false;
}

/** Run a command synchronously (tests only); throws with its stderr when it fails. */
export function run(cmd: string, args: string[], opts: { allowFail?: boolean; input?: Buffer | string } = {}): { status: number; stdout: string; stderr: string } {
  const r = spawnSync(cmd, args, { encoding: 'utf8', input: opts.input, maxBuffer: 256 * 1024 * 1024 });
  if (r.error) throw r.error;
  const res = { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
  if (!opts.allowFail && res.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${res.status}: ${r.stderr}`);
  return res;
}

/** A temporary directory removed when the test ends. */
export async function tempDir(t: TestContext, prefix = 'tidemark-'): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  // Retries: a process the test started (a VM runner being killed by a later hook) may still create a
  // file in the tree while it is removed (ENOTEMPTY); fs.rm retries that. A removal that still fails is
  // reported, not thrown: a throwing hook skips the hooks after it, and one of those kills the test's VM
  // (CI once left a guest running for 30 minutes that way).
  t.after(() => rm(dir, { recursive: true, force: true, maxRetries: 10, retryDelay: 100 }).catch((err: Error) => t.diagnostic(`could not remove ${dir}: ${err.message}`)));
  return dir;
}

/** The fast-check seed: fixed by default so runs repeat; FC_SEED overrides. fast-check prints it on failure. */
export function fcSeed(): number {
  return process.env.FC_SEED ? Number(process.env.FC_SEED) : 424242;
}
