/** Helpers of the online-checkpoint tests: a guest that keeps writing numbered blocks while we fork and merge. */
import assert from 'node:assert/strict';
import type { TestContext } from 'node:test';
import { pidAlive } from '../../src/checkpoint/pidAlive.js';
import { spawn } from 'node:child_process';
import { readFile, readdir, writeFile } from 'node:fs/promises';
import { DiskLock } from '../../src/blockdev/DiskLock.js';
import { readRunnerJournal } from '../../src/vm/runnerJournal.js';
import { join } from 'node:path';
import { ensureVmAssets, GUEST_LIB } from '../vm/guest.js';
import { openDisk } from '../../src/disk/openDisk.js';
import { showMachine, type MachineView } from '../../src/vm/machines.js';
import { startMachine, type BootOptions } from '../../src/vm/runMachine.js';
import { MAIN, ok } from './harness.js';

// These guests run no guest agent: don't wait the default 5 s for its handshake at every backup fork
// (backup checkpoints try to quiesce, then fall back to crash-consistent).
process.env.TIDEMARK_QGA_TIMEOUT_MS ??= '500';

/** Block i of the writer lands at 4 KiB block `slotOf(i)` of /dev/vda, holding `block <i, 8 digits>\n` padded with zeros. */
export const SLOTS = 512;
export const slotOf = (i: number) => 16 + (i % SLOTS) * 4;

/**
 * The writer: numbered 4 KiB blocks, each written with fsync (a FLUSH reaches the server before the
 * guest reports it), reported on the console as `TIDEMARK-RESULT wrote=<i>` once durable.
 */
export const WRITER = [
  'i=0',
  'while :; do',
  '  i=$((i+1))',
  `  printf 'block %08d\\n' $i | dd of=/dev/vda bs=4096 seek=$((16 + (i % ${SLOTS}) * 4)) conv=sync,fsync 2>/dev/null`,
  '  echo "TIDEMARK-RESULT wrote=$i"',
  '  usleep 20000',
  'done',
].join('\n');

/** Boot options (startMachine) for the test kernel running `script` (fw_cfg). */
export async function bootOptions(dir: string, script: string, disks = 1): Promise<BootOptions> {
  const { kernel, initrd } = await ensureVmAssets();
  const path = join(dir, `script-${Math.random().toString(36).slice(2)}.sh`);
  await writeFile(path, GUEST_LIB + script + '\n');
  return { kernel, initrd, append: `console=ttyS0 panic=-1 loglevel=3 mitigations=off tidemark.disks=${disks}`, qemuArgs: ['-fw_cfg', `name=opt/tidemark/script,file=${path}`] };
}

/**
 * Start `ref` running `script` (in-process library call; the runner is a detached `tidemark vm run`).
 * When the test ends, the runner and its QEMU are SIGKILLed by PID if still alive — not through the
 * inventory, whose temp folder may already be gone by then.
 */
export async function start(t: TestContext, home: string, ref: string, script: string): Promise<MachineView> {
  const v = await startMachine(home, ref, await bootOptions(home, script), 90_000);
  const pids = [v.status.runtime?.qemuPid, v.status.runtime?.pid].filter((p): p is number => !!p);
  t.after(() => {
    for (const pid of pids) if (pidAlive(pid)) process.kill(pid, 'SIGKILL');
  });
  return v;
}

/** The highest `wrote=` the guest reported so far (0 before the first). */
export async function lastWrite(machineDir: string): Promise<number> {
  const text = await readFile(join(machineDir, 'console.log'), 'utf8').catch(() => '');
  let n = 0;
  for (const m of text.matchAll(/TIDEMARK-RESULT wrote=(\d+)/g)) n = Math.max(n, Number(m[1]));
  return n;
}

/** Wait until the guest has reported at least `n` writes. */
export async function waitWrites(machineDir: string, n: number, ms = 60_000): Promise<number> {
  const deadline = Date.now() + ms;
  for (;;) {
    const w = await lastWrite(machineDir);
    if (w >= n) return w;
    if (Date.now() > deadline) {
      const tail = (await readFile(join(machineDir, 'console.log'), 'utf8').catch(() => '')).split('\n').slice(-15).join('\n');
      throw new Error(`the guest reported ${w} writes, not ${n}, within ${ms} ms; console:\n${tail}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The number each writer slot holds in the disk `path` (0: never written). */
export async function blockNumbers(path: string): Promise<number[]> {
  const dev = await openDisk(path, { readOnly: true });
  try {
    const out: number[] = [];
    for (let s = 0; s < SLOTS; s++) {
      const b = await dev.read((16 + s * 4) * 4096, 16);
      const m = /^block (\d{8})\n/.exec(b.toString('latin1'));
      out.push(m ? Number(m[1]) : 0);
    }
    return out;
  } finally {
    await dev.close();
  }
}

/** Every write 1..n the guest reported is in `nums` (the slot of write i holds i or a later write). */
export function assertHoldsWrites(nums: number[], n: number, what: string): void {
  for (let i = Math.max(1, n - SLOTS + 1); i <= n; i++) {
    const got = nums[i % SLOTS]!;
    assert.ok(got >= i && got % SLOTS === i % SLOTS, `${what}: write ${i} (slot ${i % SLOTS}) is missing (slot holds ${got})`);
  }
}

/** Checkpoint disks (.avhdx) left in a folder. */
export async function avhdxIn(dir: string): Promise<string[]> {
  return (await readdir(dir)).filter((n) => n.endsWith('.avhdx'));
}

export async function waitState(home: string, ref: string, state: string, ms = 60_000): Promise<void> {
  const deadline = Date.now() + ms;
  while ((await showMachine(home, ref)).status.state !== state) {
    if (Date.now() > deadline) throw new Error(`machine ${ref} not ${state} after ${ms} ms`);
    await new Promise((r) => setTimeout(r, 200));
  }
}


/** Run the CLI in the background; resolves with its exit status and stderr. */
export function background(home: string, args: string[]): Promise<{ status: number | null; stderr: string }> {
  return new Promise((resolve) => {
    const c = spawn(process.execPath, [MAIN, ...args, '--home', home], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    c.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    c.on('close', (status) => resolve({ status, stderr }));
  });
}

export async function waitLog(path: string, text: string, ms = 60_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await readFile(path, 'utf8').catch(() => '')).includes(text)) {
    if (Date.now() > deadline) throw new Error(`${path} never showed "${text}": ${await readFile(path, 'utf8').catch(() => '')}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The runner is SIGKILLed at `step`; returns the highest write the guest reported before the kill. */
export async function killRunnerAt(dir: string, step: string, during: () => Promise<void> = async () => undefined): Promise<number> {
  await waitLog(join(dir, 'runner.log'), `tidemark-runner-step ${step}`);
  await during();
  const n = await lastWrite(dir);
  // Not through the inventory: the CLI waiting for the runner holds the inventory lock.
  const j = await readRunnerJournal(dir);
  process.kill(j!.pid, 'SIGKILL');
  return n;
}

export async function assertRecovered(home: string, dir: string, base: string, n: number): Promise<void> {
  const v = await showMachine(home, 'g');
  assert.equal(v.status.state, 'off', 'the machine is off (runner dead, its QEMU killed by recovery)');
  assert.equal(v.disks[0]!.path, base, 'back on the base disk');
  assert.deepEqual(v.checkpoints, []);
  assert.deepEqual(await avhdxIn(dir), [], 'no checkpoint disk left');
  assert.equal(await readRunnerJournal(dir), undefined, 'the journal is gone once reconciled');
  const lock = await DiskLock.acquire(base, { exclusive: true, holder: 'test' }); // no stale lock
  await lock.release();
  assertHoldsWrites(await blockNumbers(base), n, 'the base disk after recovery');
}

export { ok };
