import assert from 'node:assert/strict';
import { copyFile, mkdir, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import fc from 'fast-check';
import { VhdxDevice } from '../../src/vhdx/VhdxDevice.js';
import { checkVhdx } from '../../src/vhdx/checkVhdx.js';
import { VhdxParentMismatchError, VhdxParentMissingError } from '../../src/vhdx/errors.js';
import { META_PARENT_LOCATOR, METADATA_TABLE_SIZE } from '../../src/vhdx/format/constants.js';
import type { MetadataEntry } from '../../src/vhdx/format/MetadataTable.js';
import { placeMetadataItem } from '../../src/vhdx/format/placeMetadataItem.js';
import { relativeParentPath, relinkVhdx } from '../../src/vhdx/relinkVhdx.js';
import { fcSeed, tempDir } from '../helpers/tools.js';
import { pattern } from './helpers.js';

const MiB = 1024 * 1024;
const KiB = 1024;
const entry = (itemId: string, offset: number, length: number): MetadataEntry => ({ itemId, offset, length, isUser: false, isVirtualDisk: false, isRequired: true });
const A = '11111111-1111-1111-1111-111111111111';
const B = '22222222-2222-2222-2222-222222222222';

test('placeMetadataItem: in place when it fits, else the first free gap; never overlapping; RangeError when full', () => {
  const table = [entry(A, METADATA_TABLE_SIZE, 100), entry(META_PARENT_LOCATOR, METADATA_TABLE_SIZE + 100, 200), entry(B, METADATA_TABLE_SIZE + 400, 50)];
  // Shrinks and grows up to the next item stay in place.
  assert.equal(placeMetadataItem(table, MiB, META_PARENT_LOCATOR, 150).find((e) => e.itemId === META_PARENT_LOCATOR)!.offset, METADATA_TABLE_SIZE + 100);
  assert.equal(placeMetadataItem(table, MiB, META_PARENT_LOCATOR, 300).find((e) => e.itemId === META_PARENT_LOCATOR)!.offset, METADATA_TABLE_SIZE + 100);
  // Larger: moves after the last item; the other entries are unchanged.
  const moved = placeMetadataItem(table, MiB, META_PARENT_LOCATOR, 301);
  assert.deepEqual(moved.find((e) => e.itemId === META_PARENT_LOCATOR), entry(META_PARENT_LOCATOR, METADATA_TABLE_SIZE + 450, 301));
  assert.deepEqual(moved.filter((e) => e.itemId !== META_PARENT_LOCATOR), table.filter((e) => e.itemId !== META_PARENT_LOCATOR));
  assert.throws(() => placeMetadataItem(table, METADATA_TABLE_SIZE + 500, META_PARENT_LOCATOR, 301), RangeError);
  assert.throws(() => placeMetadataItem([entry(A, METADATA_TABLE_SIZE, 10)], MiB, META_PARENT_LOCATOR, 10), RangeError);

  // Property: any placement of random items keeps every item inside the region, after the table, disjoint.
  fc.assert(fc.property(fc.array(fc.integer({ min: 1, max: 4 * KiB }), { minLength: 1, maxLength: 8 }), fc.integer({ min: 1, max: 64 * KiB }), fc.nat(7), (lengths, newLength, pick) => {
    let off = METADATA_TABLE_SIZE;
    const ids = lengths.map((_, i) => `${String(i).padStart(8, '0')}-0000-0000-0000-000000000000`);
    const entries = lengths.map((l, i) => {
      const e = entry(ids[i]!, off, l);
      off += l + (i % 2) * 512;
      return e;
    });
    const target = entries[pick % entries.length]!;
    const out = placeMetadataItem(entries, MiB, target.itemId, newLength);
    const t = out.find((e) => e.itemId === target.itemId)!;
    assert.equal(t.length, newLength);
    for (const e of out) {
      assert.ok(e.offset >= METADATA_TABLE_SIZE && e.offset + e.length <= MiB);
      for (const o of out) if (o !== e) assert.ok(e.offset + e.length <= o.offset || o.offset + o.length <= e.offset, 'disjoint');
    }
  }), { seed: fcSeed() });
});

test('relinkVhdx: a chain copied elsewhere reads the same after relinking, linkage and DataWriteGuid kept, check clean', async (t) => {
  const dir = await tempDir(t);
  const size = 8 * MiB;
  const a = join(dir, 'a');
  await mkdir(a);
  const base = join(a, 'base.vhdx');
  const mid = join(a, 'mid.avhdx');
  const top = join(a, 'top.avhdx');
  const b = await VhdxDevice.create(base, { size, blockSize: MiB });
  await b.write(0, pattern(size, 1));
  await b.close();
  const m = await VhdxDevice.create(mid, { size: 0, parent: base });
  await m.write(MiB + 100, pattern(MiB, 2));
  await m.close();
  const tp = await VhdxDevice.create(top, { size: 0, parent: mid });
  await tp.write(5 * MiB + 7, pattern(3000, 3));
  await tp.close();
  const read = async (p: string) => {
    const d = await VhdxDevice.open(p, { readOnly: true });
    try {
      return { data: await d.read(0, size), info: d.info(), chain: d.parentChain() };
    } finally {
      await d.close();
    }
  };
  const before = await read(top);

  // Copy to a folder with a much longer name (the locator item grows and moves), with other file names.
  const z = join(dir, 'z'.repeat(180), 'machine');
  await mkdir(z, { recursive: true });
  const [nb, nm, nt] = [join(z, 'disk0.r1.vhdx'), join(z, 'disk0.r2.avhdx'), join(z, 'disk0.avhdx')];
  await copyFile(base, nb);
  await copyFile(mid, nm);
  await copyFile(top, nt);
  // Not relinked yet: the copies still resolve to the originals (absolute path).
  assert.deepEqual((await read(nt)).chain, [nt, mid, base]);
  await relinkVhdx(nt, nm); // top first: order does not matter, the mid's DataWriteGuid stays
  await relinkVhdx(nm, nb);
  const after = await read(nt);
  assert.deepEqual(after.chain, [nt, nm, nb]);
  assert.ok(after.data.equals(before.data), 'same content through the new chain');
  assert.equal(after.info.dataWriteGuid, before.info.dataWriteGuid, 'DataWriteGuid kept');
  assert.equal(after.info.parent!.linkage, before.info.parent!.linkage);
  assert.equal(after.info.parent!.relativePath, relativeParentPath(nt, nm));
  assert.equal(after.info.parent!.relativePath, '.\\disk0.r2.avhdx');
  assert.equal(after.info.parent!.absolutePath, nm);
  for (const p of [nt, nm]) assert.deepEqual((await checkVhdx(p)).problems, [], `${p} checks clean`);
  // Idempotent.
  await relinkVhdx(nt, nm);
  assert.ok((await read(nt)).data.equals(before.data));

  // The relative path alone carries the chain: move the whole folder away.
  const moved = join(dir, 'moved');
  await rename(z, moved);
  const far = await read(join(moved, 'disk0.avhdx'));
  assert.deepEqual(far.chain, [join(moved, 'disk0.avhdx'), join(moved, 'disk0.r2.avhdx'), join(moved, 'disk0.r1.vhdx')]);
  assert.ok(far.data.equals(before.data));

  // Writable use after a relink: writes land, the parent is not touched.
  const w = await VhdxDevice.open(join(moved, 'disk0.avhdx'));
  await w.write(0, Buffer.alloc(4096, 9));
  await w.close();
  assert.ok((await read(join(moved, 'disk0.r2.avhdx'))).data.equals((await read(mid)).data));

  // A disk that is not the parent (other DataWriteGuid) is refused and nothing changes.
  const other = join(dir, 'other.vhdx');
  await (await VhdxDevice.create(other, { size, blockSize: MiB })).close();
  await assert.rejects(relinkVhdx(join(moved, 'disk0.r2.avhdx'), other), VhdxParentMismatchError);
  assert.deepEqual((await read(join(moved, 'disk0.avhdx'))).chain.slice(1), [join(moved, 'disk0.r2.avhdx'), join(moved, 'disk0.r1.vhdx')]);
  // A non-differencing disk has nothing to relink.
  await assert.rejects(relinkVhdx(other, base), /not a differencing disk/);
  // The relinked locator names only the new places: with the base gone the open fails, naming them.
  await rm(join(moved, 'disk0.r1.vhdx'));
  await assert.rejects(read(join(moved, 'disk0.avhdx')), (e) => e instanceof VhdxParentMissingError && (e.data.tried as string[]).includes(nb));
});
