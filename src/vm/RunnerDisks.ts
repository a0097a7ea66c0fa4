/**
 * The disks of a running machine as its runner holds them, and the online operations on them: fork
 * (checkpoint create / backup checkpoint of an export) and merge back (checkpoint remove / end of an
 * export). What the runner's control socket (runnerControl.ts) calls.
 *
 * Locks: each slot's served file (the leaf: the newest child, or the base disk) is locked exclusively;
 * every ancestor of the leaf (the frozen images of the machine's checkpoints) is locked *shared* by the
 * runner, so nobody can write a frozen image while the leaf depends on it, while an export can still
 * lock it shared and read it.
 *
 * Fork (all requested slots as one instant): pause every slot (queue new requests, drain, flush) →
 * per slot: seal RCT when asked (the tracker of the served base disk; the ID then names exactly the fork
 * instant), close the served file (clean tracker close, control socket stopped), create the child over
 * it, lock + open the child (untracked), switch; the parent's lock goes from exclusive to shared →
 * journal (`runner.json`) names the children → resume. Nothing reaches a child before the journal names
 * it. A failure before the journal switches every slot back to its parent (no request ran meanwhile)
 * and deletes the children.
 *
 * Merge (the leaf child back into its parent): pause → journal gets a `merge` marker → per slot: close
 * the child, lock the parent exclusively, open it through tracking, copy the child's own sectors into it
 * (copyChildInto: recorded as changes after the newest sealed RCT ID), restart the parent's RCT control
 * socket, switch → journal names the parents, marker gone → resume → delete the children. The guest's
 * I/O stalls for the copy (proportional to what it wrote since the fork); a two-phase merge (copy while
 * running, then only the blocks written meanwhile under the pause) would shorten it.
 */
import { rm } from 'node:fs/promises';
import { DiskLock } from '../blockdev/DiskLock.js';
import { createDisk } from '../disk/createDisk.js';
import { NotSupportedError, TidemarkError, UsageError } from '../errors.js';
import { closeServedFile, openServedFile, serveDisks, type DiskServer } from '../nbd/serveDisks.js';
import { startControlServer } from '../rct/control.js';
import { isTracked } from '../rct/trackingLayer.js';
import { copyChildInto, deleteChild } from '../checkpoint/mergeChild.js';
import { writeRunnerJournal, type RunnerJournalDisk } from './runnerJournal.js';

const HOLDER = 'tidemark vm run';

interface Slot {
  slot: number;
  /** Export name (`disk<slot>`). */
  name: string;
  /** Shared locks on the frozen ancestors, oldest first (the last one is the leaf's parent). */
  ancestors: Array<{ path: string; lock: DiskLock }>;
}

export interface RunnerDiskSpec {
  slot: number;
  /** The leaf the guest writes. */
  path: string;
  /** Its frozen ancestors, oldest first (the machine's checkpoint parents of this slot). */
  ancestors: string[];
}

export interface ForkRequest {
  slots: Array<{ slot: number; child: string }>;
  /** Seal each slot's RCT inside the pause (backup checkpoints): the ID names the fork instant. */
  seal?: boolean;
  /** RCT IDs to drop from each slot's tracker once the new ones are sealed (sealed earlier by the caller). */
  drop?: Array<{ slot: number; rctId: string }>;
}

export interface ForkResult {
  slots: Array<{ slot: number; parent: string; child: string; rctId?: string }>;
}

export interface MergeRequest {
  checkpointId: string;
  slots: Array<{ slot: number; parent: string; child: string }>;
}

export class RunnerDisks {
  private mutex: Promise<unknown> = Promise.resolve();
  private stopped = false;
  private connectionPauses = new Set<() => void>();

  private constructor(
    readonly machineDir: string,
    readonly server: DiskServer,
    private readonly slots: Slot[],
  ) {}

  /**
   * Lock the ancestors shared, serve the leaves on the unix socket `socket` (exports `disk<slot>`), and
   * write the journal. Throws InUseError (a disk or ancestor locked elsewhere), open errors.
   */
  static async serve(machineDir: string, specs: RunnerDiskSpec[], socket: string): Promise<RunnerDisks> {
    const slots: Slot[] = [];
    const releaseAll = async () => {
      for (const s of slots) for (const a of s.ancestors) await a.lock.release().catch(() => undefined);
    };
    let server: DiskServer | undefined;
    try {
      for (const d of specs) {
        const s: Slot = { slot: d.slot, name: `disk${d.slot}`, ancestors: [] };
        slots.push(s);
        for (const a of d.ancestors) s.ancestors.push({ path: a, lock: await DiskLock.acquire(a, { exclusive: false, holder: HOLDER }) });
      }
      server = await serveDisks({ disks: specs.map((d) => d.path), names: slots.map((s) => s.name), listen: { path: socket }, holder: HOLDER });
      const rd = new RunnerDisks(machineDir, server, slots);
      await rd.writeJournal();
      return rd;
    } catch (err) {
      await server?.close().catch(() => undefined);
      await releaseAll();
      throw err;
    }
  }

  /** What is served now, per slot. */
  state(): { stopped: boolean; disks: RunnerJournalDisk[] } {
    return { stopped: this.stopped, disks: this.journalDisks() };
  }

  /**
   * Pause every slot's I/O until the returned function is called (idempotent) — for a consistent fork of
   * several machines: pause all, fork each, resume all. `close()` resumes forgotten pauses.
   */
  async pauseAll(): Promise<() => void> {
    this.checkRunning();
    const paused: Slot[] = [];
    try {
      for (const s of this.slots) {
        await this.server.pause(s.name);
        paused.push(s);
      }
    } catch (err) {
      for (const s of paused) this.server.resume(s.name);
      throw err;
    }
    let done = false;
    const resume = () => {
      if (done) return;
      done = true;
      this.connectionPauses.delete(resume);
      for (const s of paused) this.server.resume(s.name);
    };
    this.connectionPauses.add(resume);
    return resume;
  }

  /** Fork the requested slots as one instant (see the file comment). */
  fork(req: ForkRequest): Promise<ForkResult> {
    return this.serial(async () => {
      this.checkRunning();
      const targets = req.slots.map((r) => ({ r, s: this.slotOf(r.slot) }));
      const resume = await this.pauseAll();
      const out: ForkResult['slots'] = [];
      try {
        const done: Array<{ s: Slot; parent: string; child: string }> = [];
        try {
          for (const { r, s } of targets) {
            await this.server.switchFile(s.name, async (cur) => {
              let rctId: string | undefined;
              if (req.seal) {
                if (!isTracked(cur.device)) throw new NotSupportedError(`a backup checkpoint of the running machine: disk ${cur.path} has no change tracking (enable it with \`tidemark rct enable\` while the machine is off)`);
                rctId = await cur.device.seal();
                const old = req.drop?.find((x) => x.slot === r.slot)?.rctId;
                if (old) await cur.device.drop(old).catch(() => undefined);
              }
              await closeServedFile(cur, { keepLock: true });
              let next: Awaited<ReturnType<typeof openServedFile>> | undefined;
              let parentLockDropped = false;
              try {
                await createDisk(r.child, { parent: cur.path });
                next = await openServedFile(r.child, { holder: HOLDER });
                await cur.lock.release();
                parentLockDropped = true;
                s.ancestors.push({ path: cur.path, lock: await DiskLock.acquire(cur.path, { exclusive: false, holder: HOLDER }) });
                done.push({ s, parent: cur.path, child: r.child });
                out.push({ slot: r.slot, parent: cur.path, child: r.child, ...(rctId ? { rctId } : {}) });
                return next;
              } catch (err) {
                // Back on the parent: close the child if it was opened (its lock too), and serve the
                // parent under a lock — ours, or a new exclusive one if it was already given up for the
                // shared one (if someone else took the parent meanwhile, that fails: never unlocked).
                if (next) await closeServedFile(next).catch(() => undefined);
                await rm(r.child, { force: true });
                const lock = parentLockDropped ? await DiskLock.acquire(cur.path, { exclusive: true, holder: HOLDER }) : cur.lock;
                try {
                  return await openServedFile(cur.path, { holder: HOLDER, lock });
                } catch (reopen) {
                  await lock.release().catch(() => undefined);
                  throw reopen;
                }
              }
            });
            if (!done.some((d) => d.s === s)) throw new TidemarkError('E_VM_FORK', `could not fork disk slot ${r.slot} of the running machine (see the runner log)`, {});
          }
          await this.writeJournal();
          await debugStep('fork-journal');
        } catch (err) {
          for (const d of done.reverse()) await this.unfork(d.s, d.parent, d.child).catch(() => undefined);
          await this.writeJournal().catch(() => undefined);
          throw err;
        }
      } finally {
        resume();
      }
      await debugStep('fork-resumed');
      return { slots: out };
    });
  }

  /** Merge the leaf children back into their parents (see the file comment). */
  merge(req: MergeRequest): Promise<void> {
    return this.serial(async () => {
      this.checkRunning();
      const targets = req.slots.map((r) => ({ r, s: this.slotOf(r.slot) }));
      for (const { r, s } of targets) {
        const cur = this.server.file(s.name).path;
        const parent = s.ancestors[s.ancestors.length - 1]?.path;
        if (cur !== r.child || parent !== r.parent) throw new UsageError(`disk slot ${r.slot} of the running machine serves ${cur} over ${parent ?? 'nothing'}, not ${r.child} over ${r.parent}; nothing merged`);
      }
      const resume = await this.pauseAll();
      try {
        await this.writeJournal({ checkpointId: req.checkpointId, slots: req.slots });
        for (const { r, s } of targets) {
          let failure: unknown;
          await this.server.switchFile(s.name, async (cur) => {
            await closeServedFile(cur);
            const anc = s.ancestors.pop()!;
            await anc.lock.release();
            let pf;
            try {
              pf = await openServedFile(r.parent, { holder: HOLDER, control: false });
            } catch (err) {
              // Nothing written yet (e.g. a reader holds the parent): back on the child.
              failure = err;
              s.ancestors.push({ path: anc.path, lock: await DiskLock.acquire(anc.path, { exclusive: false, holder: HOLDER }) });
              return openServedFile(r.child, { holder: HOLDER });
            }
            // From here the parent is being written: there is no way back to the child (its parent
            // linkage no longer matches). A failure leaves the slot closed (the guest sees I/O errors)
            // and the journal's merge marker makes recovery finish the merge once the runner is gone.
            await copyChildInto(r.child, pf.device);
            await debugStep('merge-copied');
            if (isTracked(pf.device)) pf.control = await startControlServer(r.parent, pf.device);
            return pf;
          });
          if (failure) {
            await this.writeJournal();
            throw failure;
          }
        }
        await this.writeJournal();
      } finally {
        resume();
      }
      for (const { r } of targets) await deleteChild(r.child).catch(() => undefined);
    });
  }

  /** Stop: resume forgotten pauses, close the NBD server and the disks, release every lock. */
  close(): Promise<void> {
    for (const r of [...this.connectionPauses]) r();
    return this.serial(async () => {
      if (this.stopped) return;
      this.stopped = true;
      for (const r of [...this.connectionPauses]) r();
      try {
        await this.server.close();
      } finally {
        for (const s of this.slots) for (const a of s.ancestors) await a.lock.release().catch(() => undefined);
      }
    });
  }

  private async unfork(s: Slot, parent: string, child: string): Promise<void> {
    await this.server.switchFile(s.name, async (cur) => {
      await closeServedFile(cur);
      const anc = s.ancestors.pop();
      await anc?.lock.release();
      await rm(child, { force: true });
      await rm(`${child}.lock`, { force: true });
      return openServedFile(parent, { holder: HOLDER });
    });
  }

  private journalDisks(): RunnerJournalDisk[] {
    return this.slots.map((s) => {
      const parent = s.ancestors[s.ancestors.length - 1]?.path;
      return { slot: s.slot, path: this.server.file(s.name).path, ...(parent ? { parent } : {}) };
    });
  }

  private writeJournal(merge?: MergeRequest): Promise<void> {
    return writeRunnerJournal(this.machineDir, { pid: process.pid, disks: this.journalDisks(), ...(merge ? { merge } : {}) });
  }

  private slotOf(slot: number): Slot {
    const s = this.slots.find((x) => x.slot === slot);
    if (!s) throw new UsageError(`the running machine has no disk in slot ${slot}`);
    return s;
  }

  private checkRunning(): void {
    if (this.stopped) throw new TidemarkError('E_RUNNER_STOPPED', 'the machine has stopped (its disks are closed)', {});
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.mutex.then(fn);
    this.mutex = run.catch(() => undefined);
    return run;
  }
}


/**
 * Test hook: TIDEMARK_DEBUG_RUNNER_PAUSE_AT=<step> makes the runner print `tidemark-runner-step <step>`
 * to stderr (its runner.log) and wait TIDEMARK_DEBUG_RUNNER_MS (default 30000) ms there, so a test can
 * kill it at that point. Steps: fork-journal (children journaled, I/O still paused), fork-resumed (the
 * guest writes the children, the caller has no answer yet), merge-copied (a child copied into its parent).
 */
async function debugStep(step: string): Promise<void> {
  if (process.env.TIDEMARK_DEBUG_RUNNER_PAUSE_AT !== step) return;
  process.stderr.write(`tidemark-runner-step ${step}\n`);
  await new Promise((r) => setTimeout(r, Number(process.env.TIDEMARK_DEBUG_RUNNER_MS ?? 30_000)));
}
