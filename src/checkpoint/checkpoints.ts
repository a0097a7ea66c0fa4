/**
 * Checkpoints of offline machines. A checkpoint forks every disk: a new differencing disk (.avhdx) is
 * created over the disk the machine uses now (which becomes frozen), and the configuration points at
 * the child. Chain invariant: checkpoints[i].disks[s].child === checkpoints[i+1].disks[s].parent, and
 * the newest checkpoint's children are the machine's disks.
 *
 * Write ordering: children are created (fsynced, linked into place) before the inventory that points
 * at them is committed; a job killed in between leaves unreferenced children, deleted by recovery.
 * Remove merges the newest checkpoint's children into their parents (tracked, see mergeChild.ts), then
 * commits the inventory. Apply deletes the later state's children and creates fresh ones.
 */
import { randomUUID } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { UsageError, NotSupportedError } from '../errors.js';
import { createDisk } from '../disk/createDisk.js';
import { detectDiskFormat } from '../disk/detectDiskFormat.js';
import { Inventory, type CheckpointRecord, type CheckpointType, type Holder, type MachineRecord } from '../vm/Inventory.js';
import { findMachine, resolveTargets } from '../vm/machines.js';
import { VmBusyError, VmNotFoundError } from '../vm/errors.js';
import { childName, closeBackupCheckpoint, liveHolder, recoverMachine } from './recover.js';
import { mergeChild } from './mergeChild.js';
import { sealDisk } from './sealDisk.js';

export interface CheckpointView {
  machine: string;
  machineId: string;
  id: string;
  name: string;
  type: CheckpointType;
  createdAt: string;
  disks: Array<{ slot: number; parent: string; child: string }>;
  holder?: Holder;
}

const viewOf = (m: MachineRecord, c: CheckpointRecord): CheckpointView => ({
  machine: m.name, machineId: m.id, id: c.id, name: c.name, type: c.type, createdAt: c.createdAt, disks: c.disks, ...(c.holder ? { holder: c.holder } : {}),
});

function assertFree(m: MachineRecord): void {
  const h = liveHolder(m);
  if (h) throw new VmBusyError(m.name, `${h.command} (PID ${h.pid}) since ${h.since}`);
}

/**
 * Fork every disk of `m` (inside a transaction): create the children, record the checkpoint, point the
 * configuration at the children. Returns the new record (already in `m.checkpoints`).
 */
export async function forkMachine(m: MachineRecord, type: CheckpointType, name: string | undefined, extra: Partial<CheckpointRecord> = {}): Promise<CheckpointRecord> {
  for (const d of m.config.disks) {
    if ((await detectDiskFormat(d.path)) !== 'vhdx') throw new NotSupportedError(`a checkpoint of machine ${m.name}: disk ${d.path} (slot ${d.slot}) is not a VHDX (convert it with \`tidemark disk convert\` first); checkpoints`);
  }
  const id = randomUUID();
  const created: string[] = [];
  try {
    const disks = [];
    for (const d of m.config.disks) {
      const child = join(dirname(d.path), childName(m, d.slot, id));
      await createDisk(child, { parent: d.path });
      created.push(child);
      disks.push({ slot: d.slot, parent: d.path, child });
    }
    const cp: CheckpointRecord = { id, name: name ?? `${type}-${m.checkpoints.length + 1}`, type, createdAt: new Date().toISOString(), config: structuredClone(m.config), disks, ...extra };
    m.checkpoints.push(cp);
    for (const d of m.config.disks) d.path = disks.find((x) => x.slot === d.slot)!.child;
    return cp;
  } catch (err) {
    for (const c of created) await rm(c, { force: true });
    throw err;
  }
}

/** `checkpoint create <vm|group>`: a standard/production/backup checkpoint of each machine. */
export async function createCheckpoint(home: string, ref: string, opts: { type?: CheckpointType; name?: string } = {}): Promise<CheckpointView[]> {
  const type = opts.type ?? 'standard';
  return Inventory.transact(home, async (state) => {
    const out = [];
    for (const m of resolveTargets(state, ref)) {
      await recoverMachine(m);
      assertFree(m);
      if (type === 'backup' && m.checkpoints.length) throw new UsageError(`machine ${m.name} already has checkpoints; a backup checkpoint needs a machine without checkpoints (remove or apply them first)`);
      // A backup checkpoint names its instant in each disk's change tracking too (sealed before the fork).
      const extra = type === 'backup' ? { rctIds: await sealAll(m) } : {};
      out.push(viewOf(m, await forkMachine(m, type, opts.name, extra)));
    }
    return out;
  });
}

async function sealAll(m: MachineRecord): Promise<Array<{ slot: number; rctId: string }>> {
  const out = [];
  for (const d of m.config.disks) out.push({ slot: d.slot, rctId: await sealDisk(d.path, []) });
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
 * machine at the parents. Older checkpoints can only be removed after the newer ones.
 */
export async function removeCheckpoint(home: string, vm: string, ref: string): Promise<CheckpointView> {
  return Inventory.transact(home, async (state) => {
    const m = findMachine(state, vm);
    await recoverMachine(m);
    assertFree(m);
    const c = findCheckpoint(m, ref);
    if (c !== m.checkpoints[m.checkpoints.length - 1]) throw new NotSupportedError(`removing checkpoint ${c.name} before the newer checkpoints of machine ${m.name} (remove the newest first)`);
    if (c.type === 'backup') await closeBackupCheckpoint(m, c);
    else {
      for (const d of c.disks) {
        await mergeChild(d.child, d.parent);
        const s = m.config.disks.find((x) => x.slot === d.slot);
        if (s) s.path = d.parent;
      }
      m.checkpoints.pop();
    }
    return viewOf(m, c);
  });
}

/**
 * Apply a checkpoint: discard every later state (the children of this and later checkpoints are
 * deleted) and continue from the checkpoint with fresh children; the configuration reverts to the one
 * saved with the checkpoint. The checkpoint stays; later checkpoints are removed.
 */
export async function applyCheckpoint(home: string, vm: string, ref: string): Promise<CheckpointView> {
  return Inventory.transact(home, async (state) => {
    const m = findMachine(state, vm);
    await recoverMachine(m);
    assertFree(m);
    const c = findCheckpoint(m, ref);
    if (c.type === 'backup') throw new UsageError(`checkpoint ${c.name} is a backup checkpoint; backup checkpoints cannot be applied (restore an export instead)`);
    const i = m.checkpoints.indexOf(c);
    for (const later of m.checkpoints.slice(i).reverse()) {
      for (const d of later.disks) {
        await rm(d.child, { force: true });
        await rm(`${d.child}.lock`, { force: true });
      }
    }
    for (const d of c.disks) await createDisk(d.child, { parent: d.parent });
    m.checkpoints = m.checkpoints.slice(0, i + 1);
    m.config = structuredClone(c.config);
    for (const d of m.config.disks) d.path = c.disks.find((x) => x.slot === d.slot)!.child;
    return viewOf(m, c);
  });
}
