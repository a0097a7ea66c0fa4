/**
 * Repository benchmark: what small scattered changes cost, per chunk size, next to a qcow2 overlay
 * (qemu-img's incremental format, 64 KiB clusters) taking the same writes; and backup throughput with
 * inline encoding vs codec worker threads.
 *
 * Scenario (the issue's): 64 KiB writes at random 4 KiB-aligned offsets of a 4 GiB disk whose touched
 * chunks already hold (incompressible) data, reported to the backup as RCT's 64 KiB blocks.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LocalBackend } from '../src/backend/LocalBackend.js';
import { RawFileDevice } from '../src/blockdev/RawFileDevice.js';
import { MemoryBackend } from '../src/backend/MemoryBackend.js';
import { MemoryDevice } from '../src/blockdev/MemoryDevice.js';
import { backupDevice } from '../src/repo/backupDevice.js';
import { ObjectKind } from '../src/repo/constants.js';
import { decodeObject } from '../src/repo/ObjectCodec.js';
import { decodePackIndex, type BlobKind } from '../src/repo/PackFormat.js';
import { PackStore, type BlobLocation } from '../src/repo/PackStore.js';
import { Repository } from '../src/repo/Repository.js';

const KiB = 1024;
const GiB = 1024 * 1024 * 1024;
const WRITES = 655;
const SIZE = 4 * GiB;

function offsets(seed: number): number[] {
  let x = seed;
  const rand = (): number => ((x = (x * 1103515245 + 12345) % 2147483648) / 2147483648);
  return Array.from({ length: WRITES }, () => Math.floor(rand() * (SIZE / (4 * KiB) - 32)) * 4 * KiB);
}

async function repoGrowth(chunkSize: number, offs: number[]): Promise<{ ratio: number; index: number }> {
  const backend = new MemoryBackend();
  const repo = await Repository.init(backend, { chunkSize });
  const dev = new MemoryDevice(SIZE);
  for (const o of offs) {
    const s = Math.floor(o / chunkSize) * chunkSize;
    await dev.write(s, randomBytes(Math.ceil((o + 64 * KiB) / chunkSize) * chunkSize - s));
  }
  const first = await backupDevice(repo, dev);
  for (const o of offs) await dev.write(o, randomBytes(64 * KiB));
  const ranges = offs.map((o) => ({ offset: Math.floor(o / (64 * KiB)) * 64 * KiB, length: 128 * KiB }));
  const r = await backupDevice(repo, dev, { previous: first.disk, changedRanges: ranges });
  return { ratio: (r.stats.chunkBytesWritten + r.stats.pageBytesWritten) / (WRITES * 64 * KiB), index: r.stats.pageBytesWritten };
}

function qcow2Growth(offs: number[]): number | null {
  const has = spawnSync('sh', ['-c', 'command -v qemu-img && command -v qemu-io'], { stdio: 'ignore' }).status === 0;
  if (!has) return null;
  const dir = spawnSync('mktemp', ['-d'], { encoding: 'utf8' }).stdout.trim();
  try {
    const base = join(dir, 'base.raw');
    const ov = join(dir, 'ov.qcow2');
    spawnSync('qemu-img', ['create', '-f', 'raw', base, String(SIZE)]);
    spawnSync('qemu-img', ['create', '-f', 'qcow2', '-b', base, '-F', 'raw', ov]);
    const sizeOf = (): number => Number(spawnSync('stat', ['-c', '%b', ov], { encoding: 'utf8' }).stdout) * 512;
    const before = sizeOf();
    const args = ['-f', 'qcow2', ov];
    for (const o of offs) args.push('-c', `write -P 0x5a ${o} 64k`);
    spawnSync('qemu-io', args, { stdio: 'ignore' });
    return (sizeOf() - before) / (WRITES * 64 * KiB);
  } finally {
    spawnSync('rm', ['-rf', dir]);
  }
}

async function throughput(workers: number): Promise<number> {
  const backend = new MemoryBackend();
  const repo = await Repository.init(backend, { workers });
  const dev = new MemoryDevice(256 * 1024 * 1024);
  for (let o = 0; o < dev.size; o += 1024 * 1024) {
    const b = randomBytes(1024 * 1024);
    b.fill(0, 512 * 1024); // half compressible
    await dev.write(o, b);
  }
  const t = Date.now();
  await backupDevice(repo, dev, { concurrency: 16 });
  await repo.close();
  return dev.size / 1024 / 1024 / ((Date.now() - t) / 1000);
}

/** Full backup of a raw file into a LocalBackend repository vs `qemu-img convert -c -O qcow2` of it. */
async function vsQemuImg(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'tidemark-bench-repo-'));
  try {
    const src = join(dir, 'src.raw');
    const size = 256 * 1024 * 1024;
    const dev = await RawFileDevice.create(src, size);
    for (let o = 0; o < size; o += 1024 * 1024) {
      const b = randomBytes(1024 * 1024);
      b.fill(0, 512 * 1024);
      await dev.write(o, b);
    }
    await dev.close();
    const repo = await Repository.init(new LocalBackend(join(dir, 'repo')));
    const ro = await RawFileDevice.open(src, { readOnly: true });
    let t = Date.now();
    await backupDevice(repo, ro, { concurrency: 16 });
    await repo.flush(); // the last packs durable and indexed, as before a manifest
    const ours = (Date.now() - t) / 1000;
    await ro.close();
    const has = spawnSync('sh', ['-c', 'command -v qemu-img'], { stdio: 'ignore' }).status === 0;
    if (!has) return `repo: full backup of 256 MiB raw (half compressible) to a local repository: ${(256 / ours).toFixed(0)} MiB/s (qemu-img missing)`;
    t = Date.now();
    spawnSync('qemu-img', ['convert', '-c', '-f', 'raw', '-O', 'qcow2', src, join(dir, 'out.qcow2')]);
    const peer = (Date.now() - t) / 1000;
    return `repo: full backup of 256 MiB raw (half compressible) to a local repository: ${(256 / ours).toFixed(0)} MiB/s; qemu-img convert -c -O qcow2: ${(256 / peer).toFixed(0)} MiB/s (= ${(peer / ours).toFixed(2)}x qemu-img's speed)`;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * Loading the pack indexes of a 4 GiB disk's repository (131072 chunks of 32 KiB in 256 packs, one pack
 * index each, as backups write them): PackStore.ensureLoaded (into the compact BlobIndex) next to the
 * former way, decodePackIndex objects into a Map keyed by kind + hex digest, measured on the same
 * objects. Retained heap after a full GC.
 */
export async function indexLoad(): Promise<string> {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  const backend = new MemoryBackend();
  const writer = new PackStore(backend, null);
  const digests: string[] = [];
  for (let p = 0; p < 256; p++) {
    const entries = Array.from({ length: 512 }, (_, i) => {
      digests.push(randomBytes(32).toString('hex'));
      return { kind: ObjectKind.chunk as BlobKind, digest: digests[digests.length - 1], offset: i * 20000, length: 20000 };
    });
    await writer.putIndex([{ id: randomBytes(32).toString('hex'), entries }]);
  }
  // Array buffers are freed by a background sweeper after a GC: settle, collect again, then read.
  const heap = async (): Promise<number> => {
    gc();
    await new Promise((r) => setTimeout(r, 50));
    gc();
    const m = process.memoryUsage();
    return m.heapUsed + m.arrayBuffers;
  };
  const measure = async <T>(load: () => Promise<T>, find: (t: T, d: string) => unknown): Promise<{ ms: number; mib: number; findNs: number }> => {
    const times: number[] = [];
    let mib = 0;
    let findNs = 0;
    for (let r = 0; r < 5; r++) {
      const h0 = await heap();
      const t = performance.now();
      const loaded = await load();
      times.push(performance.now() - t);
      mib = ((await heap()) - h0) / 2 ** 20;
      const f = performance.now();
      for (const d of digests) if (!find(loaded, d)) throw new Error('bench: a loaded blob is missing');
      findNs = ((performance.now() - f) * 1e6) / digests.length;
    }
    return { ms: times.sort((a, b) => a - b)[2], mib, findNs };
  };
  const ours = await measure(async () => {
    const s = new PackStore(backend, null);
    await s.ensureLoaded();
    return s;
  }, (s, d) => s.locate(ObjectKind.chunk, d));
  const former = await measure(async () => {
    const blobs = new Map<string, BlobLocation>();
    const packs = new Map<string, BlobLocation[]>();
    for await (const name of backend.list('packindex')) {
      const decoded = decodePackIndex(decodeObject({ location: 'mem:', type: 'packindex', name }, ObjectKind.packIndex, await backend.get('packindex', name), null));
      if (typeof decoded === 'string') throw new Error(decoded);
      for (const p of decoded) {
        const list = packs.get(p.id) ?? [];
        for (const e of p.entries) {
          const loc: BlobLocation = { kind: e.kind, digest: e.digest, offset: e.offset, length: e.length, pack: p.id };
          list.push(loc);
          if (!blobs.has(`${e.kind}${e.digest}`)) blobs.set(`${e.kind}${e.digest}`, loc);
        }
        packs.set(p.id, list);
      }
    }
    return { blobs, packs };
  }, (m, d) => m.blobs.get(`${ObjectKind.chunk}${d}`));
  return (
    `repo: load the pack indexes of 131072 chunks (256 packs): ${ours.ms.toFixed(0)} ms, ${ours.mib.toFixed(1)} MiB (${((ours.mib * 2 ** 20) / digests.length).toFixed(0)} B/blob), locate ${ours.findNs.toFixed(0)} ns; ` +
    `former (decodePackIndex objects into Maps): ${former.ms.toFixed(0)} ms, ${former.mib.toFixed(1)} MiB, get ${former.findNs.toFixed(0)} ns (= ${(former.ms / ours.ms).toFixed(1)}x faster, ${(former.mib / ours.mib).toFixed(1)}x less memory)`
  );
}

export async function run(): Promise<void> {
  console.log(await indexLoad());
  const offs = offsets(655);
  const peer = qcow2Growth(offs);
  console.log(`repo: ${WRITES} x 64 KiB writes, 4 KiB aligned, 4 GiB disk, dense data; growth / changed bytes`);
  console.log(`  qcow2 overlay (64 KiB clusters): ${peer === null ? 'qemu-img/qemu-io missing' : peer.toFixed(2) + 'x'}`);
  for (const cs of [16, 32, 64, 128]) {
    const g = await repoGrowth(cs * KiB, offs);
    console.log(`  tidemark ${String(cs).padStart(3)} KiB chunks: ${g.ratio.toFixed(2)}x (index ${(g.index / 1024).toFixed(0)} KiB)${peer ? `  = ${(g.ratio / peer).toFixed(2)} of qcow2` : ''}`);
  }
  const inline = await throughput(0);
  const pooled = await throughput(2);
  console.log(await vsQemuImg());
  console.log(`repo: backup throughput, 256 MiB half-compressible, MemoryBackend: inline ${inline.toFixed(0)} MiB/s, 2 codec workers ${pooled.toFixed(0)} MiB/s (= ${(pooled / inline).toFixed(2)}x)`);
}
