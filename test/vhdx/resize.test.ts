import assert from 'node:assert/strict';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { VhdxDevice } from '../../src/vhdx/VhdxDevice.js';
import { checkVhdx } from '../../src/vhdx/checkVhdx.js';
import { VhdxShrinkError, VhdxUnsupportedError } from '../../src/vhdx/errors.js';
import { resizeVhdx } from '../../src/vhdx/resizeVhdx.js';
import { requireTools, run, tempDir } from '../helpers/tools.js';
import { pattern, rawCreate, rawWrite } from './helpers.js';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

function qemuAgrees(t: import('node:test').TestContext, path: string, raw?: string): void {
  if (!requireTools(t, 'qemu-img')) return;
  const c = run('qemu-img', ['check', '-f', 'vhdx', path], { allowFail: true });
  assert.equal(c.status, 0, c.stdout + c.stderr);
  if (raw) {
    const cmp = run('qemu-img', ['compare', '-f', 'vhdx', '-F', 'raw', path, raw], { allowFail: true });
    assert.equal(cmp.status, 0, cmp.stdout + cmp.stderr);
  }
}

for (const type of ['dynamic', 'fixed'] as const) {
  test(`grow a ${type} disk: content kept, new space reads zeros, bytes past the old unaligned end are zeroed`, async (t) => {
    const dir = await tempDir(t, 'vhdx-resize-');
    const path = join(dir, 'g.vhdx');
    const oldSize = 3 * MiB + 512;
    const dev = await VhdxDevice.create(path, { size: oldSize, type, blockSize: MiB });
    const data = pattern(oldSize, 1);
    await dev.write(0, data);
    const lastBlock = dev.blockEntry(3);
    const id0 = (await dev.identity()).current;
    await dev.close();
    // Put garbage in the last block past the old end (allowed by the spec; must not become visible).
    const fh = await open(path, 'r+');
    await fh.write(Buffer.alloc(1000, 0xaa), 0, 1000, lastBlock.fileOffset + 512);
    await fh.close();
    await resizeVhdx(path, 7 * MiB);
    const g = await VhdxDevice.open(path, { readOnly: true });
    assert.equal(g.size, 7 * MiB);
    assert.notEqual(g.info().dataWriteGuid, id0, 'a size change is a visible change');
    const all = await g.read(0, 7 * MiB);
    assert.ok(all.subarray(0, oldSize).equals(data));
    assert.ok(all.subarray(oldSize).every((x) => x === 0));
    await g.close();
    const raw = join(dir, 'g.raw');
    await rawCreate(raw, 7 * MiB);
    await rawWrite(raw, 0, data);
    assert.equal((await checkVhdx(path)).ok, true);
    qemuAgrees(t, path, raw);
  });
}

test('grow past what the BAT region holds moves the BAT (sparse 1 GiB -> 300 GiB)', async (t) => {
  const dir = await tempDir(t, 'vhdx-resize-');
  const path = join(dir, 'big.vhdx');
  const dev = await VhdxDevice.create(path, { size: GiB, blockSize: MiB });
  await dev.write(GiB - 4096, Buffer.alloc(4096, 7));
  await dev.close();
  const newSize = 300 * GiB;
  await resizeVhdx(path, newSize);
  const d = await VhdxDevice.open(path);
  assert.equal(d.size, newSize);
  assert.equal((await d.read(GiB - 4096, 4096))[0], 7);
  await d.write(newSize - 4096, Buffer.alloc(4096, 9));
  await d.write(250 * GiB, Buffer.alloc(10, 3));
  await d.close();
  const r = await VhdxDevice.open(path, { readOnly: true });
  assert.equal((await r.read(newSize - 4096, 4096))[4095], 9);
  assert.equal((await r.read(250 * GiB, 10))[9], 3);
  await r.close();
  assert.equal((await checkVhdx(path)).ok, true);
  qemuAgrees(t, path);
  if (requireTools(t, 'qemu-img')) {
    const info = JSON.parse(run('qemu-img', ['info', '--output=json', path]).stdout) as { 'virtual-size': number };
    assert.equal(info['virtual-size'], newSize);
  }
});

test('shrink refuses to drop non-zero data unless forced; dropping zeros or holes is fine', async (t) => {
  const dir = await tempDir(t, 'vhdx-resize-');
  const path = join(dir, 's.vhdx');
  const dev = await VhdxDevice.create(path, { size: 16 * MiB, blockSize: MiB });
  const keep = pattern(4 * MiB, 2);
  await dev.write(0, keep);
  await dev.write(10 * MiB, Buffer.alloc(MiB)); // allocated, but zeros
  await dev.write(9 * MiB + 5, Buffer.from('precious'));
  await dev.close();
  await assert.rejects(resizeVhdx(path, 8 * MiB), (e: unknown) => e instanceof VhdxShrinkError && e.data.lostBlocks === 1);
  const still = await VhdxDevice.open(path, { readOnly: true });
  assert.equal(still.size, 16 * MiB);
  assert.equal((await still.read(9 * MiB + 5, 8)).toString(), 'precious');
  await still.close();
  await resizeVhdx(path, 10 * MiB); // drops the all-zero block and holes only
  await resizeVhdx(path, 8 * MiB, { force: true }); // drops "precious" on purpose
  await resizeVhdx(path, 4 * MiB + 4096);
  await assert.rejects(resizeVhdx(path, 2 * MiB), VhdxShrinkError);
  await resizeVhdx(path, 2 * MiB + 512, { force: true });
  const s = await VhdxDevice.open(path, { readOnly: true });
  assert.equal(s.size, 2 * MiB + 512);
  assert.ok((await s.read(0, s.size)).equals(keep.subarray(0, 2 * MiB + 512)));
  await s.close();
  // Grow again: what was cut off must not reappear.
  await resizeVhdx(path, 16 * MiB);
  const g = await VhdxDevice.open(path, { readOnly: true });
  assert.ok((await g.read(2 * MiB + 512, 14 * MiB - 512)).every((x) => x === 0));
  await g.close();
  const raw = join(dir, 's.raw');
  await rawCreate(raw, 16 * MiB);
  await rawWrite(raw, 0, keep.subarray(0, 2 * MiB + 512));
  qemuAgrees(t, path, raw);
});

test('resizing a differencing disk is refused; bad sizes are usage errors', async (t) => {
  const dir = await tempDir(t, 'vhdx-resize-');
  const p = join(dir, 'p.vhdx');
  await (await VhdxDevice.create(p, { size: 2 * MiB, blockSize: MiB })).close();
  await (await VhdxDevice.create(join(dir, 'c.avhdx'), { size: 0, parent: p })).close();
  await assert.rejects(resizeVhdx(join(dir, 'c.avhdx'), 4 * MiB), VhdxUnsupportedError);
  await assert.rejects(resizeVhdx(p, 1000), /multiple of the logical sector size/);
  await assert.rejects(resizeVhdx(p, 0), /between 1 byte and 64 TiB/);
});
