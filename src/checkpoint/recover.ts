/**
 * Leftovers of killed jobs, found and cleaned at the next operation on a machine (inside an inventory
 * transaction):
 * - a backup checkpoint whose holder process is dead: merged back (its refpoint kept if the export had
 *   recorded it, else its sealed RCT IDs dropped) and removed;
 * - a checkpoint disk (`<machine id 8>-d<slot>-ck-<8 hex>.avhdx`) in a disk folder that no checkpoint
 *   references: created by a job killed before it committed the inventory; deleted.
 */
import { readdir, readFile, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { CheckpointRecord, Holder, MachineRecord } from '../vm/Inventory.js';
import { openRctHandle } from '../rct/openRctHandle.js';
import { mergeChild } from './mergeChild.js';

export function pidAlive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * What holds the machine, if that process is alive: its runner while it runs (online checkpoints are not
 * supported: a running machine cannot be changed, checkpointed or exported), else the export reading its
 * backup checkpoint.
 */
export function liveHolder(m: MachineRecord): Holder | undefined {
  if (m.runtime && pidAlive(m.runtime.pid)) return { pid: m.runtime.pid, command: 'tidemark vm run (the machine is running: stop it first)', since: m.runtime.since };
  return m.checkpoints.find((c) => c.holder && pidAlive(c.holder.pid))?.holder;
}

export function childName(m: MachineRecord, slot: number, checkpointId: string): string {
  return `${m.id.slice(0, 8)}-d${slot}-ck-${checkpointId.slice(0, 8)}.avhdx`;
}

/**
 * End a backup checkpoint: merge each child into its frozen parent (tracked), point the configuration
 * back at the parents, turn the pending refpoint (if any) into a reference point, drop unused RCT IDs.
 */
export async function closeBackupCheckpoint(m: MachineRecord, cp: CheckpointRecord): Promise<void> {
  for (const d of cp.disks) {
    await mergeChild(d.child, d.parent);
    const slot = m.config.disks.find((x) => x.slot === d.slot);
    if (slot) slot.path = d.parent;
  }
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
  m.checkpoints = m.checkpoints.filter((c) => c !== cp);
}

/** Clean a machine's leftovers (see the file comment). Mutates `m`; the caller commits the inventory. */
export async function recoverMachine(m: MachineRecord): Promise<string[]> {
  const notes: string[] = [];
  if (m.runtime && !pidAlive(m.runtime.pid)) {
    // The runner died: its disk locks died with it; a QEMU it left behind has lost its disks.
    const q = m.runtime.qemuPid;
    if (q && pidAlive(q) && (await readFile(`/proc/${q}/cmdline`, 'utf8').catch(() => '')).includes('qemu-system')) process.kill(q, 'SIGKILL');
    notes.push(`cleared the runtime of dead runner PID ${m.runtime.pid}`);
    delete m.runtime;
  }
  for (const cp of [...m.checkpoints]) {
    if (cp.type === 'backup' && cp.holder && !pidAlive(cp.holder.pid)) {
      await closeBackupCheckpoint(m, cp);
      notes.push(`merged back leftover backup checkpoint ${cp.id} (held by dead PID ${cp.holder?.pid})`);
    }
  }
  const referenced = new Set<string>([...m.config.disks.map((d) => d.path), ...m.checkpoints.flatMap((c) => c.disks.flatMap((d) => [d.child, d.parent]))]);
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
