/**
 * Leftovers of killed jobs, found and cleaned at the next operation on a machine (inside an inventory
 * transaction):
 * - a runner that died (or a CLI that died after asking it to fork or merge): reconciled with the
 *   runner's journal (see runnerLink.ts);
 * - a backup checkpoint whose holder process is dead: merged back (its refpoint kept if the export had
 *   recorded it, else its sealed RCT IDs dropped) and removed;
 * - a checkpoint disk (`<machine id 8>-d<slot>-ck-<8 hex>.avhdx`) in a disk folder that no checkpoint
 *   references: created by a job killed before it committed the inventory; deleted.
 */
import { readdir, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { CheckpointRecord, Holder, MachineRecord } from '../vm/Inventory.js';
import { openRctHandle } from '../rct/openRctHandle.js';
import { readRunnerJournal } from '../vm/runnerJournal.js';
import { mergeChild } from './mergeChild.js';
import { pidAlive } from './pidAlive.js';
import { connectRunner, reconcileRunner, runnerAlive, runnerGone } from './runnerLink.js';

export { pidAlive };

/**
 * What holds the machine, if that process is alive: the export (or other job) reading its backup
 * checkpoint. A running machine is not held: its runner forks and merges its disks online (see
 * `runnerHolder` for the operations that need the machine off).
 */
export function liveHolder(m: MachineRecord): Holder | undefined {
  return m.checkpoints.find((c) => c.holder && pidAlive(c.holder.pid))?.holder;
}

/** The runner, as a holder, while the machine runs: for operations that cannot run online (vm set/remove, checkpoint apply). */
export function runnerHolder(m: MachineRecord): Holder | undefined {
  if (m.runtime && pidAlive(m.runtime.pid)) return { pid: m.runtime.pid, command: 'tidemark vm run (the machine is running: stop it first)', since: m.runtime.since };
  return undefined;
}

export function childName(m: MachineRecord, slot: number, checkpointId: string): string {
  return `${m.id.slice(0, 8)}-d${slot}-ck-${checkpointId.slice(0, 8)}.avhdx`;
}

/**
 * Merge the children of `cp` (the newest checkpoint) back into their parents: through the runner while
 * the machine runs (online, tracked), else offline (mergeChild, tracked). A runner that dies or stops
 * meanwhile is reconciled and the rest is done offline. The inventory is not changed here except by
 * that reconciliation (which may already finish the removal: `cp` is then gone from `m.checkpoints`).
 */
export async function mergeBack(m: MachineRecord, cp: CheckpointRecord): Promise<void> {
  const c = await connectRunner(m);
  if (c) {
    try {
      await c.call('merge', { checkpointId: cp.id, slots: cp.disks.map(({ slot, parent, child }) => ({ slot, parent, child })) });
      return;
    } catch (err) {
      if (!(await runnerGone(m, err))) throw err;
      await reconcileRunner(m, finishRemoval);
      if (!m.checkpoints.includes(cp)) return;
    } finally {
      c.close();
    }
  }
  for (const d of cp.disks) await mergeChild(d.child, d.parent);
}

/**
 * The inventory side of removing `cp` once its children are merged: the configuration back on the
 * parents; for a backup checkpoint, its pending refpoint (if any) becomes a reference point, else its
 * sealed RCT IDs are dropped; the checkpoint is dropped.
 */
export async function finishRemoval(m: MachineRecord, cp: CheckpointRecord): Promise<void> {
  for (const d of cp.disks) {
    const slot = m.config.disks.find((x) => x.slot === d.slot);
    if (slot) slot.path = d.parent;
  }
  if (cp.type === 'backup') {
    if (cp.refpoint) m.refpoints.push(cp.refpoint);
    else {
      for (const r of cp.rctIds ?? []) {
        const path = cp.disks.find((d) => d.slot === r.slot)?.parent;
        if (!path || !r.rctId) continue;
        try {
          const h = await openRctHandle(path, { mutate: true });
          try {
            await h.drop(r.rctId);
          } finally {
            await h.close();
          }
        } catch {
          // Best effort: an ID nobody references only costs a little tracking state.
        }
      }
    }
  }
  m.checkpoints = m.checkpoints.filter((c) => c !== cp);
}

/**
 * End a backup checkpoint: merge each child into its frozen parent (tracked; online through the runner
 * when the machine runs), point the configuration back at the parents, turn the pending refpoint (if
 * any) into a reference point, drop unused RCT IDs.
 */
export async function closeBackupCheckpoint(m: MachineRecord, cp: CheckpointRecord): Promise<void> {
  await reconcileRunner(m, finishRemoval);
  if (!m.checkpoints.includes(cp)) return;
  await mergeBack(m, cp);
  if (m.checkpoints.includes(cp)) await finishRemoval(m, cp);
}

/** Clean a machine's leftovers (see the file comment). Mutates `m`; the caller commits the inventory. */
export async function recoverMachine(m: MachineRecord): Promise<string[]> {
  const notes = await reconcileRunner(m, finishRemoval);
  for (const cp of [...m.checkpoints]) {
    if (cp.type === 'backup' && cp.holder && !pidAlive(cp.holder.pid) && m.checkpoints.includes(cp)) {
      await closeBackupCheckpoint(m, cp);
      notes.push(`merged back leftover backup checkpoint ${cp.id} (held by dead PID ${cp.holder?.pid})`);
    }
  }
  const referenced = new Set<string>([...m.config.disks.map((d) => d.path), ...m.checkpoints.flatMap((c) => c.disks.flatMap((d) => [d.child, d.parent]))]);
  if (runnerAlive(m)) {
    // Never delete what a live runner serves (its journal names it), even if the inventory does not.
    const j = await readRunnerJournal(m.dir).catch(() => undefined);
    for (const d of j?.disks ?? []) referenced.add(d.path);
  }
  const dirs = new Set<string>([m.dir, ...m.config.disks.map((d) => dirname(d.path))]);
  const re = new RegExp(`^${m.id.slice(0, 8)}-d\\d+-ck-[0-9a-f]{8}\\.avhdx$`);
  for (const dir of dirs) {
    const names = await readdir(dir).catch(() => [] as string[]);
    for (const n of names) {
      const p = join(dir, n);
      if (re.test(n) && !referenced.has(p)) {
        await rm(p, { force: true });
        await rm(`${p}.lock`, { force: true });
        notes.push(`deleted orphan checkpoint disk ${p}`);
      }
    }
  }
  return notes;
}
