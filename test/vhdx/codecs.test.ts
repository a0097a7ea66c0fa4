import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { CorruptError, VhdxUnsupportedError } from '../../src/vhdx/errors.js';
import { batEntryFromBuffer, batEntryToBuffer } from '../../src/vhdx/format/BatEntry.js';
import { BatLayout } from '../../src/vhdx/format/BatLayout.js';
import { MiB, REGION_BAT, REGION_METADATA, META_FILE_PARAMETERS, META_PAGE83 } from '../../src/vhdx/format/constants.js';
import { fileIdentifierFromBuffer, fileIdentifierToBuffer } from '../../src/vhdx/format/FileIdentifier.js';
import { guidFromBuffer, guidToBuffer, newGuid, ZERO_GUID } from '../../src/vhdx/format/guid.js';
import { headerFromBuffer, headerToBuffer, pickHeader, type VhdxHeader } from '../../src/vhdx/format/Header.js';
import { descriptorSectors, logEntryFromBuffer, logEntryToBuffer, type LogEntry } from '../../src/vhdx/format/LogEntry.js';
import { fileParametersFromBuffer, fileParametersToBuffer, sectorSizeFromBuffer, u32ToBuffer, u64ToBuffer, virtualDiskSizeFromBuffer } from '../../src/vhdx/format/MetadataItems.js';
import { metadataTableFromBuffer, metadataTableToBuffer, type MetadataEntry } from '../../src/vhdx/format/MetadataTable.js';
import { parentLocatorFromBuffer, parentLocatorToBuffer } from '../../src/vhdx/format/ParentLocator.js';
import { regionTableFromBuffer, regionTableToBuffer } from '../../src/vhdx/format/RegionTable.js';
import { sealChecksum } from '../../src/vhdx/format/checksum.js';
import { fcSeed } from '../helpers/tools.js';

const guidArb = fc.uuid().map((u) => u.toLowerCase());
const headerArb: fc.Arbitrary<VhdxHeader> = fc.record({
  sequenceNumber: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
  fileWriteGuid: guidArb,
  dataWriteGuid: guidArb,
  logGuid: guidArb,
  logVersion: fc.constant(0),
  version: fc.constant(1),
  logLength: fc.integer({ min: 0, max: 64 }).map((n) => n * MiB),
  logOffset: fc.integer({ min: 1, max: 2 ** 20 }).map((n) => n * MiB),
}, { noNullPrototype: true });

test('GUIDs use the mixed-endian MS layout and round-trip', () => {
  // The BAT region GUID as it appears on disk (bytes from a qemu-img file).
  const disk = Buffer.from('6677c22d23f600429d64115e9bfd4a08', 'hex');
  assert.equal(guidFromBuffer(disk), REGION_BAT);
  assert.deepEqual(guidToBuffer(REGION_BAT), disk);
  fc.assert(fc.property(guidArb, (g) => guidFromBuffer(guidToBuffer(g)) === g), { seed: fcSeed() });
  assert.match(newGuid(), /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
});

test('file identifier: signature and creator round-trip; a wrong signature is CorruptError', () => {
  const b = fileIdentifierToBuffer({ creator: 'Tidemark ✓' });
  assert.equal(b.toString('latin1', 0, 8), 'vhdxfile');
  assert.equal(fileIdentifierFromBuffer(b).creator, 'Tidemark ✓');
  b[0] = 0x56;
  assert.throws(() => fileIdentifierFromBuffer(b, 'x.vhdx'), (e: unknown) => e instanceof CorruptError && /x\.vhdx: file identifier/.test(e.message));
});

test('headers round-trip; any flipped byte in the checksummed 4 KiB is CorruptError naming the slot', () => {
  fc.assert(fc.property(headerArb, fc.integer({ min: 0, max: 4095 }), fc.integer({ min: 1, max: 255 }), (h, at, x) => {
    const b = headerToBuffer(h);
    assert.equal(b.length, 4096);
    assert.deepEqual(headerFromBuffer(b), h);
    const bad = Buffer.from(b);
    bad[at]! ^= x;
    assert.throws(() => headerFromBuffer(bad, 'd.vhdx', 'header 2'), (e: unknown) => e instanceof CorruptError && e.message.startsWith('d.vhdx: header 2:'));
  }), { seed: fcSeed(), numRuns: 200 });
});

test('pickHeader takes the higher sequence number and falls back to the other slot when one is bad', () => {
  fc.assert(fc.property(headerArb, headerArb, (a, b) => {
    fc.pre(a.sequenceNumber !== b.sequenceNumber);
    const ba = headerToBuffer(a);
    const bb = headerToBuffer(b);
    const picked = pickHeader([ba, bb]);
    assert.equal(picked.slot, a.sequenceNumber > b.sequenceNumber ? 0 : 1);
    const torn = Buffer.from(ba);
    torn[100]! ^= 1;
    const fb = pickHeader([torn, bb]);
    assert.equal(fb.slot, 1);
    assert.deepEqual(fb.header, b);
    assert.equal(fb.errors.length, 1);
  }), { seed: fcSeed(), numRuns: 100 });
  const h = headerToBuffer({ sequenceNumber: 1n, fileWriteGuid: ZERO_GUID, dataWriteGuid: ZERO_GUID, logGuid: ZERO_GUID, logVersion: 0, version: 1, logLength: MiB, logOffset: MiB });
  const bad = Buffer.from(h);
  bad[0] = 0;
  assert.throws(() => pickHeader([bad, bad], 'z.vhdx'), /z\.vhdx: headers: both header slots are invalid/);
  // Version 2 is refused.
  const v2 = Buffer.from(h);
  v2.writeUInt16LE(2, 66);
  sealChecksum(v2, 4);
  assert.throws(() => headerFromBuffer(v2), /unsupported version 2/);
});

test('region table round-trips and rejects overlaps, misalignment, unknown required regions, missing regions', () => {
  const good = { entries: [
    { guid: REGION_METADATA, fileOffset: 2 * MiB, length: MiB, required: true },
    { guid: REGION_BAT, fileOffset: 3 * MiB, length: MiB, required: true },
  ] };
  assert.deepEqual(regionTableFromBuffer(regionTableToBuffer(good)), good);
  const expectCorrupt = (t: typeof good, re: RegExp) => assert.throws(() => regionTableFromBuffer(regionTableToBuffer(t), 'r.vhdx'), (e: unknown) => e instanceof CorruptError && re.test(e.message));
  expectCorrupt({ entries: [good.entries[0]!, { ...good.entries[1]!, fileOffset: 2 * MiB + 512 * 1024 }] }, /region table entry 1: file offset/);
  expectCorrupt({ entries: [good.entries[0]!, { ...good.entries[1]!, fileOffset: 2 * MiB }] }, /overlaps entry 0/);
  expectCorrupt({ entries: [good.entries[0]!] }, /no BAT region/);
  expectCorrupt({ entries: [good.entries[0]!, { ...good.entries[1]!, length: 0 }] }, /length 0/);
  assert.throws(() => regionTableFromBuffer(regionTableToBuffer({ entries: [...good.entries, { guid: newGuid(), fileOffset: 10 * MiB, length: MiB, required: true }] })), VhdxUnsupportedError);
  // Optional unknown regions are fine.
  assert.equal(regionTableFromBuffer(regionTableToBuffer({ entries: [...good.entries, { guid: newGuid(), fileOffset: 10 * MiB, length: MiB, required: false }] })).entries.length, 3);
  const b = regionTableToBuffer(good);
  b[40]! ^= 0xff;
  assert.throws(() => regionTableFromBuffer(b), /checksum mismatch/);
});

test('metadata table and items round-trip and validate ranges', () => {
  const entries: MetadataEntry[] = [
    { itemId: META_FILE_PARAMETERS, offset: 65536, length: 8, isUser: false, isVirtualDisk: false, isRequired: true },
    { itemId: META_PAGE83, offset: 65544, length: 16, isUser: false, isVirtualDisk: true, isRequired: true },
  ];
  assert.deepEqual(metadataTableFromBuffer(metadataTableToBuffer(entries), MiB), entries);
  assert.throws(() => metadataTableFromBuffer(metadataTableToBuffer([{ ...entries[0]!, offset: 100 }]), MiB), /inside the metadata table/);
  assert.throws(() => metadataTableFromBuffer(metadataTableToBuffer([{ ...entries[0]!, offset: MiB - 4 }]), MiB), /runs past the metadata region/);
  assert.throws(() => metadataTableFromBuffer(metadataTableToBuffer([entries[0]!, { ...entries[1]!, offset: 65540 }]), MiB), /overlaps entry 0/);
  assert.throws(() => metadataTableFromBuffer(metadataTableToBuffer([{ ...entries[0]!, itemId: newGuid() }]), MiB), VhdxUnsupportedError);
  for (const bs of [MiB, 32 * MiB, 256 * MiB]) {
    for (const flags of [[false, false], [true, false], [false, true]] as const) {
      const p = { blockSize: bs, leaveBlocksAllocated: flags[0], hasParent: flags[1] };
      assert.deepEqual(fileParametersFromBuffer(fileParametersToBuffer(p)), p);
    }
  }
  for (const bad of [0, 512 * 1024, 3 * MiB, 512 * MiB]) {
    assert.throws(() => fileParametersFromBuffer(fileParametersToBuffer({ blockSize: bad, leaveBlocksAllocated: false, hasParent: false })), /block size/);
  }
  assert.equal(virtualDiskSizeFromBuffer(u64ToBuffer(64 * 2 ** 40), 4096), 64 * 2 ** 40);
  assert.throws(() => virtualDiskSizeFromBuffer(u64ToBuffer(64 * 2 ** 40 + 4096), 4096), /64 TiB/);
  assert.throws(() => virtualDiskSizeFromBuffer(u64ToBuffer(1000), 512), /multiple/);
  assert.equal(sectorSizeFromBuffer(u32ToBuffer(4096), 'logical'), 4096);
  assert.throws(() => sectorSizeFromBuffer(u32ToBuffer(1024), 'physical'), /physical sector size/);
});

test('parent locator key/value entries round-trip as UTF-16LE and reject bad offsets', () => {
  const key = fc.string({ minLength: 1, maxLength: 20, unit: 'grapheme' });
  fc.assert(fc.property(guidArb, fc.uniqueArray(fc.tuple(key, fc.string({ minLength: 1, maxLength: 60, unit: 'grapheme' })), { selector: (x) => x[0], maxLength: 6 }), (type, pairs) => {
    const loc = { locatorType: type, entries: new Map(pairs) };
    assert.deepEqual(parentLocatorFromBuffer(parentLocatorToBuffer(loc)), loc);
  }), { seed: fcSeed(), numRuns: 100 });
  const b = parentLocatorToBuffer({ locatorType: newGuid(), entries: new Map([['relative_path', '.\\p.vhdx']]) });
  assert.equal(b.toString('utf16le', b.readUInt32LE(20), b.readUInt32LE(20) + b.readUInt16LE(28)), 'relative_path');
  b.writeUInt32LE(5000, 24);
  assert.throws(() => parentLocatorFromBuffer(b, 'c.avhdx'), /c\.avhdx: parent locator entry 0: key or value runs past/);
});

test('BAT entries pack state in bits 0-2 and the 1 MiB offset in bits 20-63', () => {
  const b = batEntryToBuffer({ state: 6, fileOffset: 3 * MiB });
  assert.equal(b.readBigUInt64LE(0), (3n << 20n) | 6n);
  fc.assert(fc.property(fc.integer({ min: 0, max: 7 }), fc.integer({ min: 0, max: 2 ** 33 }), (state, mb) => {
    const e = { state, fileOffset: mb * MiB };
    const buf = batEntryToBuffer(e);
    assert.equal(buf.readBigUInt64LE(0), (BigInt(mb) << 20n) | BigInt(state));
    assert.deepEqual(batEntryFromBuffer(buf, 0), e);
  }), { seed: fcSeed() });
});

test('BAT layout: chunk ratio, entry counts (same formula as qemu) and index mapping', () => {
  const l = new BatLayout(100 * MiB, 8 * MiB, 512, false);
  assert.equal(l.chunkRatio, 512);
  assert.equal(l.totalEntries, 13);
  const big = new BatLayout(64 * 2 ** 40, MiB, 512, false);
  assert.equal(big.chunkRatio, 4096);
  assert.equal(big.totalEntries, 64 * 2 ** 20 + Math.floor((64 * 2 ** 20 - 1) / 4096));
  const diff = new BatLayout(10 * MiB, MiB, 4096, true);
  assert.equal(diff.chunkRatio, 32768);
  assert.equal(diff.totalEntries, 32769);
  fc.assert(fc.property(fc.integer({ min: 0, max: 8 }), fc.constantFrom(512, 4096), fc.integer({ min: 0, max: 10 ** 7 }), (shift, lss, block) => {
    const L = new BatLayout(2 ** 40, MiB * 2 ** shift, lss, true);
    const i = L.payloadIndex(block);
    assert.ok(!L.isBitmapIndex(i));
    assert.equal(L.blockOfIndex(i), block);
    const chunk = Math.floor(block / L.chunkRatio);
    assert.ok(L.isBitmapIndex(L.bitmapIndex(chunk)));
    assert.ok(L.bitmapIndex(chunk) > i && L.bitmapIndex(chunk) - i <= L.chunkRatio);
  }), { seed: fcSeed() });
});

test('log entries round-trip; descriptors spill into extra sectors after 126; any flipped byte is rejected', () => {
  assert.equal(descriptorSectors(0), 1);
  assert.equal(descriptorSectors(126), 1);
  assert.equal(descriptorSectors(127), 2);
  assert.equal(descriptorSectors(254), 2);
  const sector = fc.uint8Array({ minLength: 4096, maxLength: 4096 }).map((a) => Buffer.from(a));
  const entryArb = fc.record({
    sequenceNumber: fc.bigInt({ min: 1n, max: 2n ** 64n - 1n }),
    tail: fc.integer({ min: 0, max: 255 }).map((n) => n * 4096),
    logGuid: guidArb,
    flushedFileOffset: fc.integer({ min: 0, max: 2 ** 40 }),
    lastFileOffset: fc.integer({ min: 0, max: 2 ** 40 }),
    zeros: fc.array(fc.record({ fileOffset: fc.integer({ min: 0, max: 2 ** 30 }).map((n) => n * 4096), length: fc.integer({ min: 0, max: 256 }).map((n) => n * 4096) }, { noNullPrototype: true }), { maxLength: 5 }),
    writes: fc.array(fc.record({ fileOffset: fc.integer({ min: 0, max: 2 ** 30 }).map((n) => n * 4096), data: sector }, { noNullPrototype: true }), { maxLength: 5 }),
  }, { noNullPrototype: true });
  fc.assert(fc.property(entryArb, fc.nat(), fc.integer({ min: 1, max: 255 }), (e: LogEntry, at, x) => {
    const b = logEntryToBuffer(e);
    assert.equal(b.length % 4096, 0);
    assert.deepEqual(logEntryFromBuffer(b, e.logGuid), e);
    const bad = Buffer.from(b);
    bad[at % bad.length]! ^= x;
    assert.throws(() => logEntryFromBuffer(bad, e.logGuid, 'l.vhdx'), CorruptError);
    assert.throws(() => logEntryFromBuffer(b, newGuid()), /log GUID/);
  }), { seed: fcSeed(), numRuns: 60 });
  const many = { sequenceNumber: 7n, tail: 0, logGuid: newGuid(), flushedFileOffset: 0, lastFileOffset: 0, zeros: [], writes: Array.from({ length: 130 }, (_, i) => ({ fileOffset: i * 4096, data: Buffer.alloc(4096, i) })) };
  const mb = logEntryToBuffer(many);
  assert.equal(mb.length, (2 + 130) * 4096);
  assert.deepEqual(logEntryFromBuffer(mb, many.logGuid), many);
});
