/**
 * Point a differencing VHDX at its parent's new location (the parent was copied or moved): the parent
 * locator's relative_path and absolute_linux_path are rewritten; parent_linkage (and parent_linkage2) stay,
 * so the new parent must be the same disk — its DataWriteGuid must equal the linkage, as at every open.
 * Stale absolute_win32_path / volume_path entries are dropped (they name the old place).
 *
 * How: the new locator item is encoded (pure), placed in the metadata region (placeMetadataItem: in place
 * when it fits, else in a free gap) and the changed 4 KiB sectors of the metadata table and item are
 * committed as one log entry, so a crash leaves either the old or the new locator, never a mix. The
 * child's DataWriteGuid is kept (the locator is not user-visible data), so a grandchild's linkage to
 * this disk stays valid: relink a chain in any order.
 */
import { dirname, relative, resolve } from 'node:path';
import { UsageError } from '../errors.js';
import { CorruptError, VhdxParentMismatchError, VhdxUnsupportedError } from './errors.js';
import { LOCATOR_TYPE_VHDX, LOG_SECTOR_SIZE, META_PARENT_LOCATOR, METADATA_TABLE_SIZE } from './format/constants.js';
import { guidEq } from './format/guid.js';
import { metadataTableToBuffer } from './format/MetadataTable.js';
import { parentLocatorToBuffer } from './format/ParentLocator.js';
import { placeMetadataItem } from './format/placeMetadataItem.js';
import { KEY_LINKAGE, KEY_LINKAGE2, KEY_LINUX, KEY_RELATIVE } from './resolveParent.js';
import { VhdxDevice, preadFull } from './VhdxDevice.js';
import { readStructure } from './VhdxStructure.js';

/** The relative_path value Tidemark writes: from the child's folder, backslashes, `.\` when below it. */
export function relativeParentPath(childPath: string, parentPath: string): string {
  let rel = relative(dirname(resolve(childPath)), resolve(parentPath));
  if (!rel.startsWith('..')) rel = `./${rel}`;
  return rel.replace(/\//g, '\\');
}

/**
 * Rewrite `childPath`'s parent locator to name `parentPath`. Throws UsageError when the child is not a
 * differencing disk, VhdxParentMismatchError when `parentPath` is not its parent (other DataWriteGuid),
 * CorruptError when sizes differ, and what VhdxDevice.open throws for either file. Idempotent.
 */
export async function relinkVhdx(childPath: string, parentPath: string): Promise<void> {
  const parent = await VhdxDevice.open(parentPath, { readOnly: true });
  let actual: string;
  let parentSize: number;
  let parentSector: number;
  try {
    const pi = parent.info();
    actual = pi.dataWriteGuid;
    parentSize = pi.size;
    parentSector = pi.logicalSectorSize;
  } finally {
    await parent.close();
  }
  const dev = await VhdxDevice.openInternal(childPath, { skipParent: true });
  try {
    const { st } = dev.internals;
    if (!st.params.hasParent || !st.parentLocator) throw new UsageError(`${childPath} is not a differencing disk: it has no parent to relink`);
    const loc = st.parentLocator;
    const links = [loc.entries.get(KEY_LINKAGE), loc.entries.get(KEY_LINKAGE2)].filter((x): x is string => !!x);
    if (!links.some((l) => guidEq(l, actual))) throw new VhdxParentMismatchError(childPath, resolve(parentPath), (links[0] ?? '').replace(/[{}]/g, '').toLowerCase(), actual, false);
    if (parentSize !== st.size) throw new CorruptError(childPath, 'parent locator', `new parent ${parentPath} is ${parentSize} bytes but this disk is ${st.size}`);
    if (parentSector !== st.logicalSectorSize) throw new CorruptError(childPath, 'parent locator', `new parent ${parentPath} has ${parentSector}-byte sectors, this disk ${st.logicalSectorSize}`);

    const entries = new Map<string, string>([[KEY_LINKAGE, loc.entries.get(KEY_LINKAGE)!]]);
    if (loc.entries.has(KEY_LINKAGE2)) entries.set(KEY_LINKAGE2, loc.entries.get(KEY_LINKAGE2)!);
    entries.set(KEY_RELATIVE, relativeParentPath(childPath, parentPath));
    entries.set(KEY_LINUX, resolve(parentPath));
    const item = parentLocatorToBuffer({ locatorType: LOCATOR_TYPE_VHDX, entries });

    await dev.mutate(async () => {
      const { fh } = dev.internals;
      const region = st.metadataRegion;
      let placed;
      try {
        placed = placeMetadataItem(st.metadataEntries, region.length, META_PARENT_LOCATOR, item.length);
      } catch (err) {
        throw new VhdxUnsupportedError(childPath, `a ${item.length}-byte parent locator (${(err as Error).message})`);
      }
      const at = placed.find((e) => !e.isUser && guidEq(e.itemId, META_PARENT_LOCATOR))!;
      // The new bytes of the region: the table (first 64 KiB) and the item, patched into whole 4 KiB sectors.
      const first = Math.floor(at.offset / LOG_SECTOR_SIZE) * LOG_SECTOR_SIZE;
      const last = Math.ceil((at.offset + item.length) / LOG_SECTOR_SIZE) * LOG_SECTOR_SIZE;
      const itemSectors = await preadFull(fh, region.fileOffset + first, last - first);
      item.copy(itemSectors, at.offset - first);
      const oldTable = await preadFull(fh, region.fileOffset, METADATA_TABLE_SIZE);
      const newTable = metadataTableToBuffer(placed);
      const writes = new Map<number, Buffer>();
      for (let k = 0; k < METADATA_TABLE_SIZE; k += LOG_SECTOR_SIZE) {
        const s = newTable.subarray(k, k + LOG_SECTOR_SIZE);
        if (!s.equals(oldTable.subarray(k, k + LOG_SECTOR_SIZE))) writes.set(region.fileOffset + k, Buffer.from(s));
      }
      for (let k = 0; k < itemSectors.length; k += LOG_SECTOR_SIZE) writes.set(region.fileOffset + first + k, Buffer.from(itemSectors.subarray(k, k + LOG_SECTOR_SIZE)));
      await dev.commitWrites(writes);
      const fresh = await readStructure((o, l) => preadFull(fh, o, l), childPath, (await fh.stat()).size, dev.internals.header);
      if (fresh.parentLocator?.entries.get(KEY_LINUX) !== resolve(parentPath)) throw new CorruptError(childPath, 'parent locator', 'the rewritten locator did not take effect');
      dev.replaceStructure(fresh, 0);
    }, { metadataOnly: true });
  } finally {
    await dev.close();
  }
}
