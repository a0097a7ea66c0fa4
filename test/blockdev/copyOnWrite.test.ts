import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { copyOnWrite } from '../../src/blockdev/copyOnWrite.js';
import { MemoryDevice } from '../../src/blockdev/MemoryDevice.js';
import { RawFileDevice } from '../../src/blockdev/RawFileDevice.js';
import { readOnly } from '../../src/blockdev/readOnly.js';
import { UsageError } from '../../src/errors.js';
import { tempDir } from '../helpers/tools.js';
import { checkExtents, pattern, runContract } from './contract.js';

const MiB = 1024 * 1024;

// The contract needs a device reading as zeros: a zero base, so every read from the base is checked too.
runContract('copyOnWrite layer (memory)', async (_t, size) => ({ device: copyOnWrite(readOnly(new MemoryDevice(size)), new MemoryDevice(size), { blockSize: 4096 }) }));

// Raw files on both sides, bitmap carried into the reopened session.
runContract('copyOnWrite layer (raw files)', async (t, size) => {
  const dir = await tempDir(t);
  const basePath = join(dir, 'base.img');
  const overlayPath = join(dir, 'overlay.img');
  await (await RawFileDevice.create(basePath, size)).close();
  const open = async (bitmap?: Uint8Array) =>
    copyOnWrite(await RawFileDevice.open(basePath, { readOnly: true }), await RawFileDevice.open(overlayPath), { bitmap });
  await (await RawFileDevice.create(overlayPath, size)).close();
  const device = await open();
  return { device, reopen: () => open(device.bitmap) };
});

test('copyOnWrite: base is never written; reads mix base and overlay per block', async () => {
  const size = 4 * MiB + 1000;
  const baseData = pattern(size, 77);
  const base = new MemoryDevice(size);
  await base.write(0, baseData);
  const overlay = new MemoryDevice(size);
  const cow = copyOnWrite(readOnly(base), overlay, { blockSize: 64 * 1024 });
  const shadow = Buffer.from(baseData);
  assert.ok((await cow.read(0, size)).equals(shadow), 'reads the base before any write');
  await cow.write(100, Buffer.alloc(10, 1)); // partial block: copy-up
  Buffer.alloc(10, 1).copy(shadow, 100);
  await cow.zero(MiB + 5, 200 * 1024); // partial + full blocks
  shadow.fill(0, MiB + 5, MiB + 5 + 200 * 1024);
  await cow.trim(size - 500, 500); // partial last block
  shadow.fill(0, size - 500);
  assert.ok((await cow.read(0, size)).equals(shadow));
  assert.ok((await base.read(0, size)).equals(baseData), 'base unchanged');
  const bits = cow.bitmap;
  const set = [...Array(Math.ceil(size / 65536)).keys()].filter((b) => (bits[b >> 3]! >> (b & 7)) & 1);
  assert.deepEqual(set, [0, 16, 17, 18, 19, 64], 'exactly the touched blocks live in the overlay');
  await checkExtents(cow, 0, size, shadow);
  // Concurrent partial writes into one untouched block must not lose each other during copy-up.
  await Promise.all([cow.write(2 * MiB + 1, Buffer.alloc(100, 0xa)), cow.write(2 * MiB + 500, Buffer.alloc(100, 0xb)), cow.write(2 * MiB + 1000, Buffer.alloc(100, 0xc))]);
  const got = await cow.read(2 * MiB, 1200);
  assert.ok(got.subarray(1, 101).every((b) => b === 0xa) && got.subarray(500, 600).every((b) => b === 0xb) && got.subarray(1000, 1100).every((b) => b === 0xc));
  assert.equal(got[0], baseData[2 * MiB], 'untouched bytes of the block still come from the base');
  await cow.close();
});

test('copyOnWrite: bad configurations are usage errors', () => {
  const base = new MemoryDevice(MiB);
  assert.throws(() => copyOnWrite(base, new MemoryDevice(MiB - 1)), UsageError);
  assert.throws(() => copyOnWrite(base, new MemoryDevice(MiB, 512, 4096, { readOnly: true })), UsageError);
  assert.throws(() => copyOnWrite(base, new MemoryDevice(MiB), { blockSize: 3000 }), UsageError);
  assert.throws(() => copyOnWrite(base, new MemoryDevice(MiB), { blockSize: 4096, bitmap: new Uint8Array(3) }), UsageError);
});
