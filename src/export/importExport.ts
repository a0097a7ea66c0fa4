/**
 * Register an exported machine in the inventory.
 *
 * A full disk is moved into the machine's folder (or copied with `copy`). A differential disk is
 * materialised: its chain (this export + its bases, which must be in place) is copied into a new
 * dynamic VHDX. Every imported disk is hashed and compared with the manifest before the inventory is
 * committed; tracking is enabled on it. Order: disks into `<home>/machines/<id>` → hashes checked →
 * inventory committed (a failure before the commit removes the folder).
 */
import { randomUUID } from 'node:crypto';
import { copyFile, mkdir, rename, rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { CorruptError } from '../errors.js';
import { createDisk } from '../disk/createDisk.js';
import { openDisk } from '../disk/openDisk.js';
import { copyDevice } from '../disk/copyDevice.js';
import { enableTracking } from '../rct/enableTracking.js';
import { Inventory, resolveHome, type MachineRecord } from '../vm/Inventory.js';
import { validateConfig } from '../vm/MachineConfig.js';
import { VmExistsError } from '../vm/errors.js';
import { view, type MachineView } from '../vm/machines.js';
import { hashDevice } from './hashDevice.js';
import { readManifest } from './Manifest.js';

export interface ImportOptions {
  /** Copy full disks instead of moving them out of the export. */
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
  return Inventory.transact(home, async (state) => {
    if (state.machines.some((m) => m.id === id)) throw new VmExistsError('machine', id, 'a machine with this ID is already registered; import with --new-id to register a copy');
    if (state.machines.some((m) => m.name === name)) throw new VmExistsError('machine', name, 'import with --name <other name>');
    await mkdir(mdir, { recursive: true });
    try {
      const config = structuredClone(man.config);
      for (const d of man.disks) {
        const src = join(dir, d.file);
        const dst = join(mdir, `disk${d.slot}.vhdx`);
        if (d.mode === 'full') {
          if (opts.copy) await copyFile(src, dst);
          else await rename(src, dst).catch(async (err: NodeJS.ErrnoException) => {
            if (err.code !== 'EXDEV') throw err;
            await copyFile(src, dst);
            await rm(src);
          });
        } else {
          await createDisk(dst, { size: d.size });
          const s = await openDisk(src, { readOnly: true });
          try {
            const t = await openDisk(dst);
            try {
              await copyDevice(s, t);
              await t.flush();
            } finally {
              await t.close();
            }
          } finally {
            await s.close();
          }
        }
        const check = await openDisk(dst, { readOnly: true });
        try {
          const h = await hashDevice(check);
          if (h !== d.sha256) throw new CorruptError(src, 'exported disk', `content hash ${h} differs from the manifest's ${d.sha256}; the export is damaged (run \`tidemark export verify\`)`);
        } finally {
          await check.close();
        }
        await enableTracking(dst);
        const slot = config.disks.find((x) => x.slot === d.slot);
        if (slot) slot.path = dst;
      }
      const m: MachineRecord = { id, name, dir: mdir, config: validateConfig(config, `${dir}/manifest.json`), checkpoints: [], refpoints: [], nextRefSeq: 1 };
      state.machines.push(m);
      return view(m);
    } catch (err) {
      await rm(mdir, { recursive: true, force: true });
      throw err;
    }
  });
}
