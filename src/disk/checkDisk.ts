import { stat } from 'node:fs/promises';
import { TidemarkError } from '../errors.js';
import { checkVhdx } from '../vhdx/checkVhdx.js';
import { detectDiskFormat } from './detectDiskFormat.js';
import type { DiskFormat } from './sniffFormat.js';

export interface DiskProblem {
  /** The on-disk structure at fault ("header", "BAT entry 17", "file type identifier", ...). */
  structure: string;
  message: string;
}

export interface DiskCheck {
  path: string;
  /** null when the content could not even be recognised as a disk Tidemark reads. */
  format: DiskFormat | null;
  ok: boolean;
  problems: DiskProblem[];
  /** VHDX log holds unapplied entries: not a problem (a writable open replays them), reported for information. */
  logDirty: boolean;
  /** Virtual size, when known. */
  size: number | null;
}

/**
 * Check the structures of a disk without modifying it. VHDX: headers, region table, metadata, BAT and
 * log (checkVhdx). Raw: there is nothing to get wrong, so it is OK with its size.
 * Findings are returned, not thrown: a damaged disk gives `ok: false` with its problems. Throws only
 * for a missing file (NotFoundError) or a failing read (I/O errors).
 */
export async function checkDisk(path: string): Promise<DiskCheck> {
  let format: DiskFormat;
  try {
    format = await detectDiskFormat(path);
  } catch (err) {
    if (err instanceof TidemarkError && (err.code === 'E_CORRUPT' || err.code === 'E_DISK_FORMAT')) {
      return { path, format: null, ok: false, problems: [problemOf(err)], logDirty: false, size: null };
    }
    throw err;
  }
  if (format === 'raw') {
    const st = await stat(path);
    return { path, format, ok: true, problems: [], logDirty: false, size: st.size };
  }
  try {
    const r = await checkVhdx(path);
    return { path, format, ok: r.ok && r.problems.length === 0, problems: r.problems, logDirty: r.logDirty, size: r.info?.size ?? null };
  } catch (err) {
    if (err instanceof TidemarkError && err.code !== 'E_NOT_FOUND' && !(err.code === 'E_IO')) {
      return { path, format, ok: false, problems: [problemOf(err)], logDirty: false, size: null };
    }
    throw err;
  }
}

function problemOf(err: TidemarkError): DiskProblem {
  const structure = typeof err.data.structure === 'string' ? err.data.structure : 'file';
  return { structure, message: err.message };
}
