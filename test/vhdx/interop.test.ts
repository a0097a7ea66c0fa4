/**
 * Interop with qemu-img/qemu-io (7.2): files we write pass `qemu-img check` and compare identical with a raw
 * oracle; files qemu writes read back exactly as `qemu-img convert -O raw` gives them.
 * qemu 7.2 refuses VHDX with 4096-byte logical sectors and differencing VHDX (both "Operation not
 * supported"); for those the tests check qemu's refusal and compare against the raw oracle with our reader.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { VhdxDevice } from '../../src/vhdx/VhdxDevice.js';
import { checkVhdx } from '../../src/vhdx/checkVhdx.js';
import { requireTools, run, tempDir } from '../helpers/tools.js';
import { pattern, rawCreate, rawRead, rawWrite } from './helpers.js';

const MiB = 1024 * 1024;

interface Cfg { type: 'dynamic' | 'fixed'; blockSize: number; lss: 512 | 4096; size: number }

const configs: Cfg[] = [
  { type: 'dynamic', blockSize: MiB, lss: 512, size: 24 * MiB + 512 },
  { type: 'dynamic', blockSize: 8 * MiB, lss: 512, size: 40 * MiB },
  { type: 'dynamic', blockSize: 32 * MiB, lss: 512, size: 70 * MiB + 4096 },
  { type: 'dynamic', blockSize: 256 * MiB, lss: 512, size: 300 * MiB },
  { type: 'fixed', blockSize: MiB, lss: 512, size: 9 * MiB + 1536 },
  { type: 'fixed', blockSize: 4 * MiB, lss: 512, size: 20 * MiB },
  { type: 'dynamic', blockSize: 2 * MiB, lss: 4096, size: 20 * MiB },
  { type: 'fixed', blockSize: MiB, lss: 4096, size: 6 * MiB },
];

/** Apply the same mixed workload to a VHDX and a raw oracle. */
async function workload(dev: VhdxDevice, raw: string, size: number, seed: number): Promise<void> {
  const ops: Array<[number, number]> = [[0, 4096], [1000, 3 * MiB + 17], [size - 777, 777], [Math.floor(size / 2) - 5, 2 * MiB], [5 * MiB + 3, 100]];
  for (const [i, [off, len]] of ops.entries()) {
    const o = Math.min(off, size - len);
    const data = pattern(len, seed + i);
    await dev.write(o, data);
    await rawWrite(raw, o, data);
  }
  // A zero inside written data, and a trim of a whole-block-aligned range.
  await dev.zero(2 * MiB + 100, 300000);
  await rawWrite(raw, 2 * MiB + 100, Buffer.alloc(300000));
  await dev.trim(0, Math.min(MiB, size));
  await rawWrite(raw, 0, Buffer.alloc(Math.min(MiB, size)));
}

for (const c of configs) {
  const name = `${c.type} block ${c.blockSize / MiB} MiB, ${c.lss}-byte sectors, size ${c.size}`;
  test(`interop: our ${name} passes qemu-img check and compares identical to raw`, async (t) => {
    if (!requireTools(t, 'qemu-img')) return;
    const dir = await tempDir(t, 'vhdx-interop-');
    const path = join(dir, 'd.vhdx');
    const raw = join(dir, 'd.raw');
    await rawCreate(raw, c.size);
    const dev = await VhdxDevice.create(path, { size: c.size, type: c.type, blockSize: c.blockSize, logicalSectorSize: c.lss });
    await workload(dev, raw, c.size, c.size % 1000);
    await dev.close();
    assert.equal((await checkVhdx(path)).ok, true);
    if (c.lss === 4096) {
      // qemu 7.2 does not support 4096-byte logical sectors; our own reader is compared with the oracle.
      const r = run('qemu-img', ['info', '-f', 'vhdx', path], { allowFail: true });
      assert.notEqual(r.status, 0);
      assert.match(r.stderr, /not supported/i);
      const back = await VhdxDevice.open(path, { readOnly: true });
      assert.ok((await back.read(0, c.size)).equals(await rawRead(raw, 0, c.size)));
      await back.close();
      return;
    }
    const check = run('qemu-img', ['check', '-f', 'vhdx', path], { allowFail: true });
    assert.equal(check.status, 0, check.stdout + check.stderr);
    const cmp = run('qemu-img', ['compare', '-f', 'vhdx', '-F', 'raw', path, raw], { allowFail: true });
    assert.equal(cmp.status, 0, cmp.stdout + cmp.stderr);
    assert.match(cmp.stdout, /Images are identical/);
    const info = JSON.parse(run('qemu-img', ['info', '--output=json', '-f', 'vhdx', path]).stdout) as { 'virtual-size': number; 'cluster-size': number };
    assert.equal(info['virtual-size'], c.size);
    assert.equal(info['cluster-size'], c.blockSize);
  });
}

for (const [sub, bs, logSize] of [['dynamic', 1, 1], ['dynamic', 8, 4], ['dynamic', 32, 1], ['fixed', 4, 1]] as const) {
  test(`interop: we read a qemu-img ${sub} VHDX (block ${bs} MiB, log ${logSize} MiB) exactly like qemu-img convert`, async (t) => {
    if (!requireTools(t, 'qemu-img', 'qemu-io')) return;
    const dir = await tempDir(t, 'vhdx-interop-');
    const path = join(dir, 'q.vhdx');
    const size = 48 * MiB;
    run('qemu-img', ['create', '-q', '-f', 'vhdx', '-o', `subformat=${sub},block_size=${bs}M,log_size=${logSize}M`, path, String(size)]);
    run('qemu-io', ['-f', 'vhdx', '-c', 'write -P 0xab 0 65536', '-c', 'write -P 0x5c 3145000 2000000', '-c', `write -P 0x11 ${size - 4096} 4096`, '-c', 'write -z 3200000 4096', path]);
    const dev = await VhdxDevice.open(path, { readOnly: true });
    assert.equal(dev.size, size);
    assert.equal(dev.info().blockSize, bs * MiB);
    assert.equal(dev.info().type, sub);
    const raw = join(dir, 'q.raw');
    run('qemu-img', ['convert', '-f', 'vhdx', '-O', 'raw', path, raw]);
    const mine = await dev.read(0, size);
    assert.ok(mine.equals(await rawRead(raw, 0, size)), 'content equals qemu-img convert output');
    const ext = await dev.extents(0, size);
    if (sub === 'dynamic' && bs < 16) {
      assert.equal(ext[0]!.type, 'data');
      assert.ok(ext.some((e) => e.type !== 'data'), 'unwritten blocks are not reported as data');
    }
    for (const e of ext) if (e.type !== 'data') assert.ok(mine.subarray(e.offset, e.offset + e.length).every((x) => x === 0));
    await dev.close();

    // Now we write to qemu's file; qemu must still accept it and see our data.
    const rw = await VhdxDevice.open(path);
    const more = pattern(3 * MiB + 5, 9);
    await rw.write(20 * MiB - 3, more);
    await rw.close();
    await rawWrite(raw, 20 * MiB - 3, more);
    const check = run('qemu-img', ['check', '-f', 'vhdx', path], { allowFail: true });
    assert.equal(check.status, 0, check.stdout + check.stderr);
    const cmp = run('qemu-img', ['compare', '-f', 'vhdx', '-F', 'raw', path, raw], { allowFail: true });
    assert.equal(cmp.status, 0, cmp.stdout + cmp.stderr);
  });
}

test('interop: qemu 7.2 refuses our differencing disks (no parent locator support); we read them through the chain', async (t) => {
  if (!requireTools(t, 'qemu-img')) return;
  const dir = await tempDir(t, 'vhdx-interop-');
  const base = await VhdxDevice.create(join(dir, 'base.vhdx'), { size: 8 * MiB, blockSize: MiB });
  await base.write(0, Buffer.alloc(8 * MiB, 1));
  await base.close();
  const child = await VhdxDevice.create(join(dir, 'child.avhdx'), { size: 0, parent: join(dir, 'base.vhdx') });
  await child.write(4096, Buffer.alloc(512, 2));
  await child.close();
  const r = run('qemu-img', ['info', '-f', 'vhdx', join(dir, 'child.avhdx')], { allowFail: true });
  if (r.status === 0) {
    // A qemu that understands VHDX parents: it must see the same content.
    const cmp = run('qemu-img', ['convert', '-f', 'vhdx', '-O', 'raw', join(dir, 'child.avhdx'), join(dir, 'c.raw')]);
    void cmp;
    const raw = await rawRead(join(dir, 'c.raw'), 0, 8 * MiB);
    assert.equal(raw[4096], 2);
    assert.equal(raw[0], 1);
  } else {
    assert.match(r.stderr, /not supported/i);
  }
  // The base stays a plain VHDX qemu accepts.
  assert.equal(run('qemu-img', ['check', '-f', 'vhdx', join(dir, 'base.vhdx')], { allowFail: true }).status, 0);
});

test('interop: a sparse 3 TiB dynamic disk with data past 2 TiB passes qemu-img check and qemu-io reads our bytes', async (t) => {
  if (!requireTools(t, 'qemu-img', 'qemu-io')) return;
  const dir = await tempDir(t, 'vhdx-interop-');
  const path = join(dir, 'big.vhdx');
  const size = 3 * 2 ** 40;
  const dev = await VhdxDevice.create(path, { size, blockSize: 32 * MiB });
  await dev.write(2.5 * 2 ** 40 + 4096, Buffer.alloc(65536, 0x7e));
  await dev.write(size - 512, Buffer.alloc(512, 0x3c));
  await dev.close();
  assert.equal(run('qemu-img', ['check', '-f', 'vhdx', path], { allowFail: true }).status, 0);
  const r = run('qemu-io', ['-r', '-f', 'vhdx', '-c', `read -P 0x7e ${2.5 * 2 ** 40 + 4096} 65536`, '-c', `read -P 0x3c ${size - 512} 512`, '-c', `read -P 0 ${2 ** 40} 65536`, path], { allowFail: true });
  assert.equal(r.status, 0, r.stdout + r.stderr);
  assert.doesNotMatch(r.stdout, /Pattern verification failed/);
});
