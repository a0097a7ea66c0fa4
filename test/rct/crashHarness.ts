import { spawn } from 'node:child_process';
import { randomInt } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import assert from 'node:assert/strict';
import { RawFileDevice } from '../../src/blockdev/RawFileDevice.js';
import { fileFingerprint } from '../../src/rct/fileFingerprint.js';
import { enableTracking } from '../../src/rct/enableTracking.js';
import { openTracked, type TrackedDevice } from '../../src/rct/trackingLayer.js';
import type { Range } from '../../src/rct/Range.js';

export interface CrashResult {
  rounds: number;
  /** Bytes `changes` reported, summed over rounds. */
  reportedBytes: number;
  /** Bytes in blocks whose content really differs from the shadow copy, summed over rounds. */
  changedBytes: number;
}

const CHILD = fileURLToPath(new URL('./crashChild.js', import.meta.url));

function covered(ranges: Range[], offset: number, length: number): boolean {
  // ranges are sorted and merged: find the one containing offset
  let lo = 0;
  let hi = ranges.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    const r = ranges[mid]!;
    if (r.offset + r.length <= offset) lo = mid + 1;
    else if (r.offset > offset) hi = mid - 1;
    else return r.offset + r.length >= offset + length;
  }
  return false;
}

interface Child {
  /** Let it open the disk; resolves when its tracking epoch has begun. */
  go(): Promise<void>;
  /** SIGKILL it after a random delay up to maxMs; resolves when it is dead. */
  crash(maxMs: number): Promise<void>;
}

/** Start a child that writes through the tracking layer once told to go (module loading happens now). */
function startChild(disk: string, hotSize: number): Child {
  const child = spawn(process.execPath, [CHILD, disk, String(hotSize)], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((res) => child.on('exit', (code, signal) => res({ code, signal })));
  const ready = new Promise<void>((res, rej) => {
    child.stdout.on('data', (d: Buffer) => d.toString().includes('ready') && res());
    void exited.then(({ code, signal }) => rej(new Error(`crash child exited (${code ?? signal}) before it was ready: ${stderr}`)));
  });
  ready.catch(() => undefined);
  return {
    go() {
      child.stdin.write('go\n');
      return ready;
    },
    async crash(maxMs) {
      await new Promise((r) => setTimeout(r, randomInt(1, maxMs)));
      child.kill('SIGKILL');
      const { signal } = await exited;
      if (signal !== 'SIGKILL') throw new Error(`crash child ended by itself (not SIGKILL): ${stderr}`);
    },
  };
}

/**
 * Crash rounds on a raw file disk: seal an ID and copy the disk (the shadow), let a child write through
 * tracking and SIGKILL it, reopen (crash recovery), and check that every block whose content differs
 * from the shadow is inside `changes(ID)`. Also checks the very first ID against the first shadow.
 */
export async function runCrashRounds(dir: string, rounds: number, opts: { size?: number; blockSize?: number; regionSize?: number; maxMs?: number; log?: (s: string) => void } = {}): Promise<CrashResult> {
  const size = opts.size ?? 32 * 1024 * 1024;
  const bs = opts.blockSize ?? 64 * 1024;
  const regionSize = opts.regionSize ?? 2 * 1024 * 1024;
  const disk = `${dir}/crash.raw`;
  await (await RawFileDevice.create(disk, size)).close();
  await enableTracking(disk, { blockSize: bs, regionSize });
  const open = async (): Promise<TrackedDevice> => {
    const fingerprintBeforeOpen = await fileFingerprint(disk);
    return openTracked(await RawFileDevice.open(disk), disk, { persistIntervalMs: 0, fingerprintBeforeOpen });
  };

  let dev = await open();
  const firstId = await dev.seal();
  const firstShadow = await dev.read(0, size);
  await dev.close();
  const result: CrashResult = { rounds, reportedBytes: 0, changedBytes: 0 };

  const check = async (d: TrackedDevice, id: string, shadow: Buffer, round: number) => {
    const ranges = await d.changes(id);
    const now = await d.read(0, size);
    let changed = 0;
    for (let off = 0; off < size; off += bs) {
      const len = Math.min(bs, size - off);
      if (now.compare(shadow, off, off + len, off, off + len) !== 0) {
        changed += len;
        assert.ok(covered(ranges, off, len), `round ${round}: block at ${off} changed on disk but changes(${id}) does not report it`);
      }
    }
    return { reported: ranges.reduce((n, r) => n + r.length, 0), changed };
  };

  let next = startChild(disk, regionSize * 2);
  for (let round = 0; round < rounds; round++) {
    const child = next;
    dev = await open();
    const prev = (await dev.listIds()).filter((x) => x !== firstId);
    for (const x of prev) await dev.drop(x);
    const id = await dev.seal();
    const shadow = await dev.read(0, size);
    await dev.close();

    await child.go();
    await child.crash(opts.maxMs ?? 150);
    if (round + 1 < rounds) next = startChild(disk, regionSize * 2);

    dev = await open();
    assert.equal(dev.status().verdict, 'recovered', `round ${round}: tracking must survive a crash (got ${dev.status().verdict})`);
    const r = await check(dev, id, shadow, round);
    result.reportedBytes += r.reported;
    result.changedBytes += r.changed;
    opts.log?.(`round ${round}: changed ${r.changed} B, reported ${r.reported} B`);
    await dev.close();
  }
  dev = await open();
  await check(dev, firstId, firstShadow, -1);
  await dev.close();
  return result;
}
