/**
 * Read-only consistency check of a VHDX file and its parent chain. Never writes: a dirty log is
 * replayed in memory (an overlay over the file's bytes) so the structures are checked as they will
 * be after a read-write open replays it.
 */
import { open as fsOpen } from 'node:fs/promises';
import { resolve } from 'node:path';
import { TidemarkError } from '../errors.js';
import { CorruptError } from './errors.js';
import { LOG_SECTOR_SIZE } from './format/constants.js';
import { guidEq } from './format/guid.js';
import type { LogEntry } from './format/LogEntry.js';
import { findParent, KEY_LINKAGE, KEY_LINKAGE2 } from './resolveParent.js';
import { VhdxDevice, preadFull, type VhdxInfo } from './VhdxDevice.js';
import { findActiveLog } from './VhdxLog.js';
import { readHeaders, readStructure, type Problem, type Reader } from './VhdxStructure.js';

export interface VhdxCheckReport {
  ok: boolean;
  problems: Array<{ structure: string; message: string }>;
  logDirty: boolean;
  info?: VhdxInfo;
}

/** Check `path`; problems are collected, not thrown (I/O errors opening the file still throw). */
export async function checkVhdx(path: string): Promise<VhdxCheckReport> {
  const problems: Problem[] = [];
  const fh = await fsOpen(path, 'r');
  let logDirty = false;
  let info: VhdxInfo | undefined;
  try {
    const fileSize = (await fh.stat()).size;
    const raw: Reader = (off, len) => preadFull(fh, off, len);
    let read = raw;
    try {
      const { header } = await readHeaders(raw, path, problems);
      let entries: LogEntry[] = [];
      try {
        entries = await findActiveLog(raw, header, path, fileSize);
      } catch (e) {
        record(problems, e);
      }
      logDirty = entries.length > 0;
      let size = fileSize;
      if (logDirty) {
        const overlay = new Map<number, Buffer>();
        for (const e of entries) {
          for (const z of e.zeros) for (let o = 0; o < z.length; o += LOG_SECTOR_SIZE) overlay.set(z.fileOffset + o, Buffer.alloc(LOG_SECTOR_SIZE));
          for (const w of e.writes) overlay.set(w.fileOffset, w.data);
          size = Math.max(size, e.lastFileOffset);
        }
        read = async (off, len) => {
          const b = await raw(off, len);
          for (let s = Math.floor(off / LOG_SECTOR_SIZE) * LOG_SECTOR_SIZE; s < off + len; s += LOG_SECTOR_SIZE) {
            const d = overlay.get(s);
            if (!d) continue;
            const from = Math.max(s, off);
            const to = Math.min(s + LOG_SECTOR_SIZE, off + len);
            d.copy(b, from - off, from - s, to - s);
          }
          return b;
        };
      }
      const st = await readStructure(read, path, size, header, problems);
      if (st.parentLocator) {
        const { found, tried } = await findParent(resolve(path), st.parentLocator);
        if (!found) problems.push({ structure: 'parent locator', message: `parent not found (tried ${tried.join(', ')})` });
        else {
          const parentReport = await checkVhdx(found);
          for (const p of parentReport.problems) problems.push({ structure: `parent ${found}: ${p.structure}`, message: p.message });
          if (parentReport.info) {
            const links = [st.parentLocator.entries.get(KEY_LINKAGE), st.parentLocator.entries.get(KEY_LINKAGE2)].filter((x): x is string => !!x);
            if (!links.some((l) => guidEq(l, parentReport.info!.dataWriteGuid))) {
              problems.push({ structure: 'parent locator', message: `parent ${found} was modified after this disk was created (DataWriteGuid {${parentReport.info.dataWriteGuid}} does not match parent_linkage ${links[0]})` });
            }
            if (parentReport.info.size !== st.size) problems.push({ structure: 'parent locator', message: `parent ${found} is ${parentReport.info.size} bytes, this disk ${st.size}` });
          }
        }
      }
      if (problems.length === 0 && !logDirty) {
        const dev = await VhdxDevice.open(path, { readOnly: true });
        try {
          info = dev.info();
        } finally {
          await dev.close();
        }
      } else if (problems.length === 0) {
        info = {
          type: st.params.hasParent ? 'differencing' : st.params.leaveBlocksAllocated ? 'fixed' : 'dynamic', size: st.size, blockSize: st.params.blockSize,
          logicalSectorSize: st.logicalSectorSize, physicalSectorSize: st.physicalSectorSize, diskId: st.diskId, dataWriteGuid: header.dataWriteGuid,
          fileWriteGuid: header.fileWriteGuid, allocatedBytes: 0, fileSize, logDirty: true,
        };
      }
    } catch (e) {
      record(problems, e);
    }
  } finally {
    await fh.close();
  }
  return { ok: problems.length === 0, problems, logDirty, info };
}

function record(problems: Problem[], e: unknown): void {
  if (e instanceof CorruptError) problems.push({ structure: String(e.data.structure ?? 'file'), message: e.message });
  else if (e instanceof TidemarkError) problems.push({ structure: String(e.data.structure ?? e.code), message: e.message });
  else throw e;
}
