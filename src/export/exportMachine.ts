/**
 * Export machines: configuration + disks read from a frozen backup checkpoint, ending with a reference
 * point for the next differential.
 *
 * How this works (one machine):
 * 1. [inventory txn] recover leftovers; seal each disk's RCT (ID = "now"), fork every disk into a backup
 *    checkpoint held by this PID; the machine keeps running on the children.
 * 2. Read the frozen disks: full (whole disk), differential (RCT `changes(refpoint ID, new ID)` copied
 *    into an .avhdx whose parent is the previous export's disk) or synthetic full (previous export's
 *    chain + changes, written as a new full VHDX). Each disk decides alone: a disk that is new, resized,
 *    whose tracking is invalid/missing or whose previous export file is gone falls back to full, with
 *    the reason in the manifest and in `warnings` — never an empty differential.
 * 3. Write manifest.json atomically (the export is complete from here).
 * 4. [inventory txn] record the reference point on the checkpoint, merge the children back through
 *    change tracking and drop the checkpoint.
 * A job killed anywhere leaves a backup checkpoint whose holder is dead: the next command on the
 * machine merges it back (and keeps the reference point only if step 4 recorded it, i.e. only when the
 * manifest is durable). Invariant: a reference point always has a complete export behind it.
 */
import { randomUUID } from 'node:crypto';
import { mkdir, readdir, stat } from 'node:fs/promises';
import { basename, join, relative, resolve } from 'node:path';
import { TidemarkError, UsageError } from '../errors.js';
import { createDisk } from '../disk/createDisk.js';
import { openDisk } from '../disk/openDisk.js';
import { copyDevice } from '../disk/copyDevice.js';
import { diskInfo } from '../disk/diskInfo.js';
import { openRctHandle } from '../rct/openRctHandle.js';
import { atomicWriteFile } from '../util/atomicWriteFile.js';
import type { Range } from '../rct/Range.js';
import { Inventory, type RefpointRecord } from '../vm/Inventory.js';
import { configHash } from '../vm/MachineConfig.js';
import { findMachine, resolveTargets } from '../vm/machines.js';
import { holdBackupCheckpoint, recordHeldRefpoint, releaseBackupCheckpoint, type HeldBackupCheckpoint } from '../checkpoint/holdBackupCheckpoint.js';
import { debugStep } from '../util/debugSteps.js';
import { hashDevice } from './hashDevice.js';
import { getProvider } from './providers/getProvider.js';
import type { ProviderName, SnapshotProvider } from './providers/SnapshotProvider.js';
import { MANIFEST_FORMAT, MANIFEST_VERSION, manifestPath, readManifest, type ExportManifest, type ManifestDisk } from './Manifest.js';

export interface ExportOptions {
  /** A reference point ID, or a previous export directory (its manifest names the reference point). */
  since?: string;
  /** With `since`: write full VHDX files (previous chain + changes) instead of differencing ones. */
  merge?: boolean;
  /**
   * Let storage clone each frozen disk file (a full export; not with `since`): `reflink` (same XFS/btrfs
   * filesystem, else ProviderNotSupportedError and the export is rolled back like any failed export),
   * `copy` (sparse streaming copy) or `auto`. A frozen disk that is itself a differencing disk (an
   * imported chain) is copied through its chain instead (`fallback` says so).
   */
  provider?: ProviderName;
  /** Tests: called once the disks are frozen (the machine's disks are the new children). */
  onFrozen?: (frozen: Array<{ slot: number; frozen: string; current: string }>) => Promise<void>;
  /** Called after each step (`checkpoint`, `disk<slot>`, `manifest`, `refpoint`, `merge`). */
  onStep?: (step: string) => Promise<void> | void;
  /** Progress of each disk: bytes done of the bytes this disk needs (its size, or its changed bytes). */
  onProgress?: (slot: number, done: number, total: number) => void;
}

export interface ExportResult {
  dir: string;
  manifest: ExportManifest;
}

const COPY = 4 * 1024 * 1024;

/** Export a machine, or each machine of a group into `<dir>/<machine name>`. */
export async function exportMachines(home: string, ref: string, dir: string, opts: ExportOptions = {}): Promise<ExportResult[]> {
  const targets = await Inventory.transact(home, (state) => {
    let single = true;
    try {
      findMachine(state, ref);
    } catch {
      single = false;
    }
    return resolveTargets(state, ref).map((m) => ({ id: m.id, name: m.name, single }));
  });
  const out = [];
  for (const t of targets) {
    const group = !t.single;
    const since = opts.since && group && !(await isDir(opts.since)) ? undefined : opts.since;
    if (opts.since && group && since === undefined) throw new UsageError('exporting a group differentially needs --since <previous group export directory>');
    out.push(await exportMachine(home, t.id, group ? join(dir, t.name) : dir, { ...opts, ...(since ? { since: group ? join(since, t.name) : since } : {}) }));
  }
  return out;
}

const isDir = (p: string) => stat(p).then((s) => s.isDirectory(), () => false);

interface Frozen extends HeldBackupCheckpoint {
  base?: RefpointRecord;
}

export async function exportMachine(home: string, ref: string, dirArg: string, opts: ExportOptions = {}): Promise<ExportResult> {
  const dir = resolve(dirArg);
  const step = async (s: string) => {
    await opts.onStep?.(s);
    await debugStep(s);
  };
  await prepareDir(dir);
  let sinceId: string | undefined;
  if (opts.since !== undefined) sinceId = (await isDir(opts.since)) ? (await readManifest(opts.since)).refpoint.id : opts.since;
  if (opts.merge && sinceId === undefined) throw new UsageError('--merge writes a synthetic full from a chain: give --since <refpoint or previous export dir>');
  if (opts.provider !== undefined && (sinceId !== undefined || opts.merge)) {
    throw new UsageError(`--provider ${opts.provider} clones whole disk files (a full export): drop --since/--merge; a later differential can use this export's reference point as --since`);
  }
  const provider = opts.provider !== undefined ? getProvider(opts.provider) : undefined;

  const fz: Frozen = await Inventory.transact(home, async (state) => {
    const m = findMachine(state, ref);
    // A backup checkpoint made by `checkpoint create --type backup` (no holder) is adopted and read.
    const held = await holdBackupCheckpoint(m, { command: 'tidemark export', job: 'an export', prefix: 'export' });
    const warnings: string[] = [];
    let base: RefpointRecord | undefined;
    if (sinceId !== undefined) {
      base = m.refpoints.find((r) => r.id === sinceId);
      if (!base) warnings.push(`reference point ${sinceId} of machine ${m.name} not found (removed, or from another host): writing a full export`);
      else if (base.machineId !== m.id) {
        warnings.push(`reference point ${sinceId} belongs to another machine: writing a full export`);
        base = undefined;
      }
    }
    // The reference point's warnings first, then the sealing/forking ones.
    return { ...held, ...(base ? { base: structuredClone(base) } : {}), warnings: [...warnings, ...held.warnings] };
  });
  const release = () => releaseBackupCheckpoint(home, fz);
  let manifest: ExportManifest;
  try {
    await step('checkpoint');
    await opts.onFrozen?.(fz.disks.map(({ slot, frozen, current }) => ({ slot, frozen, current })));

    const disks: ManifestDisk[] = [];
    for (const d of fz.disks) {
      disks.push(await exportDisk(dir, d, fz, !!opts.merge, provider, (done, total) => opts.onProgress?.(d.slot, done, total)));
      await step(`disk${d.slot}`);
    }
    if (fz.base) {
      for (const bd of fz.base.disks) if (!fz.disks.some((d) => d.slot === bd.slot)) fz.warnings.push(`disk slot ${bd.slot} was removed since reference point ${fz.base.id}`);
    }
    const refId = randomUUID();
    const config = structuredClone(fz.config);
    for (const c of config.disks) c.path = disks.find((d) => d.slot === c.slot)!.file;
    const kind = !fz.base ? 'full' : opts.merge ? 'synthetic-full' : 'differential';
    manifest = {
      format: MANIFEST_FORMAT,
      version: MANIFEST_VERSION,
      kind,
      machine: { id: fz.machineId, name: fz.name },
      config,
      configHash: configHash(fz.config),
      refpoint: { id: refId, seq: fz.seq },
      ...(fz.base ? { since: { refpoint: fz.base.id, exportDir: fz.base.exportDir } } : {}),
      disks,
      warnings: fz.warnings,
      ...(provider ? { provider: provider.name } : {}),
      ...(fz.consistency ? { consistency: fz.consistency } : {}),
    };
    await writeAtomic(manifestPath(dir), JSON.stringify(manifest, null, 2) + '\n');
    await step('manifest');

    const refpoint: RefpointRecord = {
      id: refId,
      seq: fz.seq,
      machineId: fz.machineId,
      configHash: manifest.configHash,
      exportDir: dir,
      disks: fz.disks.map((d) => ({ slot: d.slot, rctId: d.rctId, path: d.frozen, size: disks.find((x) => x.slot === d.slot)!.size, exportFile: join(dir, disks.find((x) => x.slot === d.slot)!.file) })),
    };
    await recordHeldRefpoint(home, fz, refpoint, 'export');
    await step('refpoint');
  } catch (err) {
    // Merge back now rather than leave it to the next command (which would do the same once we exit).
    await release().catch(() => undefined);
    throw err;
  }
  await release();
  await step('merge');
  return { dir, manifest };
}

async function exportDisk(dir: string, d: Frozen['disks'][number], fz: Frozen, merge: boolean, provider: SnapshotProvider | undefined, onProgress: (done: number, total: number) => void): Promise<ManifestDisk> {
  const info = await diskInfo(d.frozen);
  const size = info.size;
  if (provider) {
    // A differencing disk (an imported chain) is not one file: copied through its chain below.
    if (info.type !== 'differencing') return cloneDisk(dir, d, size, provider, onProgress);
  }
  const bd = fz.base?.disks.find((x) => x.slot === d.slot);
  let ranges: Range[] | undefined;
  let fallback: string | undefined;
  if (fz.base) {
    if (!bd) fallback = `disk slot ${d.slot} is new since reference point ${fz.base.id}`;
    else if (bd.path !== d.frozen) fallback = `disk slot ${d.slot} was replaced (${bd.path} -> ${d.frozen}) since reference point ${fz.base.id}`;
    else if (bd.size !== size) fallback = `disk slot ${d.slot} was resized (${bd.size} -> ${size} bytes) since reference point ${fz.base.id}`;
    else if (!(await stat(bd.exportFile).then(() => true, () => false))) fallback = `the previous export of disk slot ${d.slot} (${bd.exportFile}) is gone`;
    else if (!d.rctId) fallback = `disk slot ${d.slot} has no change tracking`;
    else {
      try {
        const h = await openRctHandle(d.frozen);
        try {
          ranges = await h.changes(bd.rctId, d.rctId);
        } finally {
          await h.close();
        }
      } catch (err) {
        if (!(err instanceof TidemarkError)) throw err;
        fallback = `change tracking of disk slot ${d.slot} cannot answer since reference point ${fz.base.id} (${err.message})`;
      }
    }
    if (fallback) fz.warnings.push(`${fallback}: exported in full`);
  }
  const diff = ranges !== undefined && !merge;
  if (provider) {
    fallback = `disk slot ${d.slot} is a differencing disk (${d.frozen}): provider ${provider.name} clones single files, so it was copied through its chain`;
    fz.warnings.push(fallback);
  }
  const file = `disk${d.slot}.${diff ? 'avhdx' : 'vhdx'}`;
  const path = join(dir, file);
  let copied = 0;
  await createDisk(path, diff ? { parent: bd!.exportFile } : { size });
  const src = await openDisk(d.frozen, { readOnly: true });
  try {
    const dst = await openDisk(path);
    try {
      if (ranges === undefined) copied = (await copyDevice(src, dst, { onProgress })).read;
      else {
        if (merge) {
          const prev = await openDisk(bd!.exportFile, { readOnly: true });
          try {
            await copyDevice(prev, dst);
          } finally {
            await prev.close();
          }
        }
        const changedTotal = ranges.reduce((a, r) => a + r.length, 0);
        for (const r of ranges) {
          for (let o = r.offset; o < r.offset + r.length; o += COPY) {
            const n = Math.min(COPY, r.offset + r.length - o);
            await dst.write(o, await src.read(o, n));
            copied += n;
            onProgress(copied, changedTotal);
          }
        }
      }
      await dst.flush();
    } finally {
      await dst.close();
    }
  } finally {
    await src.close();
  }
  const check = await openDisk(path, { readOnly: true });
  let sha256: string;
  try {
    sha256 = await hashDevice(check);
  } finally {
    await check.close();
  }
  return {
    slot: d.slot, file, mode: diff ? 'differential' : 'full',
    ...(diff ? { parent: relative(dir, bd!.exportFile) } : {}),
    size, sha256, copied, ...(fallback ? { fallback } : {}),
  };
}

/** The frozen disk file cloned by storage (it is never written while the backup checkpoint exists), then hashed. */
async function cloneDisk(dir: string, d: Frozen['disks'][number], size: number, provider: SnapshotProvider, onProgress: (done: number, total: number) => void): Promise<ManifestDisk> {
  const file = `disk${d.slot}.vhdx`;
  const path = join(dir, file);
  const r = await provider.clone(d.frozen, path, onProgress);
  const check = await openDisk(path, { readOnly: true });
  let sha256: string;
  try {
    if (check.size !== size) throw new TidemarkError('E_INTERNAL', `clone ${path} of ${d.frozen} is ${check.size} bytes, expected ${size}`);
    sha256 = await hashDevice(check);
  } finally {
    await check.close();
  }
  return { slot: d.slot, file, mode: 'full', size, sha256, copied: r.bytesCopied, provider: provider.name };
}

async function prepareDir(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true });
  const names = (await readdir(dir)).filter((n) => !n.startsWith('.'));
  if (names.length) throw new UsageError(`export directory ${dir} is not empty (${names.slice(0, 3).join(', ')}…); give a new or empty directory`);
}

/** Atomic write with a hidden temporary name (prepareDir and readers ignore dot files). */
async function writeAtomic(path: string, text: string): Promise<void> {
  await atomicWriteFile(path, text, { tmpPath: join(resolve(path, '..'), `.${basename(path)}.tmp`) });
}
