import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { VhdxDevice } from '../../src/vhdx/VhdxDevice.js';
import { BAT_ENTRY_SIZE, batEntryFromBuffer } from '../../src/vhdx/format/BatEntry.js';
import { PAYLOAD_FULLY_PRESENT, PAYLOAD_NOT_PRESENT, PAYLOAD_PARTIALLY_PRESENT } from '../../src/vhdx/format/constants.js';
import { requireTools, run, tempDir } from '../helpers/tools.js';
import { pattern } from './helpers.js';

const MiB = 1024 * 1024;

/** The BAT state of payload block `b` as the open device holds it. */
function blockState(dev: VhdxDevice, b: number): number {
  const { st } = dev.internals;
  return batEntryFromBuffer(st.bat, st.layout.payloadIndex(b) * BAT_ENTRY_SIZE).state;
}

test('trim of a whole block of a dynamic VHDX deallocates it: hole extent, allocatedBytes drops, reads zeros, persists', async (t) => {
  if (!requireTools(t, 'qemu-img', 'qemu-io')) return;
  const dir = await tempDir(t, 'tidemark-vhdx-trim-');
  const path = join(dir, 'd.vhdx');
  const dev = await VhdxDevice.create(path, { size: 8 * MiB, blockSize: MiB });
  await dev.write(MiB, pattern(MiB, 1)); // block 1, whole
  await dev.write(3 * MiB, pattern(4096, 2)); // block 3, a piece
  assert.equal(dev.info().allocatedBytes, 2 * MiB);
  assert.equal(blockState(dev, 1), PAYLOAD_FULLY_PRESENT);
  assert.deepEqual(await dev.extents(MiB, MiB), [{ offset: MiB, length: MiB, type: 'data' }]);

  await dev.trim(MiB, MiB);
  const s1 = blockState(dev, 1);
  assert.ok(s1 !== PAYLOAD_FULLY_PRESENT && s1 !== PAYLOAD_PARTIALLY_PRESENT && s1 !== PAYLOAD_NOT_PRESENT, `block 1 state ${s1} after trim`);
  assert.deepEqual(await dev.extents(MiB, MiB), [{ offset: MiB, length: MiB, type: 'hole' }]);
  assert.equal(dev.info().allocatedBytes, MiB, 'only block 3 is still allocated');
  assert.ok((await dev.read(MiB, MiB)).equals(Buffer.alloc(MiB)), 'a trimmed block reads as zeros');

  // A trim of part of a block cannot deallocate it: the block stays present and the range reads zeros.
  await dev.trim(3 * MiB, 2048);
  assert.equal(blockState(dev, 3), PAYLOAD_FULLY_PRESENT);
  assert.ok((await dev.read(3 * MiB, 4096)).equals(Buffer.concat([Buffer.alloc(2048), pattern(4096, 2).subarray(2048)])));
  await dev.close();

  const again = await VhdxDevice.open(path, { readOnly: true });
  try {
    assert.equal(blockState(again, 1), s1, 'the trimmed state is durable');
    assert.equal(again.info().allocatedBytes, MiB);
    assert.deepEqual(await again.extents(0, 4 * MiB), [
      { offset: 0, length: 3 * MiB, type: 'hole' },
      { offset: 3 * MiB, length: MiB, type: 'data' },
    ]);
  } finally {
    await again.close();
  }
  // The oracle agrees: the file is consistent and the trimmed block reads as zeros.
  assert.equal(run('qemu-img', ['check', '-f', 'vhdx', path], { allowFail: true }).status, 0);
  const io = run('qemu-io', ['-f', 'vhdx', '-r', '-c', `read -P 0 ${MiB} ${MiB}`, '-c', `read -P 0 ${3 * MiB} 2048`, path], { allowFail: true });
  assert.equal(io.status, 0, io.stderr);
  assert.doesNotMatch(io.stdout, /Pattern verification failed/);
});
