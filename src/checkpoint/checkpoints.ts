/**
 * Checkpoints of machines, offline or running (a running machine's runner forks and merges online:
 * see src/vm/RunnerDisks.ts and runnerLink.ts). A checkpoint forks every disk: a new differencing disk (.avhdx) is
 * created over the disk the machine uses now (which becomes frozen), and the configuration points at
 * the child. Chain invariant: checkpoints[i].disks[s].child === checkpoints[i+1].disks[s].parent, and
 * the newest checkpoint's children are the machine's disks.
 *
 * Write ordering: children are created (fsynced, linked into place) before the inventory that points
 * at them is committed; a job killed in between leaves unreferenced children, deleted by recovery.
 * Remove merges the newest checkpoint's children into their parents (tracked, see mergeChild.ts), then
 * commits the inventory. Apply deletes the later state's children and creates fresh ones.
 */
import { debugStep } from '../util/debugSteps.js';
import { randomUUID } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { TidemarkError, UsageError, NotSupportedError } from '../errors.js';
import { createDisk } from '../disk/createDisk.js';
import { detectDiskFormat } from '../disk/detectDiskFormat.js';
import { Inventory, type CheckpointRecord, type CheckpointType, type Holder, type MachineRecord } from '../vm/Inventory.js';
import { findMachine, resolveTargets } from '../vm/machines.js';
import { VmBusyError, VmNotFoundError } from '../vm/errors.js';
import type { ForkResult } from '../vm/RunnerDisks.js';
import type { RunnerClient } from '../vm/runnerControl.js';
import { childName, finishRemoval, liveHolder, mergeBack, recoverMachine, runnerHolder } from './recover.js';
import { connectRunner, reconcileRunner, runnerGone } from './runnerLink.js';
import { sealDisk } from './sealDisk.js';
import { withQuiesce, type Consistency, type QuiesceMethod, type QuiesceOptions } from './quiesce.js';
import { QuiesceThawError } from './QuiesceError.js';

export interface CheckpointView {
  machine: string;
  machineId: string;
  id: string;
  name: string;
  type: CheckpointType;
  createdAt: string;
  disks: Array<{ slot: number; parent: string; child: string }>;
  holder?: Holder;
  /** How consistent the frozen disks are, and how the guest was quiesced (absent on older records). */
  consistency?: Consistency;
  quiesce?: QuiesceMethod;
}

const viewOf = (m: MachineRecord, c: CheckpointRecord): CheckpointView => ({
  machine: m.name, machineId: m.id, id: c.id, name: c.name, type: c.type, createdAt: c.createdAt, disks: c.disks, ...(c.holder ? { holder: c.holder } : {}),
  ...(c.consistency ? { consistency: c.consistency } : {}), ...(c.quiesce ? { quiesce: c.quiesce } : {}),
});

/**
 * Refuse when a live job holds the machine (VmBusyError); unless `online`, also when the machine runs
 * (operations that cannot run online: apply).
 */
function assertFree(m: MachineRecord, opts: { online?: boolean } = {}): void {
  const h = liveHolder(m) ?? (opts.online ? undefined : runnerHolder(m));
  if (h) throw new VmBusyError(m.name, `${h.command} (PID ${h.pid}) since ${h.since}`);
}

export interface ForkOptions {
  /** Seal each disk's RCT at the fork instant and record the IDs as `rctIds` (backup checkpoints). */
  seal?: boolean;
  /**
   * Where sealing puts its warnings (tracking re-enabled on a disk that had lost it, offline only), and
   * quiesce its fallback (a backup checkpoint of a running guest that could not be quiesced).
   */
  warnings?: string[];
  /**
   * Quiesce the guest of a running machine around the online fork (withQuiesce). Default by type
   * (`quiescePolicy`): standard none, production required, backup with automatic crash fallback.
   * `false`: never (the caller quiesced already, e.g. a group checkpoint).
   */
  quiesce?: QuiesceOptions | false;
}

/**
 * The quiesce a checkpoint type asks for: `standard` none (crash-consistent while running); `production`
 * required (QuiesceFailedError unless `fallback: 'crash'`); `backup` when possible, else crash-consistent
 * automatically (an export or backup should not fail because the guest has no agent; the result says so).
 */
export function quiescePolicy(type: CheckpointType, opts: QuiesceOptions = {}): QuiesceOptions | false {
  if (type === 'standard') return false;
  const o = { ...agentTimeoutFromEnv(), ...opts };
  return type === 'backup' ? { ...o, fallback: 'crash' } : o;
}

/**
 * TIDEMARK_QGA_TIMEOUT_MS (a positive number): how long a checkpoint waits for the guest agent's
 * handshake (withQuiesce `agentTimeoutMs`, default 5 s) — what every production/backup checkpoint of a
 * running guest without an agent costs. Raise it for slow guests, lower it for agent-less fleets.
 */
function agentTimeoutFromEnv(): QuiesceOptions {
  const ms = Number(process.env.TIDEMARK_QGA_TIMEOUT_MS);
  return Number.isFinite(ms) && ms > 0 ? { agentTimeoutMs: ms } : {};
}

/** Refuse a machine with a disk that is not a VHDX (NotSupportedError): checked before any freeze. */
async function assertForkable(m: MachineRecord): Promise<void> {
  for (const d of m.config.disks) {
    if ((await detectDiskFormat(d.path)) !== 'vhdx') throw new NotSupportedError(`a checkpoint of machine ${m.name}: disk ${d.path} (slot ${d.slot}) is not a VHDX (convert it with \`tidemark disk convert\` first); checkpoints`);
  }
}

/**
 * Fork every disk of `m` (inside a transaction): create the children, record the checkpoint, point the
 * configuration at the children. Returns the new record (already in `m.checkpoints`).
 *
 * A running machine is forked online by its runner (all disks paused, forked and resumed as one
 * instant). RCT IDs: with `opts.seal` they are sealed at the fork instant (online: inside the runner's
 * I/O pause) and recorded; a caller that sealed itself and passes `extra.rctIds` gets, for a running
 * machine, IDs re-sealed inside the pause (the guest may have written between its seal and the fork):
 * the entries of that same array are updated in place and the earlier IDs dropped.
 * Quiesce (`opts.quiesce`, default `quiescePolicy(type)`): only a running machine's guest is frozen,
 * and only around the runner's `fork` call (pause, seal, create the empty children, switch, resume:
 * milliseconds); the format checks and the runner connection come before the freeze. The record gets
 * `consistency` and `quiesce` (method): offline `application`/`none`; running and not quiesced
 * `crash`/`none`.
 * Throws NotSupportedError (a disk is not a VHDX), TidemarkError E_VM_FORK (the runner went away; its
 * leftovers are reconciled first), QuiesceFailedError (nothing created, guest thawed), VmBusyError
 * (another quiesce of the machine runs), QuiesceThawError (the fork succeeded and IS recorded in `m`;
 * the guest may still be frozen — a caller that commits the inventory keeps the checkpoint).
 */
export async function forkMachine(m: MachineRecord, type: CheckpointType, name: string | undefined, extra: Partial<CheckpointRecord> = {}, opts: ForkOptions = {}): Promise<CheckpointRecord> {
  await assertForkable(m);
  const id = randomUUID();
  const slots = m.config.disks.map((d) => ({ slot: d.slot, parent: d.path, child: join(dirname(d.path), childName(m, d.slot, id)) }));
  const rec: Partial<CheckpointRecord> = { ...extra };
  const record = (consistency: Consistency, quiesce: QuiesceMethod): CheckpointRecord => {
    const cp: CheckpointRecord = { id, name: name ?? `${type}-${m.checkpoints.length + 1}`, type, createdAt: new Date().toISOString(), config: structuredClone(m.config), disks: slots, ...rec, consistency, quiesce };
    m.checkpoints.push(cp);
    for (const d of m.config.disks) d.path = slots.find((x) => x.slot === d.slot)!.child;
    return cp;
  };
  const client = await connectRunner(m);
  if (client) {
    const reseal = !!extra.rctIds?.length;
    // The online fork, recorded in `m` at once (so a thaw failure after it still leaves it recorded).
    const forkOnline = async (): Promise<CheckpointRecord> => {
      try {
        const res = await client.call<ForkResult>('fork', { slots: slots.map(({ slot, child }) => ({ slot, child })), seal: !!opts.seal || reseal, drop: extra.rctIds ?? [] });
        if (opts.seal || reseal) {
          const ids = extra.rctIds ?? [];
          for (const r of res.slots) {
            const e = ids.find((x) => x.slot === r.slot);
            if (e) e.rctId = r.rctId ?? '';
            else ids.push({ slot: r.slot, rctId: r.rctId ?? '' });
          }
          rec.rctIds = ids;
        }
      } catch (err) {
        if (!(await runnerGone(m, err))) throw err;
        const notes = await reconcileRunner(m, finishRemoval);
        throw new TidemarkError('E_VM_FORK', `the runner of machine ${m.name} went away during the checkpoint; recovered (${notes.join('; ') || 'nothing to undo'}); try again`, { machine: m.name });
      }
      return record('crash', 'none'); // until the quiesce result says otherwise
    };
    try {
      const policy = opts.quiesce === undefined ? quiescePolicy(type) : opts.quiesce;
      if (!policy) return await forkOnline();
      const lines: string[] = [];
      const log = (l: string) => {
        lines.push(l);
        policy.log?.(l);
      };
      try {
        const q = await withQuiesce(m, { ...policy, log }, () => forkOnline());
        q.result.consistency = q.consistency;
        q.result.quiesce = q.method;
        if (q.consistency === 'crash') opts.warnings?.push(lines.find((l) => l.includes('crash-consistent')) ?? `machine ${m.name}: the guest could not be quiesced; the checkpoint is crash-consistent`);
        return q.result;
      } catch (err) {
        const cp = m.checkpoints.find((c) => c.id === id);
        if (err instanceof QuiesceThawError && cp) {
          cp.consistency = 'application';
          cp.quiesce = err.data.method as QuiesceMethod;
        }
        throw err;
      }
    } finally {
      client.close();
    }
  }
  if (opts.seal) {
    const ids = [];
    for (const d of m.config.disks) ids.push({ slot: d.slot, rctId: await sealDisk(d.path, opts.warnings ?? []) });
    rec.rctIds = ids;
  }
  const created: string[] = [];
  try {
    for (const s of slots) {
      await createDisk(s.child, { parent: s.parent });
      created.push(s.child);
    }
  } catch (err) {
    for (const c of created) await rm(c, { force: true });
    throw err;
  }
  // Offline: nothing runs, nothing to freeze (the disks are what the last shutdown left).
  return record('application', 'none');
}

export interface CreateCheckpointOptions {
  type?: CheckpointType;
  name?: string;
  /** Production checkpoints: `'crash'` accepts a crash-consistent checkpoint when quiescing fails. */
  fallback?: 'crash';
  /** Quiesce progress and warnings, one line each. */
  log?: (line: string) => void;
  /** withQuiesce timeouts (tests). */
  timeoutMs?: number;
  agentTimeoutMs?: number;
}

/**
 * `checkpoint create <vm|group>`: a standard/production/backup checkpoint of each machine. For a group,
 * the I/O of every running member is paused first, then each member is forked, then all resume: one
 * consistent instant across the group (offline members are still anyway).
 *
 * Production and backup checkpoints quiesce every running member first (`quiescePolicy`): the guests
 * are frozen one after the other (nested withQuiesce, so each is thawed even when a later one fails),
 * then paused, forked and resumed as above, then thawed in reverse order. A production checkpoint whose
 * member cannot be quiesced fails with QuiesceFailedError before anything is paused or created (unless
 * `fallback: 'crash'`). A thaw failure after the fork keeps the checkpoints (committed) and then throws
 * QuiesceThawError.
 */
export async function createCheckpoint(home: string, ref: string, opts: CreateCheckpointOptions = {}): Promise<CheckpointView[]> {
  const type = opts.type ?? 'standard';
  if (opts.fallback && type === 'standard') throw new UsageError('--fallback applies to production and backup checkpoints (a standard checkpoint does not quiesce the guest)');
  const qopts: QuiesceOptions = {
    ...(opts.fallback ? { fallback: opts.fallback } : {}), ...(opts.log ? { log: opts.log } : {}),
    ...(opts.timeoutMs !== undefined ? { timeoutMs: opts.timeoutMs } : {}), ...(opts.agentTimeoutMs !== undefined ? { agentTimeoutMs: opts.agentTimeoutMs } : {}),
  };
  const policy = quiescePolicy(type, qopts);
  let thawError: QuiesceThawError | undefined;
  const out = await Inventory.transact(home, async (state) => {
    const targets = resolveTargets(state, ref);
    for (const m of targets) {
      await recoverMachine(m);
      assertFree(m, { online: true });
      if (type === 'backup' && m.checkpoints.length) throw new UsageError(`machine ${m.name} already has checkpoints; a backup checkpoint needs a machine without checkpoints (remove or apply them first)`);
      await assertForkable(m);
    }
    // Pause every running member, fork each (unquiesced here: the guests are frozen around this), resume.
    const pauseAndForkAll = async (): Promise<CheckpointRecord[]> => {
      const paused: RunnerClient[] = [];
      try {
        if (targets.length > 1) {
          for (const m of targets) {
            const c = await connectRunner(m);
            if (!c) continue;
            paused.push(c);
            await c.call('pause');
          }
        }
        const made = [];
        // A backup checkpoint names its instant in each disk's change tracking too (sealed at the fork).
        for (const m of targets) made.push(await forkMachine(m, type, opts.name, {}, { seal: type === 'backup', quiesce: false }));
        for (const c of paused) await c.call('resume');
        return made;
      } finally {
        for (const c of paused) c.close(); // closing also resumes a pause the runner still holds
      }
    };
    if (!policy) return (await pauseAndForkAll()).map((c, i) => viewOf(targets[i]!, c));
    // Freeze member i, then (inside) the rest, then pause+fork all; each level thaws its own guest.
    const q: Array<{ consistency: Consistency; method: QuiesceMethod } | undefined> = [];
    let made: CheckpointRecord[] = [];
    const all = async (i: number): Promise<void> => {
      if (i === targets.length) {
        made = await pauseAndForkAll();
        return;
      }
      try {
        const r = await withQuiesce(targets[i]!, policy, () => all(i + 1));
        q[i] = { consistency: r.consistency, method: r.method };
      } catch (err) {
        if (!(err instanceof QuiesceThawError) || made.length !== targets.length) throw err;
        q[i] = { consistency: 'application', method: err.data.method as QuiesceMethod };
        thawError ??= err;
      }
    };
    await all(0);
    return made.map((c, i) => {
      c.consistency = q[i]!.consistency;
      c.quiesce = q[i]!.method;
      return viewOf(targets[i]!, c);
    });
  });
  if (thawError) throw thawError; // the checkpoints are committed; the guest may still be frozen
  return out;
}

export async function listCheckpoints(home: string, ref: string): Promise<CheckpointView[]> {
  return Inventory.transact(home, async (state) => {
    const out = [];
    for (const m of resolveTargets(state, ref)) {
      await recoverMachine(m);
      out.push(...m.checkpoints.map((c) => viewOf(m, c)));
    }
    return out;
  });
}

function findCheckpoint(m: MachineRecord, ref: string): CheckpointRecord {
  const c = m.checkpoints.find((x) => x.id === ref || x.name === ref || (ref.length >= 8 && x.id.startsWith(ref)));
  if (!c) throw new VmNotFoundError('checkpoint', ref, `run \`tidemark checkpoint list ${m.name}\``);
  return c;
}

/**
 * Remove the newest checkpoint: merge its children (the current state) into their parents and point the
 * machine at the parents — online through the runner when the machine runs. Older checkpoints can only
 * be removed after the newer ones.
 */
export async function removeCheckpoint(home: string, vm: string, ref: string): Promise<CheckpointView> {
  return Inventory.transact(home, async (state) => {
    const m = findMachine(state, vm);
    await recoverMachine(m);
    assertFree(m, { online: true });
    const c = findCheckpoint(m, ref);
    if (c !== m.checkpoints[m.checkpoints.length - 1]) throw new NotSupportedError(`removing checkpoint ${c.name} before the newer checkpoints of machine ${m.name} (remove the newest first)`);
    // Online (the runner merges while the guest's I/O is paused) or offline; tracked either way.
    await mergeBack(m, c);
    if (m.checkpoints.includes(c)) await finishRemoval(m, c);
    return viewOf(m, c);
  });
}

/**
 * Apply a checkpoint: discard every later state (the children of this and later checkpoints are
 * deleted) and continue from the checkpoint with fresh children; the configuration reverts to the one
 * saved with the checkpoint. The checkpoint stays; later checkpoints are removed.
 *
 * Crash-safe: (1) fresh children are created under new names (`<machine id 8>-d<slot>-ck-<random 8 hex>`,
 * durable, referenced by nothing yet); (2) the inventory naming them is committed; (3) only then are the
 * old children deleted. Killed before (2): the old state stands and the fresh children are orphans; killed
 * after (2): the new state stands and the old children are orphans. Either way every referenced file
 * exists, and recovery (recoverMachine) deletes the orphans by their name pattern.
 * Test hook: debugStep (src/util/debugSteps.ts; steps `apply-children`,
 * `apply-commit`, `apply-deleted`).
 */
export async function applyCheckpoint(home: string, vm: string, ref: string): Promise<CheckpointView> {
  const stale: string[] = [];
  const out = await Inventory.transact(home, async (state) => {
    const m = findMachine(state, vm);
    await recoverMachine(m);
    assertFree(m);
    const c = findCheckpoint(m, ref);
    if (c.type === 'backup') throw new UsageError(`checkpoint ${c.name} is a backup checkpoint; backup checkpoints cannot be applied (restore an export instead)`);
    const i = m.checkpoints.indexOf(c);
    const fresh: Array<{ slot: number; child: string }> = [];
    try {
      for (const d of c.disks) {
        const child = join(dirname(d.parent), childName(m, d.slot, randomUUID()));
        await createDisk(child, { parent: d.parent });
        fresh.push({ slot: d.slot, child });
      }
    } catch (err) {
      for (const f of fresh) await rm(f.child, { force: true });
      throw err;
    }
    await debugStep('apply-children');
    for (const later of m.checkpoints.slice(i)) for (const d of later.disks) stale.push(d.child);
    c.disks = c.disks.map((d) => ({ ...d, child: fresh.find((f) => f.slot === d.slot)!.child }));
    m.checkpoints = m.checkpoints.slice(0, i + 1);
    m.config = structuredClone(c.config);
    for (const d of m.config.disks) d.path = c.disks.find((x) => x.slot === d.slot)!.child;
    return viewOf(m, c);
  });
  await debugStep('apply-commit');
  // Nothing references the old children any more (they are orphans for recovery if we die here).
  for (const p of stale) {
    await rm(p, { force: true });
    await rm(`${p}.lock`, { force: true });
  }
  await debugStep('apply-deleted');
  return out;
}
