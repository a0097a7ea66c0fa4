/**
 * The bytes of a new, empty VHDX file (pure: no I/O). Layout (the same qemu-img uses, regions in another order):
 *   0      file identifier        64 KiB header 1      128 KiB header 2
 *   192 KiB region table 1        256 KiB region table 2
 *   1 MiB  log (logSize)          then metadata region (1 MiB)   then BAT region (rounded up to 1 MiB)
 *   then payload blocks (fixed disks: all of them, 1 MiB aligned).
 */
import { BAT_ENTRY_SIZE, batEntryToBuffer } from './format/BatEntry.js';
import { BatLayout } from './format/BatLayout.js';
import {
  DEFAULT_LOG_SIZE, HEADER_OFFSETS, HEADER_SECTION_SIZE, LOCATOR_TYPE_VHDX, META_FILE_PARAMETERS, META_LOGICAL_SECTOR_SIZE, META_PAGE83,
  META_PARENT_LOCATOR, META_PHYSICAL_SECTOR_SIZE, META_VIRTUAL_DISK_SIZE, METADATA_TABLE_SIZE, MiB, PAYLOAD_FULLY_PRESENT, REGION_BAT,
  REGION_METADATA, REGION_TABLE_OFFSETS,
} from './format/constants.js';
import { fileIdentifierToBuffer } from './format/FileIdentifier.js';
import { ZERO_GUID } from './format/guid.js';
import { headerToBuffer } from './format/Header.js';
import { fileParametersToBuffer, page83ToBuffer, u32ToBuffer, u64ToBuffer } from './format/MetadataItems.js';
import { type MetadataEntry, metadataTableToBuffer } from './format/MetadataTable.js';
import { parentLocatorToBuffer } from './format/ParentLocator.js';
import { regionTableToBuffer } from './format/RegionTable.js';

export interface LayoutParams {
  size: number;
  blockSize: number;
  logicalSectorSize: 512 | 4096;
  physicalSectorSize: 512 | 4096;
  fixed: boolean;
  diskId: string;
  fileWriteGuid: string;
  dataWriteGuid: string;
  /** Parent locator key/values (makes a differencing disk). */
  parentEntries?: Map<string, string>;
  logSize?: number;
  creator?: string;
}

export interface BuiltLayout {
  writes: Array<[number, Buffer]>;
  fileSize: number;
  logOffset: number;
  metadataOffset: number;
  batOffset: number;
  batLength: number;
}

const roundUp = (n: number, m: number): number => Math.ceil(n / m) * m;

export function buildVhdxLayout(p: LayoutParams): BuiltLayout {
  const logSize = p.logSize ?? DEFAULT_LOG_SIZE;
  const logOffset = HEADER_SECTION_SIZE;
  const metadataOffset = logOffset + logSize;
  const metadataLength = MiB;
  const batOffset = metadataOffset + metadataLength;
  const layout = new BatLayout(p.size, p.blockSize, p.logicalSectorSize, !!p.parentEntries);
  const batLength = roundUp(Math.max(1, layout.totalEntries * BAT_ENTRY_SIZE), MiB);
  const writes: Array<[number, Buffer]> = [];

  writes.push([0, fileIdentifierToBuffer({ creator: p.creator ?? 'Tidemark' })]);
  HEADER_OFFSETS.forEach((off, i) => {
    writes.push([off, headerToBuffer({
      sequenceNumber: BigInt(i + 1), fileWriteGuid: p.fileWriteGuid, dataWriteGuid: p.dataWriteGuid, logGuid: ZERO_GUID,
      logVersion: 0, version: 1, logLength: logSize, logOffset,
    })]);
  });
  const rt = regionTableToBuffer({ entries: [
    { guid: REGION_METADATA, fileOffset: metadataOffset, length: metadataLength, required: true },
    { guid: REGION_BAT, fileOffset: batOffset, length: batLength, required: true },
  ] });
  for (const off of REGION_TABLE_OFFSETS) writes.push([off, rt]);

  const items: Array<{ id: string; data: Buffer; virtualDisk: boolean }> = [
    { id: META_FILE_PARAMETERS, data: fileParametersToBuffer({ blockSize: p.blockSize, leaveBlocksAllocated: p.fixed, hasParent: !!p.parentEntries }), virtualDisk: false },
    { id: META_VIRTUAL_DISK_SIZE, data: u64ToBuffer(p.size), virtualDisk: true },
    { id: META_PAGE83, data: page83ToBuffer(p.diskId), virtualDisk: true },
    { id: META_LOGICAL_SECTOR_SIZE, data: u32ToBuffer(p.logicalSectorSize), virtualDisk: true },
    { id: META_PHYSICAL_SECTOR_SIZE, data: u32ToBuffer(p.physicalSectorSize), virtualDisk: true },
  ];
  if (p.parentEntries) items.push({ id: META_PARENT_LOCATOR, data: parentLocatorToBuffer({ locatorType: LOCATOR_TYPE_VHDX, entries: p.parentEntries }), virtualDisk: false });
  const entries: MetadataEntry[] = [];
  let itemOff = METADATA_TABLE_SIZE;
  const itemBufs: Buffer[] = [];
  for (const it of items) {
    entries.push({ itemId: it.id, offset: itemOff, length: it.data.length, isUser: false, isVirtualDisk: it.virtualDisk, isRequired: true });
    itemBufs.push(it.data);
    itemOff += it.data.length;
  }
  if (itemOff > metadataLength) throw new RangeError('metadata items do not fit in the metadata region');
  writes.push([metadataOffset, metadataTableToBuffer(entries)]);
  writes.push([metadataOffset + METADATA_TABLE_SIZE, Buffer.concat(itemBufs)]);

  let fileSize = batOffset + batLength;
  if (p.fixed) {
    const bat = Buffer.alloc(layout.totalEntries * BAT_ENTRY_SIZE);
    for (let b = 0; b < layout.dataBlocks; b++) {
      batEntryToBuffer({ state: PAYLOAD_FULLY_PRESENT, fileOffset: fileSize }, bat, layout.payloadIndex(b) * BAT_ENTRY_SIZE);
      fileSize += p.blockSize;
    }
    writes.push([batOffset, bat]);
  }
  return { writes, fileSize, logOffset, metadataOffset, batOffset, batLength };
}
