/**
 * Backup benchmark: full backup, 1% incremental and restore of a raw disk image through the library (the
 * same code path as `tidemark backup` / `restore`), next to `restic backup` / `restic restore`, `cp` and
 * `qemu-img convert -c` of the same file, measured in the same run. Ratios are peer time / Tidemark time
 * (> 1: Tidemark is faster), except sizes (Tidemark / restic: < 1 is smaller).
 *
 * The image (TIDEMARK_BENCH_SIZE, default 4G; use 1G while iterating): per 64 MiB region, 16 MiB random
 * (incompressible), 16 MiB text-like (compressible, different per region), 8 MiB of written zeros,
 * 8 MiB copied from the previous region's random data (deduplicable), 16 MiB never written (a hole).
 * The incremental: 64 KiB random writes at random 4 KiB-aligned offsets covering 1% of the image,
 * written through change tracking (what a running VM does), then `tidemark backup` (incremental via RCT)
 * against restic's second backup of the whole file.
 *
 * restic is required (apt-get install restic): the bench fails with that message when it is missing.
 * TIDEMARK_BENCH_WORKERS=n runs Tidemark with n codec worker threads (default: what `tidemark backup`
 * uses on this machine, defaultCodecWorkers(): 0 on 2 cores);
 * TIDEMARK_BENCH_RESTORE_WORKERS=n decodes the restore's pack windows on n worker threads (default:
 * restoreSnapshot's, 1).
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, open, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LocalBackend } from '../src/backend/LocalBackend.js';
import { backupDisk } from '../src/backup/backupDisk.js';
import { restoreSnapshot } from '../src/backup/restoreSnapshot.js';
import { DiskLock } from '../src/blockdev/DiskLock.js';
import { openTrackedDisk } from '../src/rct/openTrackedDisk.js';
import { defaultCodecWorkers } from '../src/repo/CodecPool.js';
import { Repository } from '../src/repo/Repository.js';

const MiB = 1 << 20;
const GiB = 1 << 30;
const REGION = 64 * MiB;

function benchSize(): number {
  const v = process.env.TIDEMARK_BENCH_SIZE ?? '4G';
  const m = /^(\d+)([MG])?$/i.exec(v);
  if (!m) throw new Error(`TIDEMARK_BENCH_SIZE=${v}: give a size like 1G or 512M`);
  const n = Number(m[1]) * ((m[2] ?? 'G').toUpperCase() === 'G' ? GiB : MiB);
  if (n < REGION || n % REGION !== 0) throw new Error(`TIDEMARK_BENCH_SIZE=${v}: a multiple of 64M`);
  return n;
}

const has = (tool: string): boolean => spawnSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' }).status === 0;

function timed(cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env): number {
  const t0 = performance.now();
  const r = spawnSync(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'], env, encoding: 'utf8', maxBuffer: 64 << 20 });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed: ${r.stderr}`);
  return (performance.now() - t0) / 1000;
}

async function timeIt<T>(fn: () => Promise<T>): Promise<[number, T]> {
  const t0 = performance.now();
  const r = await fn();
  return [(performance.now() - t0) / 1000, r];
}

/** Bytes of all files under `dir` (apparent sizes). */
async function treeBytes(dir: string): Promise<number> {
  let n = 0;
  for (const e of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
    const p = join(dir, e.name);
    if (e.isDirectory()) n += await treeBytes(p);
    else if (e.isFile()) n += (await stat(p)).size;
  }
  return n;
}

const rate = (bytes: number, s: number): string => `${(bytes / MiB / s).toFixed(1)} MiB/s`;
const mib = (b: number): string => `${(b / MiB).toFixed(1)} MiB`;

async function makeImage(path: string, size: number): Promise<number> {
  const fh = await open(path, 'w');
  await fh.truncate(size);
  const text = Buffer.from('the quick brown fox jumps over the lazy dog 0123456789\nLorem ipsum dolor sit amet, consectetur\n'.repeat(200_000)).subarray(0, 16 * MiB);
  let prevRandom = randomBytes(8 * MiB);
  let allocated = 0;
  for (let r = 0; r < size; r += REGION) {
    const rnd = randomBytes(16 * MiB);
    await fh.write(rnd, 0, rnd.length, r);
    const t = Buffer.from(text);
    for (let i = (r / REGION) % 977; i < t.length; i += 977) t[i] = (t[i] + r / REGION) & 0xff; // differs per region
    await fh.write(t, 0, t.length, r + 16 * MiB);
    await fh.write(Buffer.alloc(8 * MiB), 0, 8 * MiB, r + 32 * MiB);
    await fh.write(prevRandom, 0, prevRandom.length, r + 40 * MiB);
    prevRandom = rnd.subarray(0, 8 * MiB);
    allocated += 48 * MiB;
  }
  await fh.sync();
  await fh.close();
  return allocated;
}

export async function run(): Promise<void> {
  if (!has('restic')) throw new Error('bench/backup.ts needs restic (the peer it is measured against): apt-get install restic');
  const size = benchSize();
  const dir = await mkdtemp(join(tmpdir(), 'tidemark-bench-backup-'));
  try {
    const disk = join(dir, 'disk.raw');
    const allocated = await makeImage(disk, size);
    spawnSync('sync');
    const env = { ...process.env, RESTIC_REPOSITORY: join(dir, 'restic'), RESTIC_PASSWORD: 'bench', RESTIC_CACHE_DIR: join(dir, 'restic-cache') };
    timed('restic', ['init'], env);

    // Peers of the full backup, same file, same run.
    const cpS = timed('sh', ['-c', `cp --sparse=always ${disk} ${join(dir, 'cp.raw')} && sync`]);
    await rm(join(dir, 'cp.raw'));
    const qcowCS = has('qemu-img') ? timed('sh', ['-c', `qemu-img convert -c -O qcow2 ${disk} ${join(dir, 'cc.qcow2')} && sync`]) : NaN;
    await rm(join(dir, 'cc.qcow2'), { force: true });

    // Full backups.
    const repoDir = join(dir, 'repo');
    // TIDEMARK_BENCH_WORKERS: codec worker threads (digest + zstd + AES off the main thread); default as the CLI.
    // The local pack index cache as the CLI keeps it (in ~/.cache/tidemark there; here next to the repository).
    const repo = await Repository.init(new LocalBackend(repoDir), { workers: Number(process.env.TIDEMARK_BENCH_WORKERS ?? defaultCodecWorkers()), cacheRoot: join(dir, 'cache') });
    // Backups are timed up to the cache refresh they start in the background (a CLI run waits for it before exiting).
    const backup = async (): Promise<Awaited<ReturnType<typeof backupDisk>>> => {
      const r = await backupDisk(repo, disk);
      await repo.packs.cacheSaved();
      return r;
    };
    const [fullS, full] = await timeIt(backup);
    const resticFullS = timed('restic', ['backup', '--quiet', disk], env);
    const repoAfterFull = await treeBytes(repoDir);
    const resticAfterFull = await treeBytes(join(dir, 'restic'));

    // 1% of the image changed by 64 KiB writes through change tracking.
    const writes = Math.max(1, Math.round((size * 0.01) / (64 * 1024)));
    const lock = await DiskLock.acquire(disk, { exclusive: true, holder: 'bench' });
    const dev = await openTrackedDisk(disk);
    let x = 12345;
    const rand = (): number => ((x = (x * 1103515245 + 12345) % 2147483648) / 2147483648);
    for (let i = 0; i < writes; i++) await dev.write(Math.floor(rand() * (size / 4096 - 16)) * 4096, randomBytes(64 * 1024));
    await dev.close();
    await lock.release();
    spawnSync('sync');
    const changed = writes * 64 * 1024;

    const [incS, inc] = await timeIt(backup);
    const resticIncS = timed('restic', ['backup', '--quiet', disk], env);
    const repoAfterInc = await treeBytes(repoDir);
    const resticAfterInc = await treeBytes(join(dir, 'restic'));

    // Restores of the latest state.
    const restoreWorkers = process.env.TIDEMARK_BENCH_RESTORE_WORKERS ? Number(process.env.TIDEMARK_BENCH_RESTORE_WORKERS) : undefined;
    const [restS] = await timeIt(() => restoreSnapshot(repo, inc.snapshot.id, { to: join(dir, 'restored.raw'), workers: restoreWorkers }));
    await rm(join(dir, 'restored.raw'));
    await repo.close();
    const resticRestS = timed('sh', ['-c', `restic restore latest --target ${join(dir, 'restic-out')} >/dev/null && sync`], env);
    await rm(join(dir, 'restic-out'), { recursive: true, force: true });

    const ratio = (peer: number, ours: number): string => `${(peer / ours).toFixed(2)}x`;
    console.log(`backup bench: ${size / GiB} GiB raw image, ${mib(allocated)} allocated (1/3 random, 1/3 text, 1/6 zeros, 1/6 duplicated; 1/4 of the image a hole); load average ${spawnSync('cat', ['/proc/loadavg'], { encoding: 'utf8' }).stdout.split(' ')[0]}`);
    console.log(`  full backup   tidemark ${fullS.toFixed(1)} s (${rate(allocated, fullS)}; read ${mib(full.bytesRead)}, stored ${mib(full.bytesStored)})`);
    console.log(`                restic backup ${resticFullS.toFixed(1)} s -> tidemark is ${ratio(resticFullS, fullS)} restic's speed`);
    if (!Number.isNaN(qcowCS)) console.log(`                qemu-img convert -c ${qcowCS.toFixed(1)} s -> ${ratio(qcowCS, fullS)}`);
    console.log(`  incremental   ${writes} x 64 KiB random writes = ${mib(changed)} (1%); tidemark ${inc.mode} ${incS.toFixed(2)} s (read ${mib(inc.bytesRead)} = ${((inc.bytesRead / size) * 100).toFixed(2)}% of the image)`);
    console.log(`                restic second backup ${resticIncS.toFixed(1)} s -> tidemark is ${ratio(resticIncS, incS)} faster (goal >= 20x)`);
    console.log(`                repository growth: tidemark ${mib(repoAfterInc - repoAfterFull)} = ${((repoAfterInc - repoAfterFull) / changed).toFixed(2)}x the changed bytes (goal <= 2x); restic ${mib(resticAfterInc - resticAfterFull)} = ${((resticAfterInc - resticAfterFull) / changed).toFixed(2)}x`);
    console.log(`  restore       tidemark ${restS.toFixed(1)} s (${rate(allocated, restS)}); cp --sparse + sync ${cpS.toFixed(1)} s -> ${ratio(cpS, restS)} cp's speed (goal >= 0.7x); restic restore ${resticRestS.toFixed(1)} s -> ${ratio(resticRestS, restS)}${restoreWorkers ? ` (${restoreWorkers} decode workers)` : ''}`);
    console.log(`  repository    tidemark ${mib(repoAfterInc)}, restic ${mib(resticAfterInc)} -> ${(repoAfterInc / resticAfterInc).toFixed(2)}x restic's size (after full + incremental)`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

if (import.meta.url === `file://${process.argv[1]}`) await run();
