/**
 * Quiesce a machine's guest around an operation (a production or backup checkpoint's fork), so the
 * disks it captures are application-consistent: the guest's filesystems are flushed and frozen while
 * the operation runs, and thawed after it, always.
 *
 * How this works (`withQuiesce`):
 * - Machine not running (no live runner): nothing is in flight and nothing can write the disks, so
 *   there is nothing to freeze: `fn` runs as is, reported `application` / `none`. (The disks hold what
 *   the guest's last shutdown left: clean after a guest power-off or `vm stop`, only crash-consistent
 *   after `vm stop --force` or a host crash, which no later quiesce can repair.)
 * - Running: an exclusive flock on `<machine dir>/quiesce.lock` (non-waiting: a second quiesce of the
 *   same machine gets VmBusyError), then
 *   1. the guest agent on `<machine dir>/qga.sock`: connect and synchronise; if it reports `frozen`,
 *      that is a stale freeze (a Tidemark killed between freeze and thaw: the agent's freeze has no
 *      timeout and a live quiesce would hold both the lock and the agent's only connection), so thaw
 *      it first; then `guest-fsfreeze-freeze`, `fn`, `guest-fsfreeze-thaw` (retried once on a new
 *      connection). A freeze that fails or times out is followed by a best-effort thaw.
 *   2. else the machine's hooks (`config.hooks`): a marker `<machine dir>/quiesce-hooks.json`
 *      {pid, since, freeze, thaw} is written (atomically) before the freeze hook runs and removed
 *      after the thaw hook succeeded; a marker found at the start of a quiesce (whatever method then
 *      runs) was left by a dead process: a stale freeze, so its recorded thaw hook runs first (if
 *      that fails, the hooks are not used now). A failed freeze hook is followed by a best-effort thaw.
 *   3. else: with `fallback: 'crash'`, `fn` runs unquiesced, reported `crash` / `none`; otherwise
 *      QuiesceFailedError listing why each method failed.
 * - Thaw always runs once a freeze succeeded, whether `fn` resolved or threw. If `fn` threw, its error
 *   is rethrown (a thaw failure is logged); if `fn` succeeded but the thaw failed, QuiesceThawError.
 * - A Tidemark killed while the guest is frozen leaves it frozen until the next quiesce of that
 *   machine (any `checkpoint create --type production`, backup checkpoint) thaws it as above.
 */
import { open, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { TidemarkError } from '../errors.js';
import { flock } from '../native/native.js';
import { atomicWriteFile } from '../util/atomicWriteFile.js';
import { GuestAgent, guestAgentSocket } from '../vm/GuestAgent.js';
import { GuestAgentAbsentError, GuestAgentCommandError, GuestAgentNotRespondingError } from '../vm/guestAgentErrors.js';
import type { MachineRecord } from '../vm/Inventory.js';
import { HookFailedError, runHook } from '../vm/MachineHooks.js';
import { VmBusyError } from '../vm/errors.js';
import { pidAlive } from './recover.js';
import { QuiesceFailedError, QuiesceThawError } from './QuiesceError.js';

export type Consistency = 'application' | 'crash';
export type QuiesceMethod = 'guest-agent' | 'hooks' | 'none';

export interface QuiesceOptions {
  /** 'crash': when no method works, run `fn` unquiesced (crash-consistent) instead of failing. */
  fallback?: 'crash';
  /** Progress and warnings, one line each (e.g. `line => process.stderr.write(line + '\n')`). */
  log?: (line: string) => void;
  /** Timeout of each freeze/thaw command or hook run (default 60 s). */
  timeoutMs?: number;
  /**
   * How long to wait for the guest agent to answer the handshake before trying the hooks (default
   * min(timeoutMs, 5 s)): every quiesce of a guest without an agent waits this long.
   */
  agentTimeoutMs?: number;
}

/** Handed to `fn` while the guest is frozen (the agent connection is held: QEMU serves one client). */
export interface QuiesceContext {
  method: QuiesceMethod;
  /** The connected agent (method 'guest-agent'); e.g. to check `fsfreezeStatus()`. */
  agent?: GuestAgent;
}

export interface Quiesced<T> {
  result: T;
  consistency: Consistency;
  method: QuiesceMethod;
}

/** The marker of a hooks freeze in progress. */
interface HooksMarker {
  pid: number;
  since: string;
  freeze: string;
  thaw?: string;
}

/** True while the machine's runner is alive (starting or running: QEMU may write the disks). */
export function machineRunning(m: MachineRecord): boolean {
  return !!m.runtime && pidAlive(m.runtime.pid);
}

/**
 * Run `fn` with the guest of `m` quiesced (see the file comment for the method order, stale freezes
 * and thaw guarantees). Throws QuiesceFailedError (running, nothing worked, no fallback), VmBusyError
 * (another quiesce of this machine is in progress), QuiesceThawError, or whatever `fn` throws.
 */
export async function withQuiesce<T>(m: MachineRecord, opts: QuiesceOptions, fn: (ctx: QuiesceContext) => Promise<T>): Promise<Quiesced<T>> {
  const log = opts.log ?? (() => undefined);
  if (!machineRunning(m)) return { result: await fn({ method: 'none' }), consistency: 'application', method: 'none' };
  const timeoutMs = opts.timeoutMs ?? 60_000;
  const lock = await open(join(m.dir, 'quiesce.lock'), 'a+', 0o644);
  try {
    if (!(await flock(lock.fd, 'exclusive', false))) throw new VmBusyError(m.name, 'another quiesce of this machine (a production or backup checkpoint in progress)');
    const reasons: string[] = [];
    // A hooks freeze left by a dead process is thawed whatever method runs now.
    const staleHooksProblem = await thawStaleHooks(m, timeoutMs, log);

    const agentTimeoutMs = opts.agentTimeoutMs ?? Math.min(timeoutMs, 5000);
    const agent = await freezeWithAgent(m, agentTimeoutMs, timeoutMs, log, reasons);
    if (agent) {
      const out = await settle(() => fn({ method: 'guest-agent', agent }));
      const problem = await thawWithAgent(agent, m, agentTimeoutMs, timeoutMs, log);
      return finish(m, out, problem, 'guest-agent', log);
    }

    const hooks = m.config.hooks;
    if (hooks?.freeze && staleHooksProblem) reasons.push(`hooks: thawing the stale freeze failed: ${staleHooksProblem}`);
    else if (hooks?.freeze) {
      if (await freezeWithHooks(m, hooks.freeze, hooks.thaw, timeoutMs, log, reasons)) {
        const out = await settle(() => fn({ method: 'hooks' }));
        const problem = await thawWithHooks(m, hooks.thaw, timeoutMs, log);
        return finish(m, out, problem, 'hooks', log);
      }
    } else reasons.push('no freeze/thaw hooks configured');

    if (opts.fallback !== 'crash') throw new QuiesceFailedError(m.name, reasons);
    log(`quiesce ${m.name}: ${reasons.join('; ')}; continuing crash-consistent (--fallback crash)`);
    return { result: await fn({ method: 'none' }), consistency: 'crash', method: 'none' };
  } finally {
    await lock.close(); // drops the flock
  }
}

type Settled<T> = { ok: true; value: T } | { ok: false; error: unknown };

async function settle<T>(fn: () => Promise<T>): Promise<Settled<T>> {
  try {
    return { ok: true, value: await fn() };
  } catch (error) {
    return { ok: false, error };
  }
}

function finish<T>(m: MachineRecord, out: Settled<T>, thawProblem: string | undefined, method: 'guest-agent' | 'hooks', log: (l: string) => void): Quiesced<T> {
  if (!out.ok) {
    if (thawProblem) log(`quiesce ${m.name}: thaw failed after the operation failed: ${thawProblem}`);
    throw out.error;
  }
  if (thawProblem) throw new QuiesceThawError(m.name, method, thawProblem);
  return { result: out.value, consistency: 'application', method };
}

const isAgentError = (e: unknown) => e instanceof GuestAgentAbsentError || e instanceof GuestAgentNotRespondingError || e instanceof GuestAgentCommandError;

/** Connect, thaw a stale freeze, freeze. Resolves with the connected agent holding the freeze, or undefined (reason pushed). */
async function freezeWithAgent(m: MachineRecord, agentTimeoutMs: number, timeoutMs: number, log: (l: string) => void, reasons: string[]): Promise<GuestAgent | undefined> {
  const socket = guestAgentSocket(m.dir);
  let agent: GuestAgent;
  try {
    agent = await GuestAgent.connect(socket, { timeoutMs: agentTimeoutMs });
  } catch (err) {
    if (!isAgentError(err)) throw err;
    reasons.push(`guest agent: ${(err as TidemarkError).code === 'E_QGA_ABSENT' ? `no channel at ${socket}` : `no answer on ${socket}`}`);
    return undefined;
  }
  try {
    if ((await agent.fsfreezeStatus(timeoutMs)) === 'frozen') {
      log(`quiesce ${m.name}: the guest was left frozen (a Tidemark process died between freeze and thaw?); thawing it first`);
      await agent.fsfreezeThaw(timeoutMs);
    }
    const n = await agent.fsfreezeFreeze(timeoutMs);
    log(`quiesce ${m.name}: guest agent froze ${n} filesystem(s)`);
    return agent;
  } catch (err) {
    if (!isAgentError(err)) throw err;
    reasons.push(`guest agent: ${(err as Error).message}`);
    // A freeze that timed out may still complete in the guest: undo it (best effort).
    await agent.fsfreezeThaw(timeoutMs).catch(() => undefined);
    await agent.close();
    return undefined;
  }
}

/** Thaw (on the held connection, then once more on a new one). Resolves with a problem description or undefined. */
async function thawWithAgent(agent: GuestAgent, m: MachineRecord, agentTimeoutMs: number, timeoutMs: number, log: (l: string) => void): Promise<string | undefined> {
  try {
    const n = await agent.fsfreezeThaw(timeoutMs);
    log(`quiesce ${m.name}: guest agent thawed ${n} filesystem(s)`);
    return undefined;
  } catch (first) {
    await agent.close();
    try {
      const again = await GuestAgent.connect(agent.socketPath, { timeoutMs: Math.max(agentTimeoutMs, 5000) });
      try {
        const n = await again.fsfreezeThaw(timeoutMs);
        log(`quiesce ${m.name}: guest agent thawed ${n} filesystem(s) (second attempt)`);
        return undefined;
      } finally {
        await again.close();
      }
    } catch (second) {
      return `${(first as Error).message}; retry: ${(second as Error).message}`;
    }
  } finally {
    await agent.close();
  }
}

const markerPath = (m: MachineRecord) => join(m.dir, 'quiesce-hooks.json');

/** If a dead process left a hooks freeze (marker present), run its thaw hook. Resolves with a problem or undefined. */
async function thawStaleHooks(m: MachineRecord, timeoutMs: number, log: (l: string) => void): Promise<string | undefined> {
  const stale = await readMarker(m);
  if (!stale) return undefined;
  log(`quiesce ${m.name}: hooks freeze left by PID ${stale.pid} since ${stale.since} was never thawed; running the thaw hook first`);
  if (stale.thaw) {
    try {
      await runHook(m, 'thaw', stale.thaw, timeoutMs);
    } catch (err) {
      if (!(err instanceof HookFailedError)) throw err;
      log(`quiesce ${m.name}: thawing the stale hooks freeze failed (the marker stays; the next quiesce retries): ${err.message}`);
      return err.message;
    }
  }
  await rm(markerPath(m), { force: true });
  return undefined;
}

/** Write the marker, run the freeze hook. True when frozen (reason pushed otherwise). */
async function freezeWithHooks(m: MachineRecord, freeze: string, thaw: string | undefined, timeoutMs: number, log: (l: string) => void, reasons: string[]): Promise<boolean> {
  const marker: HooksMarker = { pid: process.pid, since: new Date().toISOString(), freeze, ...(thaw ? { thaw } : {}) };
  await atomicWriteFile(markerPath(m), `${JSON.stringify(marker)}\n`);
  try {
    await runHook(m, 'freeze', freeze, timeoutMs);
    log(`quiesce ${m.name}: freeze hook ${freeze} succeeded`);
    return true;
  } catch (err) {
    if (!(err instanceof HookFailedError)) throw err;
    reasons.push(`hooks: ${err.message}`);
    // The hook may have frozen part of the guest before failing: undo it (best effort).
    const problem = await thawWithHooks(m, thaw, timeoutMs, log);
    if (problem) log(`quiesce ${m.name}: thaw hook after the failed freeze: ${problem}`);
    return false;
  }
}

/** Run the thaw hook (if any); the marker goes once it succeeded. Resolves with a problem description or undefined. */
async function thawWithHooks(m: MachineRecord, thaw: string | undefined, timeoutMs: number, log: (l: string) => void): Promise<string | undefined> {
  if (thaw) {
    try {
      await runHook(m, 'thaw', thaw, timeoutMs);
      log(`quiesce ${m.name}: thaw hook ${thaw} succeeded`);
    } catch (err) {
      if (!(err instanceof HookFailedError)) throw err;
      return err.message; // the marker stays: the next quiesce retries the thaw
    }
  }
  await rm(markerPath(m), { force: true });
  return undefined;
}

/** The marker of a hooks freeze whose process is gone (a live one cannot exist: we hold the lock). */
async function readMarker(m: MachineRecord): Promise<HooksMarker | undefined> {
  let text: string;
  try {
    text = await readFile(markerPath(m), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  try {
    const v = JSON.parse(text) as HooksMarker;
    if (typeof v.pid === 'number' && typeof v.since === 'string' && typeof v.freeze === 'string') return v;
  } catch {
    // a torn or foreign file: treat as a stale freeze without a known thaw hook
  }
  return { pid: 0, since: 'unknown', freeze: m.config.hooks?.freeze ?? '', ...(m.config.hooks?.thaw ? { thaw: m.config.hooks.thaw } : {}) };
}
