import { readFile, stat } from 'node:fs/promises';
import { TidemarkError, withContext } from '../errors.js';
import { mergeJournalPath, mergeVhdx } from '../vhdx/mergeVhdx.js';
import { detectDiskFormat } from './detectDiskFormat.js';
import { diskInfo } from './diskInfo.js';
import { DiskOperationError } from './errors.js';

export interface MergeResult {
  /** The differencing disk whose data was merged (deleted afterwards). */
  child: string;
  /** The parent that received the data. */
  parent: string;
}

/**
 * Merge a differencing VHDX into its parent and delete the child (mergeVhdx: crash-safe through a
 * journal `<child>.merge.json`; running mergeDisk again after an interruption finishes the merge).
 * Throws DiskOperationError for a disk that has no parent (raw, fixed or dynamic VHDX).
 */
export async function mergeDisk(child: string): Promise<MergeResult> {
  const journal = await readJournalParent(child);
  if (journal !== undefined && !(await stat(child).then(() => true, () => false))) {
    // Interrupted after the child was deleted: only the journal is left to clean up.
    await withContext(`merge ${child}`, mergeVhdx(child));
    return { child, parent: journal };
  }
  if ((await detectDiskFormat(child)) === 'raw') {
    throw new DiskOperationError(child, 'is a raw disk and has no parent to merge into; merge works on differencing VHDX disks', { format: 'raw' });
  }
  let parent: string;
  try {
    const info = await diskInfo(child);
    if (info.type !== 'differencing' || info.parentChain.length === 0) {
      throw new DiskOperationError(child, `is a ${info.type} VHDX and has no parent to merge into; merge works on differencing disks`, { format: 'vhdx', type: info.type });
    }
    parent = info.parentChain[0]!;
  } catch (err) {
    // An interrupted merge already changed the parent: the child no longer opens, but the merge resumes.
    if (err instanceof TidemarkError && err.code === 'E_VHDX_PARENT_MISMATCH' && err.data.mergePending === true) parent = String(err.data.parent);
    else throw err;
  }
  await withContext(`merge ${child}`, mergeVhdx(child));
  return { child, parent };
}

async function readJournalParent(child: string): Promise<string | undefined> {
  try {
    const j = JSON.parse(await readFile(mergeJournalPath(child), 'utf8')) as { parent?: unknown };
    return typeof j.parent === 'string' ? j.parent : '';
  } catch {
    return undefined;
  }
}
