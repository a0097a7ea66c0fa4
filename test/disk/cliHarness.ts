import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { stat } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { RawFileDevice } from '../../src/blockdev/RawFileDevice.js';

export const MiB = 1024 * 1024;
export const GiB = 1024 * MiB;
export const TiB = 1024 * GiB;

/** What `tidemark disk info|create --json` prints. */
export interface DiskInfoJson {
  format: string;
  type: string;
  size: number;
  blockSize: number | null;
  logicalSectorSize: number;
  physicalSectorSize: number;
  allocatedBytes: number;
  diskId: string | null;
  dataWriteGuid: string | null;
  parentChain: string[];
}

/** The data runs of a file (SEEK_DATA/SEEK_HOLE via RawFileDevice). */
export async function dataExtents(path: string): Promise<Array<[number, number]>> {
  const dev = await RawFileDevice.open(path, { readOnly: true });
  try {
    assert.ok(dev.capabilities.extents, 'extents supported here');
    return (await dev.extents(0, dev.size)).filter((e) => e.type === 'data').map((e) => [e.offset, e.length]);
  } finally {
    await dev.close();
  }
}

/** Bytes the filesystem has allocated to `path`. */
export async function allocated(path: string): Promise<number> {
  return (await stat(path)).blocks * 512;
}

/** The compiled CLI entry, found relative to this compiled file (<outDir>/test/disk -> <outDir>/src/cli). */
export const CLI = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));

export interface CliResult {
  status: number;
  stdout: string;
  stderr: string;
}

/** Run `tidemark <args>` as a child process; resolves with its exit status and output (never rejects on status). */
export function tidemark(...args: string[]): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ status: code ?? (signal ? 128 : -1), stdout, stderr }));
  });
}

/** Like `tidemark` but parses stdout as JSON. */
export async function tidemarkJson<T = Record<string, unknown>>(...args: string[]): Promise<{ status: number; json: T; stderr: string }> {
  const r = await tidemark(...args);
  let json: T;
  try {
    json = JSON.parse(r.stdout) as T;
  } catch {
    throw new Error(`tidemark ${args.join(' ')} printed no JSON (exit ${r.status}): ${r.stdout}\n${r.stderr}`);
  }
  return { status: r.status, json, stderr: r.stderr };
}
