import { stat } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { CorruptError, NotFoundError, TidemarkError } from '../errors.js';
import { ExportBaseMissingError } from './errors.js';
import { readManifest, type ExportManifest, type ManifestDisk } from './Manifest.js';

/** One file of a disk's export chain. */
export interface ChainLayer {
  /** Absolute path of the file as it is now. */
  path: string;
  /** The export directory holding it, and that export's manifest entry and reference point sequence. */
  exportDir: string;
  disk: ManifestDisk;
  seq: number;
}

const exists = (p: string) => stat(p).then(() => true, () => false);

/**
 * The files a disk of an export reads through, base first: a full disk is one layer; a differential disk
 * is its file over the chain of the export its manifest names as `parent` (a path relative to the export
 * directory, so a tree of exports moved together still resolves). Every base must be a complete export
 * (manifest present) holding that file. Reads only; throws ExportBaseMissingError naming the first missing
 * file (nothing is changed), NotFoundError when this export's own disk file is gone, CorruptError for a
 * manifest that does not list the file or a loop.
 */
export async function resolveExportChain(dir: string, man: ExportManifest, disk: ManifestDisk): Promise<ChainLayer[]> {
  const top = resolve(dir);
  const layers: ChainLayer[] = [];
  const seen = new Set<string>();
  let cur = { dir: top, man, disk };
  for (;;) {
    const path = join(cur.dir, cur.disk.file);
    if (seen.has(path)) throw new CorruptError(join(top, 'manifest.json'), 'export chain', `the chain of disk slot ${disk.slot} loops back to ${path}`);
    seen.add(path);
    if (layers.length === 0 && !(await exists(path))) throw new NotFoundError(`disk file ${path} of export ${top}`, 'the export is incomplete (an earlier import without --copy moves the disks out)');
    layers.unshift({ path, exportDir: cur.dir, disk: cur.disk, seq: cur.man.refpoint?.seq ?? 0 });
    if (cur.disk.mode !== 'differential') return layers;
    if (!cur.disk.parent) throw new CorruptError(join(cur.dir, 'manifest.json'), 'export manifest', `differential disk slot ${cur.disk.slot} names no parent`);
    const parent = resolve(cur.dir, cur.disk.parent);
    const hint = cur.man.since?.exportDir;
    if (!(await exists(parent))) throw new ExportBaseMissingError(top, disk.slot, parent, hint);
    let base: ExportManifest;
    try {
      base = await readManifest(dirname(parent));
    } catch (err) {
      if (err instanceof TidemarkError && err.code === 'E_NOT_FOUND') throw new ExportBaseMissingError(top, disk.slot, parent, hint, `in a folder without manifest.json (not a complete export)`);
      throw err;
    }
    const bd = base.disks.find((d) => d.file === basename(parent));
    if (!bd) throw new CorruptError(join(dirname(parent), 'manifest.json'), 'export manifest', `lists no disk file ${basename(parent)}, the base of ${path}`);
    cur = { dir: dirname(parent), man: base, disk: bd };
  }
}
