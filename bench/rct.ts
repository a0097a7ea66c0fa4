/**
 * RCT cost: write throughput through the tracking layer against the bare device, same file, same run
 * (goal: within 3%), and tracking memory per TiB of disk.
 *
 * Workload: 64 KiB random writes at queue depth 8 over a sparse raw file (TIDEMARK_BENCH_RCT_MIB,
 * default 1024 MiB), TIDEMARK_BENCH_RCT_WRITES_MIB (default 512) per run. Tracking uses the defaults
 * (64 KiB blocks, 64 MiB regions), and every run is a new epoch, so each run pays the .mrt fsync of
 * every region it dirties. Runs alternate bare/tracked and each figure is the best of
 * TIDEMARK_BENCH_RUNS (default 5), alternating which goes first. Figures: the steady write path (second pass of an epoch: all
 * regions already marked; page cache), the same plus the final flush (data fsync + .rct persist), and
 * the first pass (pays the .mrt marks: one fsync per 64 MiB region per epoch).
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { BlockDevice } from '../src/blockdev/BlockDevice.js';
import { MemoryDevice } from '../src/blockdev/MemoryDevice.js';
import { RawFileDevice } from '../src/blockdev/RawFileDevice.js';
import { enableTracking, disableTracking } from '../src/rct/enableTracking.js';
import { fileFingerprint } from '../src/rct/fileFingerprint.js';
import { openTracked } from '../src/rct/trackingLayer.js';
import { formatSize } from '../src/util/size.js';

const MiB = 1024 * 1024;
const TiB = 2 ** 40;
const IO = 64 * 1024;

async function workload(dev: BlockDevice, offsets: number[], buf: Buffer): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < offsets.length) await dev.write(offsets[next++]!, buf);
  };
  await Promise.all(Array.from({ length: 8 }, worker));
}

export async function run(): Promise<void> {
  const sizeMiB = Number(process.env.TIDEMARK_BENCH_RCT_MIB ?? 1024);
  const writesMiB = Number(process.env.TIDEMARK_BENCH_RCT_WRITES_MIB ?? 512);
  const runs = Number(process.env.TIDEMARK_BENCH_RUNS ?? 5);
  const dir = await mkdtemp(join(tmpdir(), 'tidemark-bench-rct-'));
  try {
    const disk = join(dir, 'disk.raw');
    const size = sizeMiB * MiB;
    await (await RawFileDevice.create(disk, size)).close();
    const blocks = size / IO;
    const offsets = Array.from({ length: (writesMiB * MiB) / IO }, () => Math.floor(Math.random() * blocks) * IO);
    const buf = randomBytes(IO);
    const best = { bare: [Infinity, Infinity, Infinity], tracked: [Infinity, Infinity, Infinity] };
    // warm-up: allocate the file's blocks so every timed run overwrites
    {
      const d = await RawFileDevice.open(disk);
      await workload(d, offsets, buf);
      await d.close();
    }
    await enableTracking(disk);
    for (let i = 0; i < runs; i++) {
      for (const kind of i % 2 === 0 ? (['bare', 'tracked'] as const) : (['tracked', 'bare'] as const)) {
        const fp = await fileFingerprint(disk);
        const raw = await RawFileDevice.open(disk);
        const dev: BlockDevice = kind === 'bare' ? raw : await openTracked(raw, disk, { fingerprintBeforeOpen: fp });
        if (kind === 'tracked') await (dev as Awaited<ReturnType<typeof openTracked>>).seal();
        // first pass of the epoch: tracked pays one .mrt fsync per region it dirties
        const t0 = process.hrtime.bigint();
        await workload(dev, offsets, buf);
        const t1 = process.hrtime.bigint();
        // steady state: every region already marked in this epoch
        await workload(dev, offsets, buf);
        const t2 = process.hrtime.bigint();
        await dev.flush();
        const t3 = process.hrtime.bigint();
        await dev.close();
        best[kind][0] = Math.min(best[kind][0]!, Number(t1 - t0) / 1e9);
        best[kind][1] = Math.min(best[kind][1]!, Number(t2 - t1) / 1e9);
        best[kind][2] = Math.min(best[kind][2]!, Number(t3 - t1) / 1e9);
      }
    }
    const mbps = (s: number) => writesMiB / s;
    const regions = Math.ceil(size / (64 * MiB));
    for (const [i, label] of [[1, 'steady write'], [2, 'steady+flush'], [0, 'first pass']] as const) {
      const b = mbps(best.bare[i]!);
      const t = mbps(best.tracked[i]!);
      const note = i === 0 ? ` (includes marking ${regions} new 64 MiB regions: ${(((best.tracked[0]! - best.bare[0]!) * 1000) / regions).toFixed(1)} ms each)` : ' (goal >= 0.97)';
      process.stdout.write(`rct ${label.padEnd(12)}: tracked ${t.toFixed(0)} MiB/s vs bare RawFileDevice ${b.toFixed(0)} MiB/s: ratio ${(t / b).toFixed(3)}${note}\n`);
    }
    await disableTracking(disk);

    // CPU cost of the write path, free of I/O noise: 4 KiB writes to a MemoryDevice, bare vs tracked
    // (regions already marked), best of 5 alternating runs.
    {
      const cdisk = join(dir, 'cpu');
      await writeFile(cdisk, '');
      await enableTracking(cdisk);
      const mem = new MemoryDevice(1 << 30);
      const passthrough: BlockDevice = {
        size: mem.size, logicalSectorSize: 512, physicalSectorSize: 4096, capabilities: mem.capabilities,
        read: (o, l) => mem.read(o, l), write: (o, d) => mem.write(o, d), zero: (o, l) => mem.zero(o, l), trim: (o, l) => mem.trim(o, l),
        flush: () => mem.flush(), extents: (o, l) => mem.extents(o, l), close: async () => undefined,
      };
      const tdev = await openTracked(passthrough, cdisk, { persistIntervalMs: 0 });
      await tdev.seal();
      const small = Buffer.alloc(4096, 1);
      const offs = Array.from({ length: 50_000 }, () => Math.floor(Math.random() * (mem.size / 4096)) * 4096);
      for (const o of offs) await tdev.write(o, small);
      const per = { bare: Infinity, tracked: Infinity };
      for (let i = 0; i < 5; i++) {
        for (const [k, d] of [['bare', passthrough], ['tracked', tdev]] as const) {
          const t0 = process.hrtime.bigint();
          for (const o of offs) await d.write(o, small);
          per[k] = Math.min(per[k], Number(process.hrtime.bigint() - t0) / offs.length);
        }
      }
      await tdev.close();
      process.stdout.write(`rct CPU per 4 KiB write: tracked ${(per.tracked / 1000).toFixed(2)} µs vs bare ${(per.bare / 1000).toFixed(2)} µs (memory device): tracking adds ${((per.tracked - per.bare) / 1000).toFixed(2)} µs per write\n`);
    }

    // Memory per TiB: a 1 TiB sparse device, one live ID.
    const mdisk = join(dir, 'mem');
    await writeFile(mdisk, '');
    await enableTracking(mdisk);
    const mdev = await openTracked(new MemoryDevice(TiB), mdisk, { persistIntervalMs: 0 });
    await mdev.seal();
    const hot = 200 * 2 ** 30; // a guest rewriting a 10 GiB area (its OS and logs) inside 200 GiB
    for (let i = 0; i < 20_000; i++) mdev.tracker.record(hot + Math.floor(Math.random() * (10 * 2 ** 30 / IO)) * IO, IO);
    const local = mdev.status().memoryBytes!;
    const n = 100_000;
    for (let i = 0; i < n; i++) mdev.tracker.record(Math.floor(Math.random() * (TiB / IO)) * IO, IO);
    const scattered = mdev.status().memoryBytes!;
    mdev.tracker.record(0, TiB);
    const full = mdev.status().memoryBytes!;
    await mdev.tracker.abandon();
    process.stdout.write(
      `rct memory per TiB (64 KiB blocks): ${formatSize(full)} per live ID when every block changed (worst case), ` +
        `${formatSize(local)} for 20000 writes within a 10 GiB area, ${formatSize(scattered)} after ${n} more scattered over the disk; .mrt table 2 KiB; ` +
        `vs a per-block u32 last-changed-generation array: ${formatSize((TiB / IO) * 4)} whatever changed\n`,
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
