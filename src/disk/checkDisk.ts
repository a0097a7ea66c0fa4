import { stat } from 'node:fs/promises';
import { InUseError, TidemarkError } from '../errors.js';
import { checkVhdx } from '../vhdx/checkVhdx.js';
import { detectDiskFormat } from './detectDiskFormat.js';
import { diskLockHolder } from './diskLockHolder.js';
import { replayVhdxLog } from './replayVhdxLog.js';
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
  /** `repair` was asked and a dirty VHDX log was replayed before checking (logDirty is then false). */
  repaired: boolean;
}

export interface CheckDiskOptions {
  /**
   * Replay a dirty VHDX log first (read-write open + close, DiskLock held exclusively: InUseError when
   * another process holds it). The only change `repair` makes; structural damage is never "fixed".
   */
  repair?: boolean;
}

/**
 * Check the structures of a disk without modifying it (unless `repair`: see CheckDiskOptions). VHDX:
 * headers, region table, metadata, BAT and log (checkVhdx). Raw: there is nothing to get wrong, so it
 * is OK with its size.
 * Findings are returned, not thrown: a damaged disk gives `ok: false` with its problems. Throws for a
 * missing file (NotFoundError), a failing read (I/O errors), and InUseError when the log is dirty
 * because another live process (e.g. `tidemark serve`) holds the disk's DiskLock and is writing it.
 */
export async function checkDisk(path: string, opts: CheckDiskOptions = {}): Promise<DiskCheck> {
  let format: DiskFormat;
  try {
    format = await detectDiskFormat(path);
  } catch (err) {
    if (err instanceof TidemarkError && (err.code === 'E_CORRUPT' || err.code === 'E_DISK_FORMAT')) {
      return { path, format: null, ok: false, problems: [problemOf(err)], logDirty: false, size: null, repaired: false };
    }
    throw err;
  }
  if (format === 'raw') {
    const st = await stat(path);
    return { path, format, ok: true, problems: [], logDirty: false, size: st.size, repaired: false };
  }
  let r = await vhdxCheck(path);
  if (r.logDirty) {
    // In use first: a server writing the disk keeps its log dirty; that is not something to repair.
    const holder = await diskLockHolder(path);
    if (holder !== undefined) throw new InUseError(path, holder);
    if (opts.repair && r.ok) {
      // replayVhdxLog takes the lock exclusively, so a writer that started meanwhile still gives InUseError.
      const repaired = await replayVhdxLog(path);
      r = { ...(await vhdxCheck(path)), repaired };
    }
  }
  return r;
}

async function vhdxCheck(path: string): Promise<DiskCheck> {
  try {
    const r = await checkVhdx(path);
    return { path, format: 'vhdx', ok: r.ok && r.problems.length === 0, problems: r.problems, logDirty: r.logDirty, size: r.info?.size ?? null, repaired: false };
  } catch (err) {
    if (err instanceof TidemarkError && err.code !== 'E_NOT_FOUND' && !(err.code === 'E_IO')) {
      return { path, format: 'vhdx', ok: false, problems: [problemOf(err)], logDirty: false, size: null, repaired: false };
    }
    throw err;
  }
}

function problemOf(err: TidemarkError): DiskProblem {
  const structure = typeof err.data.structure === 'string' ? err.data.structure : 'file';
  return { structure, message: err.message };
}
