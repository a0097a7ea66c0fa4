/** Shared helpers for the machine-management tests: the real CLI, tracked writes, content hashes. */
import { spawn, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { DiskLock } from '../../src/blockdev/DiskLock.js';
import { openDisk } from '../../src/disk/openDisk.js';
import { openTrackedDisk } from '../../src/rct/openTrackedDisk.js';
import { hashDevice } from '../../src/export/hashDevice.js';

export const MAIN = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));

export interface CliResult {
  status: number;
  stdout: string;
  stderr: string;
  json: any;
}

/** Run `tidemark <args> --home <home> --json` and parse its output. */
export function cli(home: string, args: string[], opts: { json?: boolean } = {}): CliResult {
  const full = [MAIN, ...args, '--home', home, ...(opts.json === false ? [] : ['--json'])];
  const r = spawnSync(process.execPath, full, { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  let json: unknown;
  try {
    json = JSON.parse(r.stdout);
  } catch {
    json = undefined;
  }
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr, json };
}

/** Like `cli` but throws unless the exit status is 0. */
export function ok(home: string, args: string[]): any {
  const r = cli(home, args);
  if (r.status !== 0) throw new Error(`tidemark ${args.join(' ')} exited ${r.status}: ${r.stderr}`);
  return r.json;
}

/** Write through change tracking, as every Tidemark writer does (the disk lock held). */
export async function writeDisk(path: string, writes: Array<[number, Buffer]>): Promise<void> {
  const lock = await DiskLock.acquire(path, { exclusive: true, holder: 'test' });
  try {
    const dev = await openTrackedDisk(path);
    try {
      for (const [off, data] of writes) await dev.write(off, data);
      await dev.flush();
    } finally {
      await dev.close();
    }
  } finally {
    await lock.release();
  }
}

/** SHA-256 of a disk's virtual content (through its parent chain). */
export async function hashDisk(path: string): Promise<string> {
  const dev = await openDisk(path, { readOnly: true });
  try {
    return await hashDevice(dev);
  } finally {
    await dev.close();
  }
}

export { spawn };
