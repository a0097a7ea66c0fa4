/**
 * VHDX sequential throughput: Tidemark's VhdxDevice (1 MiB writes, flush; 1 MiB reads) against
 * qemu-img convert raw -> vhdx (write) and vhdx -> raw (read) on the same 256 MiB of data, same run.
 */
import { spawnSync } from 'node:child_process';
import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { VhdxDevice } from '../src/vhdx/VhdxDevice.js';

const MiB = 1024 * 1024;
const N = 256;

function timeCmd(cmd: string, args: string[]): number {
  const t = performance.now();
  const r = spawnSync(cmd, args, { stdio: 'ignore' });
  if (r.status !== 0) throw new Error(`${cmd} failed`);
  return performance.now() - t;
}

export async function run(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'bench-vhdx-'));
  try {
    const buf = Buffer.alloc(MiB);
    for (let i = 0; i < buf.length; i++) buf[i] = (i * 31) & 0xff;
    const raw = join(dir, 'src.raw');
    const fh = await open(raw, 'w');
    for (let i = 0; i < N; i++) await fh.write(buf, 0, MiB, i * MiB);
    await fh.close();

    const dev = await VhdxDevice.create(join(dir, 'ours.vhdx'), { size: N * MiB });
    let t = performance.now();
    for (let i = 0; i < N; i++) await dev.write(i * MiB, buf);
    await dev.flush();
    const ourWrite = performance.now() - t;
    t = performance.now();
    for (let i = 0; i < N; i++) await dev.read(i * MiB, MiB);
    const ourRead = performance.now() - t;
    await dev.close();

    const qWrite = timeCmd('qemu-img', ['convert', '-f', 'raw', '-O', 'vhdx', '-o', 'subformat=dynamic', raw, join(dir, 'q.vhdx')]);
    const qRead = timeCmd('qemu-img', ['convert', '-f', 'vhdx', '-O', 'raw', join(dir, 'q.vhdx'), join(dir, 'back.raw')]);
    const mbps = (ms: number) => (N / (ms / 1000)).toFixed(0);
    console.log(`vhdx sequential write: tidemark ${mbps(ourWrite)} MiB/s, qemu-img convert ${mbps(qWrite)} MiB/s, ratio ${(qWrite / ourWrite).toFixed(2)}x`);
    console.log(`vhdx sequential read:  tidemark ${mbps(ourRead)} MiB/s, qemu-img convert ${mbps(qRead)} MiB/s, ratio ${(qRead / ourRead).toFixed(2)}x`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
