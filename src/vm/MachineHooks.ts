/**
 * A machine's freeze/thaw hooks: host executables Tidemark runs around a production checkpoint when the
 * guest agent does not answer (src/checkpoint/quiesce.ts), e.g. to flush a database over ssh.
 *
 * Contract of a hook: run as `<path> freeze|thaw` with the environment of Tidemark plus
 * TIDEMARK_MACHINE_ID, TIDEMARK_MACHINE_NAME, TIDEMARK_MACHINE_DIR and TIDEMARK_HOOK (freeze|thaw),
 * stdin closed, in its own process group; exit 0 = success, anything else (or running past the
 * timeout, which SIGKILLs its process group) = failure. The last lines of its output go into the error.
 * A thaw hook must tolerate running without a preceding freeze (the stale-freeze thaw of a later
 * quiesce may come after the guest restarted, and a failed freeze hook is followed by a thaw).
 */
import { spawn } from 'node:child_process';
import { access, constants } from 'node:fs/promises';
import { resolve } from 'node:path';
import { ExitCode, TidemarkError, UsageError } from '../errors.js';
import { Inventory, type MachineRecord } from './Inventory.js';
import { validateConfig, type MachineHooks } from './MachineConfig.js';
import { findMachine, view, type MachineView } from './machines.js';
import { recoverMachine } from '../checkpoint/recover.js';

export type HookKind = 'freeze' | 'thaw';

/** A hook exited non-zero, was killed by its timeout, or could not be started. */
export class HookFailedError extends TidemarkError {
  constructor(machine: string, kind: HookKind, path: string, detail: string) {
    super('E_HOOK_FAILED', `machine ${machine}: ${kind} hook ${path} failed: ${detail}`, { machine, kind, path, detail }, ExitCode.IO);
  }
}

/** Run the `kind` hook of `m` (which must be configured). Resolves on exit 0; throws HookFailedError. */
export async function runHook(m: Pick<MachineRecord, 'id' | 'name' | 'dir'>, kind: HookKind, path: string, timeoutMs: number): Promise<void> {
  await new Promise<void>((resolvePromise, reject) => {
    // Its own process group, so a timeout kills what it started too (a grandchild holding the pipes
    // would otherwise keep us waiting).
    const child = spawn(path, [kind], {
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, TIDEMARK_MACHINE_ID: m.id, TIDEMARK_MACHINE_NAME: m.name, TIDEMARK_MACHINE_DIR: m.dir, TIDEMARK_HOOK: kind },
    });
    let out = '';
    const keep = (s: string) => (out = (out + s).slice(-2000));
    child.stdout.setEncoding('utf8').on('data', keep);
    child.stderr.setEncoding('utf8').on('data', keep);
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        child.kill('SIGKILL');
      }
    }, timeoutMs);
    // A hook that exited but left something running with our pipes open: stop reading after a grace.
    child.on('exit', () => setTimeout(() => {
      child.stdout.destroy();
      child.stderr.destroy();
    }, 2000).unref());
    const tail = () => (out.trim() ? `; output: ${out.trim().split('\n').slice(-5).join(' | ')}` : '');
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(new HookFailedError(m.name, kind, path, `cannot run it: ${err.message}`));
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (timedOut) reject(new HookFailedError(m.name, kind, path, `still running after ${timeoutMs} ms (killed)${tail()}`));
      else if (code === 0) resolvePromise();
      else reject(new HookFailedError(m.name, kind, path, `${signal ? `killed by ${signal}` : `exit status ${code}`}${tail()}`));
    });
  });
}

/**
 * Set or clear a machine's hooks: a path sets (made absolute; must be an executable file), '' clears,
 * undefined leaves as is. Allowed while the machine runs (hooks are host-side: the guest sees nothing).
 * Throws UsageError (not executable), ConfigInvalidError (thaw without freeze), VmNotFoundError.
 */
export async function setMachineHooks(home: string, ref: string, change: { freeze?: string; thaw?: string }): Promise<MachineView> {
  const next: { freeze?: string; thaw?: string } = {};
  for (const k of ['freeze', 'thaw'] as const) {
    const v = change[k];
    if (v === undefined || v === '') continue;
    const abs = resolve(v);
    try {
      await access(abs, constants.X_OK);
    } catch {
      throw new UsageError(`${k} hook ${abs} is not an executable file (chmod +x it, or give another path)`);
    }
    next[k] = abs;
  }
  return Inventory.transact(home, async (state) => {
    const m = findMachine(state, ref);
    await recoverMachine(m);
    const hooks: MachineHooks = { ...m.config.hooks };
    for (const k of ['freeze', 'thaw'] as const) {
      if (change[k] === '') delete hooks[k];
      else if (next[k] !== undefined) hooks[k] = next[k];
    }
    if (hooks.thaw !== undefined && hooks.freeze === undefined) throw new UsageError(`machine ${m.name}: hooks.thaw needs hooks.freeze (a thaw hook alone would never run): give --freeze-hook too`);
    const { hooks: _old, ...rest } = m.config;
    m.config = validateConfig({ ...rest, ...(hooks.freeze !== undefined || hooks.thaw !== undefined ? { hooks } : {}) }, `machine ${m.name}`);
    return view(m);
  });
}
