/**
 * Snapshot providers: the `copy` provider against `cp --sparse=always` + sync on the same sparse file in
 * the same run (TIDEMARK_BENCH_PROVIDER_MIB, default 512: random data with a hole in every other 8 MiB
 * stretch). Both sides make the copy durable (the provider fsyncs; cp is followed by sync). Alternating
 * runs, TIDEMARK_BENCH_RUNS (default 2) each, best counts; ratio = Tidemark's throughput over cp's
 * (> 1: Tidemark is faster). The `reflink` provider is not timed here: it needs an XFS/btrfs mount and
 * costs no data copy (test/export/providersXfs.test.ts checks that it shares extents).
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CopyProvider } from '../src/export/providers/CopyProvider.js';

const MiB = 1024 * 1024;

export async function run(): Promise<void> {
  const mib = Number(process.env.TIDEMARK_BENCH_PROVIDER_MIB ?? 512);
  const runs = Number(process.env.TIDEMARK_BENCH_RUNS ?? 2);
  const dir = await mkdtemp(join(tmpdir(), 'tidemark-bench-prov-'));
  try {
    const src = join(dir, 'src.bin');
    const h = await open(src, 'w');
    await h.truncate(mib * MiB);
    for (let off = 0; off < mib * MiB; off += 16 * MiB) await h.write(randomBytes(8 * MiB), 0, 8 * MiB, off);
    await h.sync();
    await h.close();
    const best = { ours: Infinity, cp: Infinity };
    for (let i = 0; i < runs; i++) {
      const a = join(dir, `ours${i}.bin`);
      let t = process.hrtime.bigint();
      await new CopyProvider().clone(src, a);
      best.ours = Math.min(best.ours, Number(process.hrtime.bigint() - t) / 1e9);
      await rm(a);
      const b = join(dir, `cp${i}.bin`);
      t = process.hrtime.bigint();
      spawnSync('sh', ['-c', `cp --sparse=always '${src}' '${b}' && sync`], { stdio: 'inherit' });
      best.cp = Math.min(best.cp, Number(process.hrtime.bigint() - t) / 1e9);
      await rm(b);
    }
    const data = mib / 2;
    const ours = data / best.ours;
    const peer = data / best.cp;
    console.log(`providers copy: ${mib} MiB file (${data} MiB data)  tidemark ${ours.toFixed(0)} MiB/s  cp --sparse=always ${peer.toFixed(0)} MiB/s  ratio ${(ours / peer).toFixed(2)}`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

if (import.meta.url === `file://${process.argv[1]}`) await run();
