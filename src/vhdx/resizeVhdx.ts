/**
 * Grow or shrink a fixed or dynamic VHDX. All metadata changes (BAT entries, region tables when the
 * BAT moves, the virtual disk size item) go through the log; a grow commits BAT entries before the new
 * size, a shrink commits the new size before clearing BAT entries, so a crash between two log entries
 * never exposes unzeroed or missing data inside the visible size.
 */
import { UsageError } from '../errors.js';
import { CorruptError, VhdxShrinkError, VhdxUnsupportedError } from './errors.js';
import { BAT_ENTRY_SIZE, batEntryFromBuffer, batEntryToBuffer } from './format/BatEntry.js';
import { BatLayout } from './format/BatLayout.js';
import {
  LOG_SECTOR_SIZE, MAX_DISK_SIZE, MiB, PAYLOAD_FULLY_PRESENT, PAYLOAD_PARTIALLY_PRESENT, REGION_BAT, REGION_TABLE_OFFSETS,
} from './format/constants.js';
import { guidEq } from './format/guid.js';
import { regionTableToBuffer } from './format/RegionTable.js';
import { VhdxDevice, preadFull } from './VhdxDevice.js';
import { readStructure } from './VhdxStructure.js';

/** Resize `path` to `newSize` bytes. Shrinking refuses (VhdxShrinkError) to drop non-zero data unless `force`. */
export async function resizeVhdx(path: string, newSize: number, opts: { force?: boolean } = {}): Promise<void> {
  const dev = await VhdxDevice.open(path);
  try {
    const info = dev.info();
    if (info.type === 'differencing') throw new VhdxUnsupportedError(path, 'resizing a differencing disk (its size must match its parent)');
    if (!Number.isSafeInteger(newSize) || newSize <= 0 || newSize > MAX_DISK_SIZE) throw new UsageError(`new size ${newSize} must be between 1 byte and 64 TiB`);
    if (newSize % info.logicalSectorSize !== 0) throw new UsageError(`new size ${newSize} is not a multiple of the logical sector size ${info.logicalSectorSize}`);
    if (newSize === info.size) return;
    await dev.mutate(async () => {
      const { st, fh } = dev.internals;
      const oldSize = st.size;
      const bs = st.params.blockSize;
      const fixed = st.params.leaveBlocksAllocated;
      const newLayout = new BatLayout(newSize, bs, st.logicalSectorSize, false);
      const oldLayout = st.layout;

      if (newSize < oldSize) {
        let lost = 0;
        for (let b = Math.floor(newSize / bs); b < oldLayout.dataBlocks; b++) {
          const e = batEntryFromBuffer(st.bat, oldLayout.payloadIndex(b) * BAT_ENTRY_SIZE);
          if (e.state !== PAYLOAD_FULLY_PRESENT && e.state !== PAYLOAD_PARTIALLY_PRESENT) continue;
          const from = Math.max(b * bs, newSize);
          const to = Math.min((b + 1) * bs, oldSize);
          for (let o = from; o < to; o += 4 * MiB) {
            const buf = await dev.read(o, Math.min(4 * MiB, to - o));
            if (buf.some((x) => x !== 0)) { lost++; break; }
          }
        }
        if (lost > 0 && !opts.force) throw new VhdxShrinkError(path, newSize, lost);
      } else if (oldSize % bs !== 0) {
        // Bytes of the old last block past the old end become visible: make sure they are zero.
        const b = Math.floor(oldSize / bs);
        const e = batEntryFromBuffer(st.bat, oldLayout.payloadIndex(b) * BAT_ENTRY_SIZE);
        if (e.state === PAYLOAD_FULLY_PRESENT) {
          const n = (b + 1) * bs - oldSize;
          await fh.write(Buffer.alloc(n), 0, n, e.fileOffset + (oldSize - b * bs));
        }
      }

      // The new BAT, entry indices unchanged (they do not depend on the size).
      const newBatLen = Math.ceil(Math.max(1, newLayout.totalEntries * BAT_ENTRY_SIZE) / MiB) * MiB;
      const newBat = Buffer.alloc(Math.max(newBatLen, st.batRegion.length));
      st.bat.copy(newBat, 0, 0, Math.min(st.bat.length, newLayout.totalEntries * BAT_ENTRY_SIZE));
      if (fixed) {
        for (let b = oldLayout.dataBlocks; b < newLayout.dataBlocks; b++) {
          batEntryToBuffer({ state: PAYLOAD_FULLY_PRESENT, fileOffset: await dev.allocateSpace(bs) }, newBat, newLayout.payloadIndex(b) * BAT_ENTRY_SIZE);
        }
      }
      const batWrites = new Map<number, Buffer>();
      const otherWrites = new Map<number, Buffer>();
      let batOffset = st.batRegion.fileOffset;
      let batLength = st.batRegion.length;
      if (newBatLen <= st.batRegion.length) {
        for (let k = 0; k < st.batRegion.length / LOG_SECTOR_SIZE; k++) {
          const a = newBat.subarray(k * LOG_SECTOR_SIZE, (k + 1) * LOG_SECTOR_SIZE);
          if (!a.equals(st.bat.subarray(k * LOG_SECTOR_SIZE, (k + 1) * LOG_SECTOR_SIZE))) batWrites.set(batOffset + k * LOG_SECTOR_SIZE, Buffer.from(a));
        }
      } else {
        // Move the BAT to new space at the end of the file; only the region tables point at it.
        batOffset = await dev.allocateSpace(newBatLen);
        batLength = newBatLen;
        await fh.write(newBat, 0, newBatLen, batOffset);
        const rt = regionTableToBuffer({ entries: st.regionTable.entries.map((r) => guidEq(r.guid, REGION_BAT) ? { ...r, fileOffset: batOffset, length: batLength } : r) });
        for (const off of REGION_TABLE_OFFSETS) for (let k = 0; k < rt.length; k += LOG_SECTOR_SIZE) otherWrites.set(off + k, Buffer.from(rt.subarray(k, k + LOG_SECTOR_SIZE)));
      }
      const sec = Math.floor(st.sizeItemOffset / LOG_SECTOR_SIZE) * LOG_SECTOR_SIZE;
      const sizeSector = await preadFull(fh, sec, LOG_SECTOR_SIZE);
      sizeSector.writeBigUInt64LE(BigInt(newSize), st.sizeItemOffset - sec);
      otherWrites.set(sec, sizeSector);
      const ordered = newSize > oldSize ? [...batWrites, ...otherWrites] : [...otherWrites, ...batWrites];
      await dev.commitWrites(new Map(ordered));
      const fileSize = (await fh.stat()).size;
      const header = dev.internals.header;
      const fresh = await readStructure((o, l) => preadFull(fh, o, l), path, fileSize, header);
      if (fresh.size !== newSize) throw new CorruptError(path, 'virtual disk size', 'resize did not take effect');
      dev.replaceStructure(fresh, 0);
    });
  } finally {
    await dev.close();
  }
}
