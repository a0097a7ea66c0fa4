/**
 * The runner's journal `<machine dir>/runner.json`: which file the running machine's runner serves for
 * each disk slot *now*, written atomically (temp, fsync, rename, fsync dir) by the runner before any
 * guest write can reach a newly switched file. The inventory is only changed by the CLI process that
 * asked for a fork or merge (the runner never takes the inventory lock during one), so after a crash of
 * either process the journal tells recovery what the guest really wrote to:
 *
 * ```json
 * { "format": "tidemark-runner", "version": 1, "pid": 123,
 *   "disks": [ { "slot": 0, "path": "/abs/child.avhdx", "parent": "/abs/disk0.vhdx" } ],
 *   "merge": { "checkpointId": "uuid", "slots": [ { "slot": 0, "parent": "/abs/disk0.vhdx", "child": "/abs/child.avhdx" } ] } }
 * ```
 * `parent` is set for a child the runner's own fork created (its frozen parent); `merge` is present
 * while a merge back is copying into the parents (before the switch to them).
 */
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { CorruptError } from '../errors.js';
import { atomicWriteFile } from '../util/atomicWriteFile.js';

export const RUNNER_JOURNAL_FORMAT = 'tidemark-runner';

export interface RunnerJournalDisk {
  slot: number;
  path: string;
  parent?: string;
}

export interface RunnerJournal {
  format: typeof RUNNER_JOURNAL_FORMAT;
  version: 1;
  pid: number;
  disks: RunnerJournalDisk[];
  merge?: { checkpointId: string; slots: Array<{ slot: number; parent: string; child: string }> };
}

export const runnerJournalPath = (machineDir: string) => join(machineDir, 'runner.json');

/** The journal, or undefined when there is none. Throws CorruptError for an unreadable one. */
export async function readRunnerJournal(machineDir: string): Promise<RunnerJournal | undefined> {
  const file = runnerJournalPath(machineDir);
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  let j: RunnerJournal;
  try {
    j = JSON.parse(text) as RunnerJournal;
  } catch (err) {
    throw new CorruptError(file, 'runner journal', `not valid JSON (${(err as Error).message}); check the machine's disks by hand, then delete it`);
  }
  if (j?.format !== RUNNER_JOURNAL_FORMAT || j.version !== 1 || !Array.isArray(j.disks) || typeof j.pid !== 'number') {
    throw new CorruptError(file, 'runner journal', 'not a version 1 Tidemark runner journal; check the machine\'s disks by hand, then delete it');
  }
  return j;
}

/** Write the journal atomically (durable when this resolves). */
export async function writeRunnerJournal(machineDir: string, j: Omit<RunnerJournal, 'format' | 'version'>): Promise<void> {
  await atomicWriteFile(runnerJournalPath(machineDir), JSON.stringify({ format: RUNNER_JOURNAL_FORMAT, version: 1, ...j }, null, 2) + '\n');
}

export async function removeRunnerJournal(machineDir: string): Promise<void> {
  await rm(runnerJournalPath(machineDir), { force: true });
}
