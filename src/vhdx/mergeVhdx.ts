/**
 * Merge a differencing disk into its parent, crash-safe.
 *
 * 1. Open the child read-only (without its parent) and the parent read-write.
 * 2. Before the parent changes at all, atomically write the journal `<child>.merge.json` listing the
 *    parent DataWriteGuids that belong to this merge: the child's parent_linkage, plus the GUID the
 *    parent's open session will write (`identity().next`). Each resumed run appends its own `next`.
 * 3. Copy every sector the child holds into the parent through the parent's ordinary (logged) writes:
 *    FULLY_PRESENT blocks whole, PARTIALLY_PRESENT blocks by their sector bitmap, ZERO/UNMAPPED blocks as
 *    zero ranges (they hide the parent). The child never changes, so copying is idempotent.
 * 4. Flush and close the parent (clean log), then delete the child, then the journal.
 * A crash at any point leaves either the untouched chain (before 2's first parent write), or a parent
 * whose DataWriteGuid the journal accepts, so re-running resumes and copies the same bytes again.
 */
import { readFile, stat, unlink } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { UsageError } from '../errors.js';
import { VhdxParentMismatchError, VhdxParentMissingError } from './errors.js';
import { PAYLOAD_FULLY_PRESENT, PAYLOAD_PARTIALLY_PRESENT, PAYLOAD_UNMAPPED, PAYLOAD_ZERO, MiB } from './format/constants.js';
import { guidEq } from './format/guid.js';
import { findParent } from './resolveParent.js';
import { VhdxDevice, syncDir } from './VhdxDevice.js';
import { atomicWriteFile } from '../util/atomicWriteFile.js';

interface MergeJournal {
  child: string;
  parent: string;
  accepted: string[];
}

const COPY_CHUNK = 4 * MiB;

export function mergeJournalPath(childPath: string): string {
  return `${childPath}.merge.json`;
}

async function readJournal(path: string): Promise<MergeJournal | undefined> {
  try {
    return JSON.parse(await readFile(path, 'utf8')) as MergeJournal;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
}

async function writeJournal(path: string, j: MergeJournal): Promise<void> {
  await atomicWriteFile(path, JSON.stringify(j));
}

/** Merge `childPath` into its parent and delete it. Re-running after a crash resumes. */
export async function mergeVhdx(childPath: string): Promise<void> {
  const journalPath = mergeJournalPath(childPath);
  let journal = await readJournal(journalPath);
  const childExists = await stat(childPath).then(() => true, () => false);
  if (!childExists) {
    if (journal) {
      // Crash after the child was deleted: the merge is complete.
      await unlink(journalPath);
      await syncDir(dirname(childPath));
      return;
    }
    throw new UsageError(`${childPath} does not exist`);
  }
  const child = await VhdxDevice.openInternal(childPath, { readOnly: true, skipParent: true });
  let parent: VhdxDevice | undefined;
  try {
    const ci = child.info();
    if (ci.type !== 'differencing' || !ci.parent) throw new UsageError(`${childPath} is not a differencing disk: nothing to merge`);
    const loc = child.internals.st.parentLocator!;
    const { found, tried } = await findParent(resolve(childPath), loc);
    if (!found) throw new VhdxParentMissingError(childPath, tried);
    parent = await VhdxDevice.open(found);
    const id = await parent.identity();
    const accepted = journal ? journal.accepted : [ci.parent.linkage];
    if (!accepted.some((g) => guidEq(g, id.current))) {
      throw new VhdxParentMismatchError(childPath, found, ci.parent.linkage, id.current, !!journal);
    }
    journal = { child: resolve(childPath), parent: found, accepted: [...new Set([...accepted, id.next])] };
    await writeJournal(journalPath, journal);

    const bs = ci.blockSize;
    const blocks = Math.ceil(ci.size / bs);
    for (let b = 0; b < blocks; b++) {
      const e = child.blockEntry(b);
      const start = b * bs;
      const len = Math.min(bs, ci.size - start);
      if (e.state === PAYLOAD_FULLY_PRESENT) {
        for (let o = 0; o < len; o += COPY_CHUNK) {
          const n = Math.min(COPY_CHUNK, len - o);
          await parent.write(start + o, await child.read(start + o, n));
        }
      } else if (e.state === PAYLOAD_PARTIALLY_PRESENT) {
        for (const [pos, n, present] of await child.presentRuns(b, start, len)) {
          if (present) await parent.write(pos, await child.read(pos, n));
        }
      } else if (e.state === PAYLOAD_ZERO || e.state === PAYLOAD_UNMAPPED) {
        await parent.zero(start, len);
      }
    }
    await parent.flush();
    await parent.close();
    parent = undefined;
    await child.close();
    await unlink(childPath);
    await syncDir(dirname(childPath));
    await unlink(journalPath);
    await syncDir(dirname(childPath));
  } finally {
    await parent?.close().catch(() => undefined);
    await child.close().catch(() => undefined);
  }
}
