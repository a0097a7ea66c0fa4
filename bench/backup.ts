/**
 * Backup benchmark: a full backup, an incremental and a restore of a raw disk image through the
 * library (the same code path as `tidemark backup` / `restore`), next to `cp`, `qemu-img convert`
 * and (when installed) `restic backup` / `restic restore` of the same file, measured in the same run.
 * Figures are throughput of the disk's allocated bytes; ratios are Tidemark / peer (> 1: faster).
 *
 * The image: 256 MiB raw, 192 MiB allocated, half incompressible and half compressible text-like
 * data. The incremental rewrites 16 MiB in 64 writes through change tracking.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LocalBackend } from '../src/backend/LocalBackend.js';
import { DeferredSyncBackend } from '../src/backup/DeferredSyncBackend.js';
import { backupDisk } from '../src/backup/backupDisk.js';
import { restoreSnapshot } from '../src/backup/restoreSnapshot.js';
import { DiskLock } from '../src/blockdev/DiskLock.js';
import { openTrackedDisk } from '../src/rct/openTrackedDisk.js';
import { Repository } from '../src/repo/Repository.js';

const MiB = 1 << 20;
const SIZE = 256 * MiB;
const ALLOCATED = 192 * MiB;

const has = (tool: string): boolean => spawnSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' }).status === 0;

function timed(cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env): number {
  const t0 = performance.now();
  const r = spawnSync(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'], env, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed: ${r.stderr}`);
  return (performance.now() - t0) / 1000;
}

async function timeIt(fn: () => Promise<unknown>): Promise<number> {
  const t0 = performance.now();
  await fn();
  return (performance.now() - t0) / 1000;
}

const rate = (bytes: number, s: number): string => `${(bytes / MiB / s).toFixed(1)} MiB/s`;

export async function run(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'tidemark-bench-backup-'));
  try {
    const disk = join(dir, 'disk.raw');
    const fh = await open(disk, 'w');
    await fh.truncate(SIZE);
    const text = Buffer.from('the quick brown fox jumps over the lazy dog 0123456789\n'.repeat(80000)).subarray(0, 4 * MiB);
    for (let off = 0; off < ALLOCATED; off += 4 * MiB) await fh.write(off % (8 * MiB) === 0 ? randomBytes(4 * MiB) : Buffer.from(text.map((b, i) => (i % 997 === 0 ? (b + off) & 0xff : b))), 0, 4 * MiB, off);
    await fh.sync();
    await fh.close();
    spawnSync('sync');

    // Peers, same file, same run.
    const cpS = timed('sh', ['-c', `cp --sparse=always ${disk} ${join(dir, 'cp.raw')} && sync`]);
    const qemu = has('qemu-img');
    const qcowS = qemu ? timed('sh', ['-c', `qemu-img convert -O qcow2 ${disk} ${join(dir, 'c.qcow2')} && sync`]) : NaN;
    const qcowCS = qemu ? timed('sh', ['-c', `qemu-img convert -c -O qcow2 ${disk} ${join(dir, 'cc.qcow2')} && sync`]) : NaN;

    // Tidemark: full, incremental, restore.
    const repoDir = join(dir, 'repo');
    const repo = await Repository.init(new DeferredSyncBackend(new LocalBackend(repoDir)));
    let full!: Awaited<ReturnType<typeof backupDisk>>;
    const fullS = await timeIt(async () => (full = await backupDisk(repo, disk)));
    const lock = await DiskLock.acquire(disk, { exclusive: true, holder: 'bench' });
    const dev = await openTrackedDisk(disk);
    for (let i = 0; i < 64; i++) await dev.write(((i * 2654435761) % (ALLOCATED / MiB - 1)) * MiB, randomBytes(256 * 1024));
    await dev.close();
    await lock.release();
    let inc!: Awaited<ReturnType<typeof backupDisk>>;
    const incS = await timeIt(async () => (inc = await backupDisk(repo, disk)));
    const restS = await timeIt(() => restoreSnapshot(repo, full.snapshot.id, { to: join(dir, 'restored.raw') }));
    await repo.close();
    // The same full backup with one durable put per object (plain LocalBackend), for comparison.
    const plainRepo = await Repository.init(new LocalBackend(join(dir, 'repo-plain')));
    const plainS = await timeIt(() => backupDisk(plainRepo, join(dir, 'cp.raw')));
    await plainRepo.close();

    let resticB = NaN;
    let resticR = NaN;
    if (has('restic')) {
      const env = { ...process.env, RESTIC_REPOSITORY: join(dir, 'restic'), RESTIC_PASSWORD: 'bench' };
      timed('restic', ['init'], env);
      // Back up the full-backup state: copy of the image before the incremental writes.
      resticB = timed('restic', ['backup', '--quiet', join(dir, 'cp.raw')], env);
      resticR = timed('restic', ['restore', 'latest', '--target', join(dir, 'restic-out')], env);
    }

    console.log(`backup bench: ${SIZE / MiB} MiB raw image, ${ALLOCATED / MiB} MiB allocated (half incompressible)`);
    console.log(`  tidemark full backup    ${rate(ALLOCATED, fullS)} (${fullS.toFixed(2)} s; read ${(full.bytesRead / MiB).toFixed(0)} MiB, stored ${(full.bytesStored / MiB).toFixed(1)} MiB)`);
    console.log(`  same, plain LocalBackend ${rate(ALLOCATED, plainS)}   (deferred-sync speedup ${(plainS / fullS).toFixed(2)}x)`);
    console.log(`  cp --sparse + sync      ${rate(ALLOCATED, cpS)}   ratio ${(cpS / fullS).toFixed(2)}x`);
    if (qemu) {
      console.log(`  qemu-img convert qcow2  ${rate(ALLOCATED, qcowS)}   ratio ${(qcowS / fullS).toFixed(2)}x`);
      console.log(`  qemu-img convert -c     ${rate(ALLOCATED, qcowCS)}   ratio ${(qcowCS / fullS).toFixed(2)}x`);
    }
    if (!Number.isNaN(resticB)) console.log(`  restic backup           ${rate(ALLOCATED, resticB)}   ratio ${(resticB / fullS).toFixed(2)}x`);
    console.log(`  tidemark incremental    ${incS.toFixed(2)} s for 16 MiB written (${inc.mode}; read ${(inc.bytesRead / MiB).toFixed(1)} MiB, stored ${(inc.bytesStored / MiB).toFixed(1)} MiB)`);
    console.log(`  tidemark restore        ${rate(ALLOCATED, restS)} (${restS.toFixed(2)} s)`);
    if (!Number.isNaN(resticR)) console.log(`  restic restore          ${rate(ALLOCATED, resticR)}   ratio ${(resticR / restS).toFixed(2)}x`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

if (import.meta.url === `file://${process.argv[1]}`) await run();
