/** Shared helpers of the machine backup tests (test/backup/machine*.test.ts). */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { cli, hashDisk, MAIN, ok } from '../vm-mgmt/harness.js';
import { openRepositoryAt } from '../../src/repo/openRepositoryAt.js';
import { findSnapshot, listSnapshots } from '../../src/repo/Manifest.js';
import { SnapshotDevice } from '../../src/backup/SnapshotDevice.js';
import { hashDevice } from '../../src/export/hashDevice.js';

export const MiB = 2 ** 20;
export const BLOCK = 64 * 1024;

export interface MachineDiskJson {
  slot: number;
  name: string;
  size: number;
  mode: 'full' | 'incremental' | 'full-scan';
  reason?: string;
  bytesRead: number;
  chunksNew: number;
  chunksDeduplicated: number;
  bytesStored: number;
  dedupRatio: number | null;
  durationMs: number;
}

export interface MachineBackupJson {
  snapshot: string;
  machine: { id: string; name: string };
  parent?: string;
  refpoint: string;
  disks: MachineDiskJson[];
  bytesRead: number;
  bytesStored: number;
  dedupRatio: number | null;
  durationMs: number;
  warnings: string[];
  consistency?: { level: 'application' | 'crash'; quiesce: 'guest-agent' | 'hooks' | 'none' };
  repository: string;
}

/** `tidemark backup <vm> --repo <repo> --home <home> --json`. */
export function backupVm(home: string, repo: string, vm: string): MachineBackupJson {
  return ok(home, ['backup', vm, '--repo', repo]) as MachineBackupJson;
}

/** The content hash of each disk (by slot = index in `paths`). */
export async function machineHashes(paths: string[]): Promise<Map<number, string>> {
  const out = new Map<number, string>();
  for (const [slot, p] of paths.entries()) out.set(slot, await hashDisk(p));
  return out;
}

/**
 * Restore `snapshot` as a new machine `name` (`restore --vm --new-id`) and check that every disk's
 * content equals `expected` (slot -> hash) and that the configuration came back with it.
 */
export async function restoreAndCheck(home: string, repo: string, snapshot: string, name: string, expected: Map<number, string>, original: { cpus: number; memoryMiB: number }): Promise<void> {
  const r = ok(home, ['restore', snapshot, '--vm', '--new-id', '--name', name, '--repo', repo]);
  assert.equal(r.snapshot, snapshot);
  assert.equal(r.machine.name, name);
  assert.equal(r.machine.config.cpus, original.cpus);
  assert.equal(r.machine.config.memoryMiB, original.memoryMiB);
  const disks = r.machine.disks as Array<{ slot: number; path: string; format: string }>;
  assert.deepEqual(disks.map((d) => d.slot), [...expected.keys()].sort((a, b) => a - b));
  for (const d of disks) {
    assert.equal(d.format, 'vhdx');
    assert.ok(d.path.startsWith(r.machine.dir + '/'), `disk ${d.path} restored into the machine folder ${r.machine.dir}`);
    assert.equal(await hashDisk(d.path), expected.get(d.slot), `snapshot ${snapshot.slice(0, 12)} slot ${d.slot} restores bit-exact`);
  }
}

/** The content hash of each disk of a snapshot, by slot (read in-process through SnapshotDevice). */
export async function snapshotHashes(repo: string, snapshot: string): Promise<Map<number, string>> {
  const r = await openRepositoryAt(repo);
  try {
    const s = await findSnapshot(r, snapshot);
    const out = new Map<number, string>();
    for (const d of s.disks) {
      const dev = new SnapshotDevice(r, d);
      try {
        out.set(d.slot!, await hashDevice(dev));
      } finally {
        await dev.close();
      }
    }
    return out;
  } finally {
    await r.close();
  }
}

/** Count the 64 KiB blocks touched by writes [offset, length]. */
export function blocksOf(writes: Array<[number, Buffer]>): Set<number> {
  const s = new Set<number>();
  for (const [off, b] of writes) for (let i = Math.floor(off / BLOCK); i <= Math.floor((off + b.length - 1) / BLOCK); i++) s.add(i);
  return s;
}

/**
 * Start `tidemark backup <vm>` pausing after `step` (TIDEMARK_DEBUG_STEPS hook), run `whilePaused`, then
 * send `signal`. Resolves the exit code and signal.
 */
export function interruptBackupAt(home: string, repo: string, vm: string, step: string, signal: NodeJS.Signals, pauseMs: number, whilePaused: (pid: number) => Promise<void>): Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [MAIN, 'backup', vm, '--repo', repo, '--home', home, '--json'], {
      env: { ...process.env, TIDEMARK_DEBUG_STEPS: String(pauseMs), TIDEMARK_DEBUG_PAUSE_AT: step },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let err = '';
    let sent = false;
    p.stderr.setEncoding('utf8').on('data', (s: string) => {
      err += s;
      if (!sent && err.includes(`tidemark-step ${step}\n`)) {
        sent = true;
        whilePaused(p.pid!).then(() => p.kill(signal), (e) => {
          p.kill('SIGKILL');
          reject(e);
        });
      }
    });
    p.on('exit', (code, sig) => {
      if (!sent) reject(new Error(`backup exited ${code} before step ${step}: ${err}`));
      else resolve({ code, signal: sig, stderr: err });
    });
  });
}

/** Snapshot ids of the repository, oldest first (read in-process: cheaper than a CLI run). */
export async function snapshotIds(repo: string): Promise<string[]> {
  const r = await openRepositoryAt(repo);
  try {
    return (await listSnapshots(r)).map((s) => s.id);
  } finally {
    await r.close();
  }
}

export { cli, ok, hashDisk };
