import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { BlockDevice } from '../../src/blockdev/BlockDevice.js';
import { MemoryDevice } from '../../src/blockdev/MemoryDevice.js';
import { readOnly } from '../../src/blockdev/readOnly.js';
import { ReadOnlyError } from '../../src/errors.js';
import { pattern, runContract } from './contract.js';

runContract(
  'readOnly layer',
  async (_t, size) => {
    const inner = new MemoryDevice(size);
    await inner.write(1000, pattern(100000, 1));
    return { device: readOnly(inner) };
  },
  { readOnly: true },
);

test('readOnly: refusals never reach the device below; close closes it; identity passes through', async () => {
  const inner = new MemoryDevice(1 << 20);
  await inner.write(0, Buffer.alloc(4096, 9));
  const calls: string[] = [];
  const spy: BlockDevice = {
    size: inner.size,
    logicalSectorSize: 512,
    physicalSectorSize: 4096,
    capabilities: inner.capabilities,
    read: (o, l) => inner.read(o, l),
    extents: (o, l) => inner.extents(o, l),
    write: async () => void calls.push('write'),
    zero: async () => void calls.push('zero'),
    trim: async () => void calls.push('trim'),
    flush: async () => void calls.push('flush'),
    close: async () => void calls.push('close'),
    identity: async () => ({ current: 'a', next: 'b' }),
  };
  const ro = readOnly(spy);
  assert.equal(ro.capabilities.readOnly, true);
  assert.equal(inner.capabilities.readOnly, false, 'the layer does not change the device below');
  await assert.rejects(ro.write(0, Buffer.alloc(1)), ReadOnlyError);
  await assert.rejects(ro.zero(0, 1), ReadOnlyError);
  await assert.rejects(ro.trim(0, 1), ReadOnlyError);
  assert.deepEqual(calls, []);
  assert.deepEqual(await ro.identity!(), { current: 'a', next: 'b' });
  assert.ok((await ro.read(0, 4096)).equals(Buffer.alloc(4096, 9)));
  await ro.flush();
  await ro.close();
  await ro.close();
  assert.deepEqual(calls, ['close'], 'nothing but one close reached the device below');
});
