/**
 * Disk throughput: Tidemark against its peers on the same image in the same run.
 *
 *   convert raw -> dynamic VHDX     tidemark disk convert   vs  qemu-img convert -O vhdx
 *   convert dynamic VHDX -> raw     tidemark disk convert   vs  qemu-img convert -O raw
 *   convert raw -> raw              tidemark disk convert   vs  cp --sparse=always + sync
 *   sequential read of the VHDX     VhdxDevice.read         vs  RawFileDevice.read (same data)
 *   sequential write                VhdxDevice.write        vs  RawFileDevice.write
 *
 * Every output is flushed to disk by both sides (Tidemark fsyncs; qemu-img runs with -t writeback,
 * which flushes on close; cp is followed by sync). The image (TIDEMARK_BENCH_DISK_MIB, default 1024)
 * holds random data with a hole in every eighth 8 MiB stretch. Tidemark and the peer run alternately,
 * TIDEMARK_BENCH_RUNS (default 2) times each, and each side's best run counts; the ratio is Tidemark's
 * throughput over the peer's (> 1: Tidemark is faster), then Tidemark's CPU seconds over the peer's (< 1:
 * Tidemark uses less CPU). The device-level peer is Tidemark's own RawFileDevice, in the same process.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RawFileDevice } from '../src/blockdev/RawFileDevice.js';
import type { BlockDevice } from '../src/blockdev/BlockDevice.js';
import { VhdxDevice } from '../src/vhdx/VhdxDevice.js';
import { convertDisk } from '../src/disk/convertDisk.js';
import { openDisk } from '../src/disk/openDisk.js';

const MiB = 1024 * 1024;
const CHUNK = 8 * MiB;

/** A measured run: wall seconds and CPU seconds (user + system, all threads / the child process). */
interface Sample {
  wall: number;
  cpu: number;
}

const TIME = '/usr/bin/time';
const haveTime = spawnSync(TIME, ['-f', '%U', 'true'], { stdio: 'ignore' }).status === 0;
/** CPU seconds used by children run through `sh` since the last `once` started. */
let childCpu = 0;

/** Run a peer command; its CPU time (via /usr/bin/time when present, else NaN) is added to childCpu. */
function sh(cmd: string, args: string[]): void {
  const argv = haveTime ? [TIME, '-f', 'CPU %U %S', cmd, ...args] : [cmd, ...args];
  const r = spawnSync(argv[0]!, argv.slice(1), { stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed: ${r.stderr}`);
  const m = /CPU ([\d.]+) ([\d.]+)\s*$/.exec(r.stderr);
  childCpu += m ? Number(m[1]) + Number(m[2]) : NaN;
}

/**
 * Time Tidemark and its peer alternately (ours, peer, ours, peer, ...) so both see the same background
 * load on a shared machine; each side's best run counts. `before*` run untimed (e.g. remove the output).
 * CPU time is reported too: on a busy host wall time is dominated by I/O contention, CPU time is not.
 */
async function pair(
  ours: () => Promise<unknown> | void,
  peer: () => Promise<unknown> | void,
  beforeOurs?: () => Promise<void>,
  beforePeer?: () => Promise<void>,
): Promise<[Sample, Sample]> {
  const runs = Number(process.env.TIDEMARK_BENCH_RUNS ?? 2);
  let a: Sample = { wall: Infinity, cpu: Infinity };
  let b: Sample = { wall: Infinity, cpu: Infinity };
  const once = async (fn: () => Promise<unknown> | void, before?: () => Promise<void>): Promise<Sample> => {
    await before?.();
    childCpu = 0;
    const c0 = process.cpuUsage();
    const t0 = process.hrtime.bigint();
    await fn();
    const wall = Number(process.hrtime.bigint() - t0) / 1e9;
    const c = process.cpuUsage(c0);
    return { wall, cpu: (c.user + c.system) / 1e6 + childCpu };
  };
  const best = (x: Sample, y: Sample): Sample => ({ wall: Math.min(x.wall, y.wall), cpu: Math.min(x.cpu, y.cpu) });
  for (let i = 0; i < runs; i++) {
    a = best(a, await once(ours, beforeOurs));
    b = best(b, await once(peer, beforePeer));
  }
  return [a, b];
}

/** One 8 MiB stretch in eight is a hole; the rest is random. Returns the bytes of data written. */
async function makeImage(path: string, size: number): Promise<number> {
  const fh = await open(path, 'w');
  let data = 0;
  try {
    await fh.truncate(size);
    for (let off = 0, i = 0; off < size; off += CHUNK, i++) {
      if (i % 8 === 7) continue;
      const n = Math.min(CHUNK, size - off);
      await fh.write(randomBytes(n), 0, n, off);
      data += n;
    }
    await fh.sync();
  } finally {
    await fh.close();
  }
  return data;
}

async function readAll(dev: BlockDevice): Promise<void> {
  const depth = 4;
  const inFlight: Promise<Buffer>[] = [];
  for (let off = 0; off < dev.size; off += CHUNK) {
    inFlight.push(dev.read(off, Math.min(CHUNK, dev.size - off)));
    if (inFlight.length >= depth) await inFlight.shift();
  }
  await Promise.all(inFlight);
}

async function writeAll(dev: BlockDevice, pattern: Buffer): Promise<void> {
  const depth = 4;
  const inFlight: Promise<void>[] = [];
  for (let off = 0; off < dev.size; off += CHUNK) {
    inFlight.push(dev.write(off, pattern.subarray(0, Math.min(CHUNK, dev.size - off))));
    if (inFlight.length >= depth) await inFlight.shift();
  }
  await Promise.all(inFlight);
  await dev.flush();
}

function row(label: string, bytes: number, ours: Sample, peerLabel: string, theirs: Sample): void {
  const mbs = (t: number) => (bytes / MiB / t).toFixed(0).padStart(6);
  const cpu = (t: number) => (Number.isNaN(t) ? '   ?' : t.toFixed(2).padStart(5));
  process.stdout.write(
    `${label.padEnd(30)} tidemark ${mbs(ours.wall)} MiB/s ${cpu(ours.cpu)} cpu-s | ${peerLabel.padEnd(24)} ${mbs(theirs.wall)} MiB/s ${cpu(theirs.cpu)} cpu-s | ` +
      `ratio ${(theirs.wall / ours.wall).toFixed(2)} (throughput), ${(ours.cpu / theirs.cpu).toFixed(2)} (cpu)\n`,
  );
}

export async function run(): Promise<void> {
  const size = Number(process.env.TIDEMARK_BENCH_DISK_MIB ?? 1024) * MiB;
  const dir = await mkdtemp(join(tmpdir(), 'tidemark-bench-disk-'));
  try {
    const src = join(dir, 'src.raw');
    const data = await makeImage(src, size);
    process.stdout.write(`image: ${size / MiB} MiB virtual, ${data / MiB} MiB of random data; figures are virtual bytes per second, best of ${process.env.TIDEMARK_BENCH_RUNS ?? 2}\n`);
    const rmf = (...p: string[]) => async () => {
      for (const f of p) await rm(f, { force: true });
    };

    // raw -> dynamic VHDX
    const tv = join(dir, 'tm.vhdx');
    const qv = join(dir, 'qemu.vhdx');
    const [oursToVhdx, qemuToVhdx] = await pair(
      () => convertDisk(src, tv, { format: 'vhdx', type: 'dynamic', blockSize: 32 * MiB }),
      () => sh('qemu-img', ['convert', '-t', 'writeback', '-f', 'raw', '-O', 'vhdx', '-o', 'subformat=dynamic,block_size=32M', src, qv]),
      rmf(tv),
      rmf(qv),
    );
    row('convert raw -> dynamic vhdx', size, oursToVhdx, 'qemu-img convert', qemuToVhdx);

    // dynamic VHDX -> raw (both read the VHDX Tidemark wrote)
    const tr = join(dir, 'tm.raw');
    const qr = join(dir, 'qemu.raw');
    const [oursFromVhdx, qemuFromVhdx] = await pair(
      () => convertDisk(tv, tr, { format: 'raw' }),
      () => sh('qemu-img', ['convert', '-t', 'writeback', '-f', 'vhdx', '-O', 'raw', tv, qr]),
      rmf(tr),
      rmf(qr),
    );
    row('convert dynamic vhdx -> raw', size, oursFromVhdx, 'qemu-img convert', qemuFromVhdx);
    await rmf(tr, qr)();

    // raw -> raw
    const tc = join(dir, 'tm-copy.raw');
    const cc = join(dir, 'cp-copy.raw');
    const [oursCopy, cpCopy] = await pair(
      () => convertDisk(src, tc, { format: 'raw' }),
      () => {
        sh('cp', ['--sparse=always', src, cc]);
        sh('sync', [cc]);
      },
      rmf(tc),
      rmf(cc),
    );
    row('convert raw -> raw', size, oursCopy, 'cp --sparse=always+sync', cpCopy);
    await rmf(tc, cc)();

    // Device-level sequential read: VHDX against raw, same content.
    const [vhdxRead, rawRead] = await pair(
      async () => {
        const d = await openDisk(tv, { readOnly: true });
        try { await readAll(d); } finally { await d.close(); }
      },
      async () => {
        const d = await openDisk(src, { readOnly: true });
        try { await readAll(d); } finally { await d.close(); }
      },
    );
    row('sequential read, VhdxDevice', size, vhdxRead, 'RawFileDevice', rawRead);

    // Device-level sequential write into a new disk.
    const pattern = randomBytes(CHUNK);
    const wv = join(dir, 'w.vhdx');
    const wr = join(dir, 'w.raw');
    const [vhdxWrite, rawWrite] = await pair(
      async () => {
        const d = await VhdxDevice.create(wv, { size, type: 'dynamic', blockSize: 32 * MiB });
        try { await writeAll(d, pattern); } finally { await d.close(); }
      },
      async () => {
        const d = await RawFileDevice.create(wr, size);
        try { await writeAll(d, pattern); } finally { await d.close(); }
      },
      rmf(wv),
      rmf(wr),
    );
    row('sequential write, VhdxDevice', size, vhdxWrite, 'RawFileDevice', rawWrite);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
