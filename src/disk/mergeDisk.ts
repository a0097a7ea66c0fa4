import { readFile, stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import { TidemarkError, withContext } from '../errors.js';
import type { Range } from '../rct/Range.js';
import { withTrackedOperation, type TrackedOperationReport } from '../rct/withTrackedOperation.js';
import { PAYLOAD_FULLY_PRESENT, PAYLOAD_PARTIALLY_PRESENT, PAYLOAD_UNMAPPED, PAYLOAD_ZERO } from '../vhdx/format/constants.js';
import { mergeJournalPath, mergeVhdx } from '../vhdx/mergeVhdx.js';
import { VhdxDevice } from '../vhdx/VhdxDevice.js';
import { detectDiskFormat } from './detectDiskFormat.js';
import { diskInfo } from './diskInfo.js';
import { DiskOperationError } from './errors.js';

export interface MergeResult {
  /** The differencing disk whose data was merged (deleted afterwards). */
  child: string;
  /** The parent that received the data. */
  parent: string;
  /** Present when the parent has change tracking enabled: the ranges recorded as changed (see withTrackedOperation). */
  tracking?: TrackedOperationReport;
}

/**
 * Merge a differencing VHDX into its parent and delete the child (mergeVhdx: crash-safe through a
 * journal `<child>.merge.json`; running mergeDisk again after an interruption finishes the merge).
 * Throws DiskOperationError for a disk that has no parent (raw, fixed or dynamic VHDX).
 *
 * When the parent has change tracking enabled the merge runs as a tracked operation on the parent
 * (withTrackedOperation, holding the parent's disk lock): every range the child holds itself — the
 * ranges the merge rewrites in the parent (`childOwnRanges`) — is durably recorded as changed before the
 * parent is touched, and the parent's new DataWriteGuid is recorded afterwards, so older IDs stay valid
 * and report exactly those ranges. The merge journal vouches for the parent's identity after a crash.
 */
export async function mergeDisk(child: string): Promise<MergeResult> {
  const journal = await readJournalParent(child);
  if (journal !== undefined && !(await stat(child).then(() => true, () => false))) {
    // Interrupted after the child was deleted: only the journal is left to clean up.
    const { report } = await withTrackedOperation(journal, { what: 'tidemark disk merge', ranges: [], acceptJournals: [resolve(mergeJournalPath(child))] }, () =>
      withContext(`merge ${child}`, mergeVhdx(child)),
    );
    return withReport({ child, parent: journal }, report);
  }
  if ((await detectDiskFormat(child)) === 'raw') {
    throw new DiskOperationError(child, 'is a raw disk and has no parent to merge into; merge works on differencing VHDX disks', { format: 'raw' });
  }
  let parent: string;
  if (journal) {
    // Resuming an interrupted merge: the journal names the parent (whose log may still need replaying,
    // which a read-only open of the chain would refuse); mergeVhdx checks it against the journal.
    const { report } = await withTrackedOperation(
      journal,
      { what: 'tidemark disk merge', ranges: () => childOwnRanges(child), acceptJournals: [resolve(mergeJournalPath(child))] },
      () => withContext(`merge ${child}`, mergeVhdx(child)),
    );
    return withReport({ child, parent: journal }, report);
  }
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
  const { report } = await withTrackedOperation(
    parent,
    { what: 'tidemark disk merge', ranges: () => childOwnRanges(child), acceptJournals: [resolve(mergeJournalPath(child))] },
    () => withContext(`merge ${child}`, mergeVhdx(child)),
  );
  return withReport({ child, parent }, report);
}

function withReport(r: MergeResult, report: TrackedOperationReport): MergeResult {
  return report.tracked ? { ...r, tracking: report } : r;
}

/**
 * The virtual ranges a differencing VHDX holds itself, from its own BAT and sector bitmaps (the parent
 * is not opened): fully present blocks, the present sectors of partially present blocks, and zero or
 * unmapped blocks (they hide the parent). Exactly what a merge rewrites in the parent; sorted, merged.
 */
export async function childOwnRanges(child: string): Promise<Range[]> {
  const dev = await VhdxDevice.openInternal(child, { readOnly: true, skipParent: true });
  try {
    const { size, blockSize } = dev.info();
    const out: Range[] = [];
    const push = (offset: number, length: number) => {
      const last = out[out.length - 1];
      if (last && last.offset + last.length === offset) last.length += length;
      else out.push({ offset, length });
    };
    for (let b = 0; b * blockSize < size; b++) {
      const start = b * blockSize;
      const len = Math.min(blockSize, size - start);
      const state = dev.blockEntry(b).state;
      if (state === PAYLOAD_FULLY_PRESENT || state === PAYLOAD_ZERO || state === PAYLOAD_UNMAPPED) push(start, len);
      else if (state === PAYLOAD_PARTIALLY_PRESENT) {
        for (const [pos, n, present] of await dev.presentRuns(b, start, len)) if (present) push(pos, n);
      }
    }
    return out;
  } finally {
    await dev.close();
  }
}

async function readJournalParent(child: string): Promise<string | undefined> {
  try {
    const j = JSON.parse(await readFile(mergeJournalPath(child), 'utf8')) as { parent?: unknown };
    return typeof j.parent === 'string' ? j.parent : '';
  } catch {
    return undefined;
  }
}
