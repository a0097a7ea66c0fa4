/**
 * The CLI side of online checkpoints: reach a running machine's runner (src/vm/runnerControl.ts) from
 * inside an inventory transaction, and reconcile the inventory with what the runner really serves
 * (src/vm/runnerJournal.ts) after a crash of either process.
 *
 * Ownership: the inventory is only changed here, in the CLI process (which holds the inventory lock);
 * the runner only changes files and its journal. Reconciliation rules, per slot, with J = the file the
 * runner serves (journal, or the live runner's state) and C = the inventory's configuration path:
 * - J == C: consistent.
 * - a `merge` marker (the runner died while copying a child into its parent; the guest was paused, so
 *   the parent holds nothing newer than the child): finish the copy offline, then as below.
 * - J is the parent and C the child of the newest checkpoint (the merge finished, the inventory did not
 *   record it): finish the removal — delete the child, drop the checkpoint, configuration on J. The
 *   child must not be merged again: the guest may have written the parent since.
 * - J's journal parent is C (a fork the inventory never recorded): the guest may have written J, so J is
 *   merged back into C (online by the live runner, else offline) — never just deleted.
 * Every step is idempotent; the journal is rewritten to the reconciled state and deleted once a later
 * recovery finds it consistent with the inventory and the runner gone.
 */
import { readFile } from 'node:fs/promises';
import type { CheckpointRecord, MachineRecord } from '../vm/Inventory.js';
import { E_RUNNER_STOPPED, runnerClient, type RunnerClient } from '../vm/runnerControl.js';
import { readRunnerJournal, removeRunnerJournal, writeRunnerJournal, type RunnerJournal, type RunnerJournalDisk } from '../vm/runnerJournal.js';
import { DiskLock } from '../blockdev/DiskLock.js';
import { InUseError, TidemarkError } from '../errors.js';
import { deleteChild, exists, mergeChild } from './mergeChild.js';
import { pidAlive } from './pidAlive.js';

/** The runner of `m` if its process is alive (it may be starting or stopping). */
export function runnerAlive(m: MachineRecord): boolean {
  return !!m.runtime && pidAlive(m.runtime.pid);
}

/**
 * A connection to `m`'s runner when the machine is running with its disks open, else null (not running,
 * runner dead, or stopped: its disks are closed and only the inventory lock, which we hold, keeps it
 * from clearing its runtime). Throws E_RUNNER_CONTROL when a live runner does not answer.
 */
export async function connectRunner(m: MachineRecord): Promise<RunnerClient | null> {
  if (!m.runtime || m.runtime.pid === process.pid || !pidAlive(m.runtime.pid)) return null;
  const pid = m.runtime.pid;
  const c = await runnerClient(m.dir, () => pidAlive(pid));
  if (!c) return null;
  try {
    const st = await c.call<{ stopped: boolean }>('state', {}, 30_000);
    if (st.stopped) {
      c.close();
      return null;
    }
    return c;
  } catch (err) {
    c.close();
    if (err instanceof TidemarkError && (err.code === E_RUNNER_STOPPED || (err.code === 'E_RUNNER_CONTROL' && !pidAlive(pid)))) return null;
    throw err;
  }
}

/**
 * True when the error means the runner went away (died, or stopped) during a call. A lost connection
 * waits up to 5 s for the process to be gone (the socket closes a moment before the process ends).
 */
export async function runnerGone(m: MachineRecord, err: unknown): Promise<boolean> {
  if (!(err instanceof TidemarkError)) return false;
  if (err.code === E_RUNNER_STOPPED) return true;
  if (err.code !== 'E_RUNNER_CONTROL' || !m.runtime) return false;
  const deadline = Date.now() + 5000;
  while (pidAlive(m.runtime.pid)) {
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 50));
  }
  return true;
}

/**
 * Drop the runtime of a runner that is gone (SIGKILLing a QEMU it left behind) and reconcile its
 * journal offline. With a live runner: reconcile against its state online. Mutates `m`.
 */
export async function reconcileRunner(m: MachineRecord, finishRemoval: (m: MachineRecord, cp: CheckpointRecord) => Promise<void>): Promise<string[]> {
  const notes: string[] = [];
  if (m.runtime && !pidAlive(m.runtime.pid)) {
    // A SIGKILLed runner's main thread looks dead (zombie) a moment before its last thread closes its
    // files: wait until its disk locks are really free.
    await waitLocksFree((await readRunnerJournal(m.dir).catch(() => undefined))?.disks.flatMap((d) => [d.path, ...(d.parent ? [d.parent] : [])]) ?? []);
    const q = m.runtime.qemuPid;
    if (q && pidAlive(q) && (await readFile(`/proc/${q}/cmdline`, 'utf8').catch(() => '')).includes('qemu-system')) process.kill(q, 'SIGKILL');
    notes.push(`cleared the runtime of dead runner PID ${m.runtime.pid}`);
    delete m.runtime;
  }
  if (m.runtime) {
    if (m.runtime.pid === process.pid) return notes; // the runner itself, while it runs
    let c: RunnerClient | null;
    try {
      c = await connectRunner(m);
    } catch (err) {
      // Alive but not answering (hung, or still starting): change nothing; the next command retries.
      notes.push(`the runner (PID ${m.runtime.pid}) does not answer: ${(err as Error).message}`);
      return notes;
    }
    if (c) {
      try {
        const st = await c.call<{ disks: RunnerJournalDisk[] }>('state', {}, 30_000);
        await reconcileServed(m, st.disks, c, notes, finishRemoval);
      } finally {
        c.close();
      }
      return notes;
    }
    if (pidAlive(m.runtime.pid)) {
      // Stopped (disks closed) but not yet gone: its journal is final; reconcile it like a dead one's.
      const j = await readRunnerJournal(m.dir);
      if (j) await reconcileJournal(m, j, notes, finishRemoval);
      delete m.runtime;
      notes.push('the runner has stopped; cleared its runtime');
      return notes;
    }
  }
  const j = await readRunnerJournal(m.dir);
  if (j) await reconcileJournal(m, j, notes, finishRemoval);
  return notes;
}

async function reconcileJournal(m: MachineRecord, j: RunnerJournal, notes: string[], finishRemoval: (m: MachineRecord, cp: CheckpointRecord) => Promise<void>): Promise<void> {
  const before = notes.length;
  const disks = j.disks.map((d) => ({ ...d }));
  if (j.merge) {
    // The guest was paused from the marker on: every parent holds nothing newer than its child.
    for (const s of j.merge.slots) {
      const d = disks.find((x) => x.slot === s.slot);
      if (d && d.path === s.child) {
        await mergeChild(s.child, s.parent);
        d.path = s.parent;
        notes.push(`finished merging ${s.child} into ${s.parent} (the runner died during the merge)`);
      }
    }
  }
  await reconcileServed(m, disks, null, notes, finishRemoval);
  if (j.merge) {
    for (const s of j.merge.slots) await deleteChild(s.child);
  }
  const consistent = disks.every((d) => m.config.disks.find((c) => c.slot === d.slot)?.path === d.path);
  if (consistent && !j.merge && notes.length === before) await removeRunnerJournal(m.dir);
  else await writeRunnerJournal(m.dir, { pid: j.pid, disks: m.config.disks.map((d) => ({ slot: d.slot, path: d.path })) });
}

async function reconcileServed(m: MachineRecord, served: RunnerJournalDisk[], online: RunnerClient | null, notes: string[], finishRemoval: (m: MachineRecord, cp: CheckpointRecord) => Promise<void>): Promise<void> {
  const newest = m.checkpoints[m.checkpoints.length - 1];
  // Merge finished by the runner but not recorded.
  if (newest) {
    const merged = served.some((s) => {
      const cd = newest.disks.find((d) => d.slot === s.slot);
      const c = m.config.disks.find((d) => d.slot === s.slot);
      return cd && c && c.path === cd.child && s.path === cd.parent;
    });
    if (merged) {
      for (const cd of newest.disks) {
        const s = served.find((x) => x.slot === cd.slot);
        if (s?.path === cd.child) {
          // Not switched yet (a partial online merge): merge this slot now.
          if (online) await online.call('merge', { checkpointId: newest.id, slots: [{ slot: cd.slot, parent: cd.parent, child: cd.child }] });
          else await mergeChild(cd.child, cd.parent);
          s.path = cd.parent;
        } else if (!online) await deleteChild(cd.child);
        else if (await exists(cd.child)) await deleteChild(cd.child).catch(() => undefined);
      }
      await finishRemoval(m, newest);
      notes.push(`finished removing checkpoint ${newest.name} (its merge completed but was not recorded)`);
    }
  }
  // Forks never recorded: merge the child (which the guest may have written) back.
  for (const s of served) {
    const c = m.config.disks.find((d) => d.slot === s.slot);
    if (!c || c.path === s.path || !s.parent || s.parent !== c.path) continue;
    if (online) await online.call('merge', { checkpointId: 'unrecorded-fork', slots: [{ slot: s.slot, parent: s.parent, child: s.path }] });
    else await mergeChild(s.path, s.parent);
    notes.push(`merged back ${s.path}, a checkpoint child the inventory never recorded`);
    s.path = c.path;
  }
}

/** Wait (up to `ms`) until nobody holds a DiskLock on any of `paths`; gives up silently (the caller's own lock attempt then reports InUseError). */
export async function waitLocksFree(paths: string[], ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  for (const p of paths) {
    if (!(await exists(p))) continue; // never create a lock file for a disk that is gone
    for (;;) {
      try {
        const l = await DiskLock.acquire(p, { exclusive: true, holder: 'tidemark recovery (probe)' });
        await l.release();
        break;
      } catch (err) {
        if (!(err instanceof InUseError) || Date.now() > deadline) break;
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  }
}
