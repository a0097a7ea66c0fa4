import assert from 'node:assert/strict';
import { test } from 'node:test';
import { MemoryDevice } from '../../src/blockdev/MemoryDevice.js';
import { offsetView } from '../../src/blockdev/offsetView.js';
import { OutOfRangeError } from '../../src/errors.js';
import { pattern, runContract } from './contract.js';

const MiB = 1024 * 1024;
const TiB = 1024 * 1024 * MiB;

// An unaligned window inside a larger device, with guard data on both sides checked at cleanup.
runContract('offsetView layer', async (_t, size) => {
  const start = 3 * MiB + 777;
  const inner = new MemoryDevice(start + size + MiB);
  const guard = pattern(MiB, 5);
  await inner.write(start - MiB, guard);
  await inner.write(start + size, guard);
  const view = offsetView(inner, start, size, { closeNext: false });
  return {
    device: view,
    cleanup: async () => {
      assert.ok((await inner.read(start - MiB, MiB)).equals(guard), 'bytes before the window untouched');
      assert.ok((await inner.read(start + size, MiB)).equals(guard), 'bytes after the window untouched');
      await inner.close();
    },
  };
}, { largeSize: 3 * TiB });

test('offsetView: maps offsets and extents, rejects windows outside the device', async () => {
  const inner = new MemoryDevice(10 * MiB);
  assert.throws(() => offsetView(inner, 9 * MiB, 2 * MiB), OutOfRangeError);
  assert.throws(() => offsetView(inner, -1, MiB), OutOfRangeError);
  const view = offsetView(inner, 2 * MiB, 4 * MiB);
  assert.equal(view.size, 4 * MiB);
  await view.write(0, Buffer.alloc(10, 1));
  assert.ok((await inner.read(2 * MiB, 10)).equals(Buffer.alloc(10, 1)));
  assert.deepEqual(await view.extents(0, MiB), [
    { offset: 0, length: 64 * 1024, type: 'data' },
    { offset: 64 * 1024, length: MiB - 64 * 1024, type: 'hole' },
  ]);
  await assert.rejects(view.write(4 * MiB - 1, Buffer.alloc(2)), OutOfRangeError);
  await view.close();
  await assert.rejects(inner.read(0, 1), /closed/, 'closeNext defaults to true');
});
