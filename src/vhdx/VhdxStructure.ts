/**
 * Reads and validates every structure of a VHDX file through a byte reader (no writes, no caching),
 * in the order the spec demands: file identifier, headers, (log: handled by the caller), region tables,
 * metadata, BAT. Used by VhdxDevice.open (strict: the first problem throws) and checkVhdx (collecting:
 * recoverable problems are recorded and parsing goes on).
 */
import { CorruptError, VhdxUnsupportedError } from './errors.js';
import { BAT_ENTRY_SIZE, batEntryFromBuffer, batEntryReserved } from './format/BatEntry.js';
import { BatLayout } from './format/BatLayout.js';
import {
  BITMAP_BLOCK_SIZE, FILE_ID_OFFSET, HEADER_OFFSETS, HEADER_SECTION_SIZE, HEADER_SIZE, LOCATOR_TYPE_VHDX, META_FILE_PARAMETERS,
  META_LOGICAL_SECTOR_SIZE, META_PAGE83, META_PARENT_LOCATOR, META_PHYSICAL_SECTOR_SIZE, META_VIRTUAL_DISK_SIZE, METADATA_TABLE_SIZE,
  PAYLOAD_FULLY_PRESENT, PAYLOAD_NOT_PRESENT, PAYLOAD_PARTIALLY_PRESENT, PAYLOAD_UNDEFINED, PAYLOAD_UNMAPPED, PAYLOAD_ZERO,
  REGION_BAT, REGION_METADATA, REGION_TABLE_OFFSETS, REGION_TABLE_SIZE, SB_NOT_PRESENT, SB_PRESENT,
} from './format/constants.js';
import { FILE_IDENTIFIER_SIZE, fileIdentifierFromBuffer } from './format/FileIdentifier.js';
import { guidEq } from './format/guid.js';
import { pickHeader, type VhdxHeader } from './format/Header.js';
import { type FileParameters, fileParametersFromBuffer, page83FromBuffer, sectorSizeFromBuffer, virtualDiskSizeFromBuffer } from './format/MetadataItems.js';
import { type MetadataEntry, metadataTableFromBuffer } from './format/MetadataTable.js';
import { type ParentLocator, parentLocatorFromBuffer } from './format/ParentLocator.js';
import { findRegion, type RegionEntry, type RegionTable, regionTableFromBuffer } from './format/RegionTable.js';

export type Reader = (offset: number, length: number) => Promise<Buffer>;

export interface Problem {
  structure: string;
  message: string;
}

export interface HeaderState {
  header: VhdxHeader;
  slot: 0 | 1;
  creator: string;
}

export interface VhdxStructure {
  regionTable: RegionTable;
  batRegion: RegionEntry;
  metadataRegion: RegionEntry;
  metadataEntries: MetadataEntry[];
  params: FileParameters;
  size: number;
  logicalSectorSize: 512 | 4096;
  physicalSectorSize: 512 | 4096;
  diskId: string;
  parentLocator?: ParentLocator;
  layout: BatLayout;
  /** The whole BAT region as on disk. */
  bat: Buffer;
  /** Byte offset of the metadata item for the virtual disk size (for resize). */
  sizeItemOffset: number;
}

/** Legacy (VHDX v0.95) value for UNMAPPED, read as UNMAPPED. */
export const PAYLOAD_UNMAPPED_V095 = 5;

export async function readHeaders(read: Reader, file: string, problems?: Problem[]): Promise<HeaderState> {
  const id = fileIdentifierFromBuffer(await read(FILE_ID_OFFSET, FILE_IDENTIFIER_SIZE), file);
  const slots = (await Promise.all(HEADER_OFFSETS.map((o) => read(o, HEADER_SIZE)))) as [Buffer, Buffer];
  const picked = pickHeader(slots, file);
  if (problems) for (const e of picked.errors) problems.push({ structure: 'header', message: e });
  return { header: picked.header, slot: picked.slot, creator: id.creator };
}

/** Parse region tables, metadata and BAT. `fileSize` bounds every offset. */
export async function readStructure(read: Reader, file: string, fileSize: number, header: VhdxHeader, problems?: Problem[]): Promise<VhdxStructure> {
  const note = (err: unknown): void => {
    if (!problems || !(err instanceof CorruptError)) throw err;
    problems.push({ structure: String(err.data.structure ?? 'file'), message: err.message });
  };

  // Region tables: use the first valid copy; report a bad or differing second copy.
  const rts: Array<RegionTable | Error> = [];
  for (const [i, off] of REGION_TABLE_OFFSETS.entries()) {
    try {
      rts.push(regionTableFromBuffer(await read(off, REGION_TABLE_SIZE), file, `region table ${i + 1}`));
    } catch (e) {
      if (e instanceof VhdxUnsupportedError) throw e;
      rts.push(e as Error);
    }
  }
  const good = rts.find((r): r is RegionTable => !(r instanceof Error));
  if (!good) throw rts[0] as Error;
  // A bad or differing copy is recoverable (the first valid copy is used): only a check reports it.
  if (problems) {
    for (const r of rts) if (r instanceof Error) note(r);
    if (rts.every((r) => !(r instanceof Error)) && JSON.stringify(rts[0]) !== JSON.stringify(rts[1])) {
      note(new CorruptError(file, 'region table', 'the two region table copies differ'));
    }
  }
  const batRegion = findRegion(good, REGION_BAT);
  const metadataRegion = findRegion(good, REGION_METADATA);
  const logEnd = header.logOffset + header.logLength;
  for (const [name, r] of [['BAT region', batRegion], ['metadata region', metadataRegion]] as const) {
    if (r.fileOffset + r.length > fileSize) throw new CorruptError(file, name, `[${r.fileOffset}, +${r.length}) runs past the end of the file (${fileSize} bytes)`);
    if (header.logLength > 0 && r.fileOffset < logEnd && header.logOffset < r.fileOffset + r.length) throw new CorruptError(file, name, 'overlaps the log');
  }
  if (header.logLength > 0 && logEnd > fileSize) note(new CorruptError(file, 'log', `log region [${header.logOffset}, +${header.logLength}) runs past the end of the file`));

  // Metadata.
  const mdTable = await read(metadataRegion.fileOffset, METADATA_TABLE_SIZE);
  const entries = metadataTableFromBuffer(mdTable, metadataRegion.length, file);
  const item = async (guid: string, name: string, required = true): Promise<{ buf: Buffer; entry: MetadataEntry } | undefined> => {
    const e = entries.find((x) => !x.isUser && guidEq(x.itemId, guid));
    if (!e || e.length === 0) {
      if (required) throw new CorruptError(file, name, 'required metadata item is missing');
      return undefined;
    }
    return { buf: await read(metadataRegion.fileOffset + e.offset, e.length), entry: e };
  };
  const params = fileParametersFromBuffer((await item(META_FILE_PARAMETERS, 'file parameters'))!.buf, file);
  const logicalSectorSize = sectorSizeFromBuffer((await item(META_LOGICAL_SECTOR_SIZE, 'logical sector size'))!.buf, 'logical', file);
  const physicalSectorSize = sectorSizeFromBuffer((await item(META_PHYSICAL_SECTOR_SIZE, 'physical sector size'))!.buf, 'physical', file);
  const sizeItem = (await item(META_VIRTUAL_DISK_SIZE, 'virtual disk size'))!;
  const size = virtualDiskSizeFromBuffer(sizeItem.buf, logicalSectorSize, file);
  const diskId = page83FromBuffer((await item(META_PAGE83, 'page 83 data'))!.buf, file);
  let parentLocator: ParentLocator | undefined;
  const pl = await item(META_PARENT_LOCATOR, 'parent locator', false);
  if (params.hasParent) {
    if (!pl) throw new CorruptError(file, 'parent locator', 'the file parameters say the disk has a parent but there is no parent locator');
    parentLocator = parentLocatorFromBuffer(pl.buf, file);
    if (!guidEq(parentLocator.locatorType, LOCATOR_TYPE_VHDX)) throw new VhdxUnsupportedError(file, `parent locator type {${parentLocator.locatorType}}`);
    if (!parentLocator.entries.has('parent_linkage')) throw new CorruptError(file, 'parent locator', 'no parent_linkage entry');
  }
  if (params.hasParent && params.leaveBlocksAllocated) note(new CorruptError(file, 'file parameters', 'a differencing disk cannot be fixed (LeaveBlockAllocated set with HasParent)'));

  // BAT.
  const layout = new BatLayout(size, params.blockSize, logicalSectorSize, params.hasParent);
  if (layout.totalEntries * BAT_ENTRY_SIZE > batRegion.length) {
    throw new CorruptError(file, 'BAT region', `${batRegion.length} bytes cannot hold ${layout.totalEntries} entries`);
  }
  const bat = await read(batRegion.fileOffset, batRegion.length);
  validateBat(bat, layout, file, fileSize, [
    { start: 0, end: HEADER_SECTION_SIZE, name: 'the header section' },
    { start: header.logOffset, end: logEnd, name: 'the log' },
    { start: metadataRegion.fileOffset, end: metadataRegion.fileOffset + metadataRegion.length, name: 'the metadata region' },
    { start: batRegion.fileOffset, end: batRegion.fileOffset + batRegion.length, name: 'the BAT region' },
  ], note);
  return {
    regionTable: good, batRegion, metadataRegion, metadataEntries: entries, params, size, logicalSectorSize, physicalSectorSize, diskId,
    parentLocator, layout, bat, sizeItemOffset: metadataRegion.fileOffset + sizeItem.entry.offset,
  };
}

interface Span { start: number; end: number; name: string }

/** Check every BAT entry: known state, offset inside the file, no overlap with regions or other blocks. */
function validateBat(bat: Buffer, layout: BatLayout, file: string, fileSize: number, regions: Span[], note: (e: unknown) => void): void {
  const spans: Span[] = [];
  for (let i = 0; i < layout.totalEntries; i++) {
    const at = i * BAT_ENTRY_SIZE;
    const e = batEntryFromBuffer(bat, at);
    const name = `BAT entry ${i}`;
    const fail = (why: string): void => note(new CorruptError(file, name, why));
    if (batEntryReserved(bat, at) !== 0) fail('reserved bits are set');
    let len = 0;
    if (layout.isBitmapIndex(i)) {
      if (e.state === SB_PRESENT) {
        if (!layout.differencing) fail('sector bitmap block present in a disk without a parent');
        len = BITMAP_BLOCK_SIZE;
      } else if (e.state !== SB_NOT_PRESENT) fail(`invalid sector bitmap state ${e.state}`);
    } else {
      switch (e.state) {
        case PAYLOAD_NOT_PRESENT: case PAYLOAD_UNDEFINED: case PAYLOAD_ZERO: case PAYLOAD_UNMAPPED: case PAYLOAD_UNMAPPED_V095:
          break;
        case PAYLOAD_PARTIALLY_PRESENT: {
          if (!layout.differencing) { fail('partially present block in a disk without a parent'); break; }
          const sb = batEntryFromBuffer(bat, layout.bitmapIndex(Math.floor(layout.blockOfIndex(i) / layout.chunkRatio)) * BAT_ENTRY_SIZE);
          if (sb.state !== SB_PRESENT) { fail('partially present block whose chunk has no sector bitmap block'); break; }
          len = layout.blockSize;
          break;
        }
        case PAYLOAD_FULLY_PRESENT:
          len = layout.blockSize;
          break;
        default:
          fail(`invalid payload block state ${e.state}`);
      }
    }
    if (len === 0) continue;
    if (e.fileOffset < HEADER_SECTION_SIZE) { fail(`file offset ${e.fileOffset} lies in the header section`); continue; }
    if (e.fileOffset + len > fileSize) { fail(`offset points past end of file (block [${e.fileOffset}, +${len}), file is ${fileSize} bytes)`); continue; }
    const r = regions.find((s) => s.end > s.start && e.fileOffset < s.end && s.start < e.fileOffset + len);
    if (r) { fail(`block at ${e.fileOffset} overlaps ${r.name}`); continue; }
    spans.push({ start: e.fileOffset, end: e.fileOffset + len, name });
  }
  spans.sort((a, b) => a.start - b.start);
  for (let k = 1; k < spans.length; k++) {
    if (spans[k]!.start < spans[k - 1]!.end) note(new CorruptError(file, spans[k]!.name, `block at ${spans[k]!.start} overlaps ${spans[k - 1]!.name}`));
  }
}
