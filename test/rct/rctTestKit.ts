import { readFile, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import type { BlockDevice, WriteIdentity } from '../../src/blockdev/BlockDevice.js';
import type { Range } from '../../src/rct/Range.js';

/** A view of `dev` whose close() only flushes, so a test can "reopen" the same device after a close or crash. */
export function keepOpen(dev: BlockDevice): BlockDevice {
  return {
    get size() { return dev.size; },
    logicalSectorSize: dev.logicalSectorSize,
    physicalSectorSize: dev.physicalSectorSize,
    capabilities: dev.capabilities,
    read: (o, l) => dev.read(o, l),
    write: (o, d, opts) => dev.write(o, d, opts),
    zero: (o, l, opts) => dev.zero(o, l, opts),
    trim: (o, l, opts) => dev.trim(o, l, opts),
    flush: () => dev.flush(),
    extents: (o, l) => dev.extents(o, l),
    close: () => dev.flush(),
    ...(dev.identity ? { identity: () => dev.identity!() } : {}),
  };
}

/**
 * Emulates a VHDX DataWriteGuid on top of any device: the identity lives in `<guidPath>`; the first
 * data change of each open session rotates it to the `next` value announced at open.
 */
export function withGuidIdentity(dev: BlockDevice, guidPath: string): BlockDevice {
  let next = randomBytes(8).toString('hex');
  let rotated = false;
  const rotate = async () => {
    if (rotated) return;
    rotated = true;
    await writeFile(guidPath, next);
  };
  const cur = async () => (await readFile(guidPath, 'utf8').catch(() => 'none')).trim();
  return {
    ...keepOpen(dev),
    write: async (o, d, opts) => { await rotate(); return dev.write(o, d, opts); },
    zero: async (o, l, opts) => { await rotate(); return dev.zero(o, l, opts); },
    trim: async (o, l, opts) => { await rotate(); return dev.trim(o, l, opts); },
    close: () => dev.close(),
    identity: async (): Promise<WriteIdentity> => {
      const c = await cur();
      return { current: c, next: rotated ? c : next };
    },
  };
}

/** Block indexes covered by ranges. */
export function blocksOf(ranges: Range[], blockSize: number): Set<number> {
  const s = new Set<number>();
  for (const r of ranges) for (let b = Math.floor(r.offset / blockSize); b * blockSize < r.offset + r.length; b++) s.add(b);
  return s;
}

/** Ranges are sorted, non-empty, non-overlapping and not adjacent (merged). */
export function assertMerged(ranges: Range[]): void {
  for (let i = 0; i < ranges.length; i++) {
    if (ranges[i]!.length <= 0) throw new Error(`empty range at ${i}`);
    if (i > 0 && ranges[i - 1]!.offset + ranges[i - 1]!.length >= ranges[i]!.offset) throw new Error(`ranges ${i - 1} and ${i} overlap or touch`);
  }
}
