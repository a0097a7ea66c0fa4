/**
 * The backup checkpoint a reading job (export, backup into a repository) holds while it reads a
 * machine's frozen disks: taken, its reference point recorded, and released.
 */
import { TidemarkError, UsageError } from '../errors.js';
import { Inventory, type CheckpointRecord, type MachineRecord, type RefpointRecord } from '../vm/Inventory.js';
import type { MachineConfig } from '../vm/MachineConfig.js';
import { findMachine } from '../vm/machines.js';
import { VmBusyError } from '../vm/errors.js';
import { forkMachine } from './checkpoints.js';
import { closeBackupCheckpoint, liveHolder, recoverMachine } from './recover.js';
import { sealDisk } from './sealDisk.js';
import { waitLocksFree } from './runnerLink.js';

/** A machine's disks frozen in a backup checkpoint held by this process (a copy: not inventory state). */
export interface HeldBackupCheckpoint {
  machineId: string;
  name: string;
  cpId: string;
  /** The machine's configuration at the checkpoint (its disks' paths are the frozen parents). */
  config: MachineConfig;
  /** Per disk: the frozen parent to read, the child the machine now writes, the RCT ID sealed for "now" ('' if none). */
  disks: Array<{ slot: number; frozen: string; current: string; rctId: string }>;
  /** The sequence number this job's reference point takes (`nextRefSeq`, consumed). */
  seq: number;
  /** Warnings of sealing and forking (tracking re-enabled, crash-consistent fork...). */
  warnings: string[];
  /** How consistent the frozen disks are, when the checkpoint recorded it. */
  consistency?: { level: 'application' | 'crash'; quiesce: 'guest-agent' | 'hooks' | 'none' };
}

/** Who holds the checkpoint: `command` for the holder record (`tidemark export`), `job` for messages (`an export`), `prefix` of the checkpoint name (`export` -> `export-<seq>`). */
export interface BackupJob {
  command: string;
  job: string;
  prefix: string;
}

/**
 * Inside an inventory transaction on `m`: recover leftovers of killed jobs, then hold a backup
 * checkpoint for this PID — adopt the machine's single holder-less backup checkpoint (made by
 * `checkpoint create --type backup`, with the RCT IDs it sealed), or seal every disk's RCT (ID = "now")
 * and fork every disk into a new backup checkpoint (a running guest quiesced around the fork when
 * possible, else crash-consistent with a warning). Consumes one `nextRefSeq`. Throws VmBusyError when
 * a live process holds the machine, UsageError when it has other checkpoints; the forkMachine errors.
 */
export async function holdBackupCheckpoint(m: MachineRecord, job: BackupJob): Promise<HeldBackupCheckpoint> {
  await recoverMachine(m);
  const h = liveHolder(m);
  if (h) throw new VmBusyError(m.name, `${h.command} (PID ${h.pid}) since ${h.since}`);
  const adopt = m.checkpoints.length === 1 && m.checkpoints[0]!.type === 'backup' && !m.checkpoints[0]!.holder ? m.checkpoints[0] : undefined;
  if (m.checkpoints.length && !adopt) throw new UsageError(`machine ${m.name} has checkpoints; ${job.job} needs a machine without checkpoints or with one backup checkpoint (remove or apply them first)`);
  // A runner that has just stopped (runtime cleared) may still be exiting: give its disk locks a moment
  // to be released before sealing offline (a real holder still gets InUseError after the wait).
  if (!m.runtime) await waitLocksFree(m.config.disks.map((d) => d.path), 3000);
  const warnings: string[] = [];
  const holder = { pid: process.pid, command: job.command, since: new Date().toISOString() };
  let cp: CheckpointRecord;
  let rctIds: Array<{ slot: number; rctId: string }>;
  if (adopt) {
    cp = adopt;
    cp.holder = holder;
    rctIds = cp.rctIds ?? [];
  } else {
    rctIds = [];
    for (const d of m.config.disks) rctIds.push({ slot: d.slot, rctId: await sealDisk(d.path, warnings) });
    cp = await forkMachine(m, 'backup', `${job.prefix}-${m.nextRefSeq}`, { holder, rctIds }, { warnings });
  }
  const seq = m.nextRefSeq++;
  return {
    machineId: m.id,
    name: m.name,
    cpId: cp.id,
    config: structuredClone(cp.config),
    ...(cp.consistency ? { consistency: { level: cp.consistency, quiesce: cp.quiesce ?? 'none' } } : {}),
    disks: cp.disks.map((d) => ({ slot: d.slot, frozen: d.parent, current: d.child, rctId: rctIds.find((r) => r.slot === d.slot)?.rctId ?? '' })),
    seq,
    warnings,
  };
}

/**
 * [inventory txn] Record `refpoint` on the held checkpoint (it becomes a reference point when the
 * checkpoint is released). Throws E_INTERNAL when the checkpoint is gone (`job` names the job in the message).
 */
export async function recordHeldRefpoint(home: string, held: Pick<HeldBackupCheckpoint, 'machineId' | 'cpId'>, refpoint: RefpointRecord, job: string): Promise<void> {
  await Inventory.transact(home, async (state) => {
    const m = findMachine(state, held.machineId);
    const cp = m.checkpoints.find((c) => c.id === held.cpId);
    if (!cp) throw new TidemarkError('E_INTERNAL', `backup checkpoint ${held.cpId} of machine ${m.name} vanished during the ${job}`, {});
    cp.refpoint = refpoint;
  });
}

/**
 * [inventory txn] Release the held checkpoint if it still exists: merge the children back through
 * tracking (closeBackupCheckpoint: keeps its reference point if recorded, else drops its sealed IDs),
 * then run `finish` on the machine in the same transaction.
 */
export async function releaseBackupCheckpoint(home: string, held: Pick<HeldBackupCheckpoint, 'machineId' | 'cpId'>, finish?: (m: MachineRecord) => Promise<void>): Promise<void> {
  await Inventory.transact(home, async (state) => {
    const m = findMachine(state, held.machineId);
    const cp = m.checkpoints.find((c) => c.id === held.cpId);
    if (cp) await closeBackupCheckpoint(m, cp);
    await finish?.(m);
  });
}
