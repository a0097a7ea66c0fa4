import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { openDisk } from '../../src/disk/openDisk.js';
import { openTrackedDisk } from '../../src/rct/openTrackedDisk.js';
import type { Range } from '../../src/rct/Range.js';
import { isTracked } from '../../src/rct/trackingLayer.js';

/** Helpers for the RCT integration tests: the real CLI (compiled entry found relative to this file) and checks. */
export const MAIN = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
export const KiB = 1024;
export const MiB = 1024 * KiB;
export const BS = 64 * KiB;

export function cli(...args: string[]): Promise<{ status: number; stdout: string; stderr: string }> {
  return new Promise((res, rej) => {
    const c = spawn(process.execPath, [MAIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    c.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    c.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    c.on('error', rej);
    c.on('close', (code, signal) => res({ status: code ?? (signal ? 128 : -1), stdout, stderr }));
  });
}
export async function ok(...args: string[]): Promise<string> {
  const r = await cli(...args);
  assert.equal(r.status, 0, `tidemark ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}
export async function seal(disk: string): Promise<string> {
  return (JSON.parse(await ok('rct', 'seal', disk, '--json')) as { id: string }).id;
}
export async function changes(disk: string, since: string): Promise<Range[]> {
  return (JSON.parse(await ok('rct', 'changes', disk, '--since', since, '--json')) as { ranges: Range[] }).ranges;
}

/** Write through Tidemark (tracked), each write a distinct pattern. */
export async function tidemarkWrite(disk: string, writes: Array<[number, number]>, fill = 0x5a): Promise<void> {
  const dev = await openTrackedDisk(disk);
  assert.ok(isTracked(dev), 'a disk with tracking enabled opens tracked');
  for (const [off, len] of writes) await dev.write(off, Buffer.alloc(len, fill));
  await dev.close();
}

/** The verdict a tracked writable open reaches now (clean = older IDs trusted exactly). */
export async function verdictNow(disk: string): Promise<string | undefined> {
  const dev = await openTrackedDisk(disk);
  assert.ok(isTracked(dev));
  const v = dev.status().verdict;
  await dev.close();
  return v;
}

export async function readAll(disk: string): Promise<Buffer> {
  const dev = await openDisk(disk, { readOnly: true });
  try {
    return await dev.read(0, dev.size);
  } finally {
    await dev.close();
  }
}

/** Every byte that differs between a and b (same length) lies inside `ranges`. */
export function assertCovers(ranges: Range[], a: Buffer, b: Buffer, what: string): void {
  assert.equal(a.length, b.length);
  let r = 0;
  for (let i = 0; i < a.length; i++) {
    if (a[i] === b[i]) continue;
    while (r < ranges.length && ranges[r]!.offset + ranges[r]!.length <= i) r++;
    const hit = ranges[r];
    if (!hit || hit.offset > i) assert.fail(`${what}: byte ${i} changed but is not reported (ranges ${JSON.stringify(ranges)})`);
  }
}

/** Start `tidemark <args>` without waiting (to kill it midway). */
export function startCli(...args: string[]): ChildProcess {
  return spawn(process.execPath, [MAIN, ...args], { stdio: 'ignore' });
}
