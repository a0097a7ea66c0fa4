import { test } from 'node:test';
import assert from 'node:assert/strict';
import { stat, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { RawFileDevice } from '../../src/blockdev/RawFileDevice.js';
import { tempDir } from '../helpers/tools.js';

const MiB = 1024 * 1024;

async function times(path: string): Promise<{ mtimeNs: bigint; ctimeNs: bigint; size: bigint }> {
  const s = await stat(path, { bigint: true });
  return { mtimeNs: s.mtimeNs, ctimeNs: s.ctimeNs, size: s.size };
}

/** Sleep past the kernel's timestamp granularity so that any metadata change would show. */
const tick = () => new Promise((r) => setTimeout(r, 30));

test('RawFileDevice: opening read-write and closing without writes leaves mtime/ctime untouched', async (t) => {
  const dir = await tempDir(t);
  for (const size of [0, 12345, 4 * MiB]) {
    const path = join(dir, `disk-${size}.img`);
    await writeFile(path, Buffer.alloc(size, 0x11));
    await utimes(path, new Date('2020-01-02T03:04:05Z'), new Date('2020-01-02T03:04:05Z'));
    const before = await times(path);
    await tick();
    const dev = await RawFileDevice.open(path);
    assert.equal(dev.capabilities.readOnly, false);
    await dev.read(0, Math.min(size, 4096));
    await dev.extents(0, size);
    await dev.flush();
    await dev.close();
    assert.deepEqual(await times(path), before, `open+close of a ${size}-byte file changed its timestamps`);
  }
});

test('RawFileDevice: the first trim still punches a hole and changes the file (capability decided lazily)', async (t) => {
  const path = join(await tempDir(t), 'disk.img');
  await writeFile(path, Buffer.alloc(4 * MiB, 0xaa));
  const before = await times(path);
  await tick();
  const dev = await RawFileDevice.open(path);
  assert.equal(dev.capabilities.trim, true, 'writable with the addon: hole punching assumed until refused');
  const full = await dev.allocatedBytes();
  await dev.trim(MiB, 2 * MiB);
  assert.ok((await dev.allocatedBytes()) <= full - 2 * MiB, 'the trim deallocated');
  assert.ok((await dev.read(MiB, 2 * MiB)).every((b) => b === 0));
  assert.equal(dev.capabilities.trim, true, 'a successful punch keeps the capability');
  assert.equal(dev.capabilities.fastZero, true);
  await dev.zero(3 * MiB, 4096, { fast: true });
  await dev.close();
  const after = await times(path);
  assert.notEqual(after.mtimeNs, before.mtimeNs, 'a real trim is a change');
});

test('RawFileDevice: a read-only open reports no trim/fastZero and never touches the file', async (t) => {
  const path = join(await tempDir(t), 'disk.img');
  await writeFile(path, Buffer.alloc(MiB, 1));
  const before = await times(path);
  await tick();
  const dev = await RawFileDevice.open(path, { readOnly: true });
  assert.equal(dev.capabilities.trim, false);
  assert.equal(dev.capabilities.fastZero, false);
  await dev.close();
  assert.deepEqual(await times(path), before);
});
