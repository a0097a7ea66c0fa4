/**
 * Register an exported machine in the inventory.
 *
 * How this works:
 * 1. Preflight, before anything changes: read the manifest and resolve every disk's export chain
 *    (resolveExportChain). A differential disk needs its base exports where its manifest's relative
 *    `parent` says; a missing one is ExportBaseMissingError naming the file, and nothing is touched.
 * 2. Inside the inventory transaction: the ID and name must be free. Into `<home>/machines/<id>/`:
 *    - a full (or synthetic-full) disk: moved (rename; a copy when across filesystems) or, with `copy`,
 *      cloned (reflink when the filesystem can, else a sparse copy) as `disk<slot>.vhdx`;
 *    - a differential disk keeps its chain: each base layer is cloned as `disk<slot>.r<seq>.<vhdx|avhdx>`
 *      (seq = the base export's reference point sequence), then this export's `.avhdx` as
 *      `disk<slot>.avhdx`, and every differencing layer is relinked (relinkVhdx: parent locator rewritten
 *      to the layer below, relative path `.\disk<slot>.r<seq>…` + absolute path; linkage unchanged). Base
 *      files belong to other exports, so they are always copied; this export's own `.avhdx` is copied too
 *      and, without `copy`, deleted from the export once the inventory is committed.
 * 3. Each disk is hashed through its new chain and compared with the manifest; tracking is enabled on the
 *    top file (the machine writes only there; the bases are never written).
 * 4. The inventory is committed. A failure before that renames moved files back and removes the folder:
 *    nothing is half registered. Sources to delete (moves across filesystems, differentials) are deleted
 *    only after the commit.
 */
import { randomUUID } from 'node:crypto';
import { mkdir, readdir, rename, rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { CorruptError, UsageError } from '../errors.js';
import { openDisk } from '../disk/openDisk.js';
import { enableTracking } from '../rct/enableTracking.js';
import { relinkVhdx } from '../vhdx/relinkVhdx.js';
import { Inventory, resolveHome, type MachineRecord } from '../vm/Inventory.js';
import { validateConfig } from '../vm/MachineConfig.js';
import { VmExistsError } from '../vm/errors.js';
import { view, type MachineView } from '../vm/machines.js';
import { hashDevice } from './hashDevice.js';
import { readManifest } from './Manifest.js';
import { AutoProvider } from './providers/AutoProvider.js';
import { resolveExportChain, type ChainLayer } from './resolveExportChain.js';

export interface ImportOptions {
  /** Copy the disks, leave the export intact (default: move this export's disk files out of it). */
  copy?: boolean;
  /** Give the machine a new ID (default: the exported machine's ID). */
  newId?: boolean;
  /** Register under this name (default: the exported name). */
  name?: string;
}

export async function importExport(home: string, dirArg: string, opts: ImportOptions = {}): Promise<MachineView> {
  const dir = resolve(dirArg);
  const man = await readManifest(dir);
  const id = opts.newId ? randomUUID() : man.machine.id;
  const name = opts.name ?? man.machine.name;
  const mdir = join(resolveHome(home), 'machines', id);
  // Preflight: every chain resolves before anything is created or moved.
  const chains = new Map<number, ChainLayer[]>();
  for (const d of man.disks) chains.set(d.slot, await resolveExportChain(dir, man, d));
  const clone = new AutoProvider();
  const deleteAfterCommit: string[] = [];
  const result = await Inventory.transact(home, async (state) => {
    if (state.machines.some((m) => m.id === id)) throw new VmExistsError('machine', id, 'a machine with this ID is already registered; import with --new-id to register a copy');
    if (state.machines.some((m) => m.name === name)) throw new VmExistsError('machine', name, 'import with --name <other name>');
    // Never adopt (or, on failure, delete) files already there: a killed import or `vm remove --keep-files`.
    const there = await readdir(mdir).catch(() => [] as string[]);
    if (there.length) throw new UsageError(`machine folder ${mdir} already exists and is not empty (left by an interrupted import, or kept by \`vm remove --keep-files\`); remove it, or import with --new-id`);
    await mkdir(mdir, { recursive: true });
    const moved: Array<[from: string, to: string]> = [];
    try {
      const config = structuredClone(man.config);
      for (const d of man.disks) {
        const chain = chains.get(d.slot)!;
        const src = join(dir, d.file);
        const placed: string[] = [];
        for (const [i, layer] of chain.entries()) {
          const top = i === chain.length - 1;
          const ext = layer.disk.mode === 'differential' ? 'avhdx' : 'vhdx';
          const dst = join(mdir, top ? `disk${d.slot}.${ext}` : `disk${d.slot}.r${layer.seq}.${ext}`);
          if (top && !opts.copy && chain.length === 1) {
            const renamed = await rename(layer.path, dst).then(() => true, (err: NodeJS.ErrnoException) => {
              if (err.code !== 'EXDEV') throw err;
              return false;
            });
            if (renamed) moved.push([layer.path, dst]);
            else {
              await clone.clone(layer.path, dst);
              deleteAfterCommit.push(layer.path);
            }
          } else {
            await clone.clone(layer.path, dst);
            if (top && !opts.copy) deleteAfterCommit.push(layer.path);
          }
          if (i > 0) await relinkVhdx(dst, placed[i - 1]!);
          placed.push(dst);
        }
        const disk = placed[placed.length - 1]!;
        const check = await openDisk(disk, { readOnly: true });
        try {
          const h = await hashDevice(check);
          if (h !== d.sha256) throw new CorruptError(src, 'exported disk', `content hash ${h} differs from the manifest's ${d.sha256}; the export is damaged (run \`tidemark export verify\`)`);
        } finally {
          await check.close();
        }
        await enableTracking(disk);
        const slot = config.disks.find((x) => x.slot === d.slot);
        if (slot) slot.path = disk;
      }
      const m: MachineRecord = { id, name, dir: mdir, config: validateConfig(config, `${dir}/manifest.json`), checkpoints: [], refpoints: [], nextRefSeq: 1 };
      state.machines.push(m);
      return view(m);
    } catch (err) {
      for (const [from, to] of moved.reverse()) await rename(to, from).catch(() => undefined);
      await rm(mdir, { recursive: true, force: true });
      deleteAfterCommit.length = 0;
      throw err;
    }
  });
  for (const p of deleteAfterCommit) await rm(p, { force: true });
  return result;
}
