import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { BlockDevice } from '../../src/blockdev/BlockDevice.js';
import { DiskLock } from '../../src/blockdev/DiskLock.js';
import { RawFileDevice } from '../../src/blockdev/RawFileDevice.js';
import { childOwnRanges } from '../../src/disk/mergeDisk.js';
import { openDisk } from '../../src/disk/openDisk.js';
import { ExitCode } from '../../src/errors.js';
import { openTrackedDisk } from '../../src/rct/openTrackedDisk.js';
import type { Range } from '../../src/rct/Range.js';
import { isTracked, openTracked } from '../../src/rct/trackingLayer.js';
import { VhdxDevice } from '../../src/vhdx/VhdxDevice.js';
import { tempDir } from '../helpers/tools.js';
import { blocksOf } from './rctTestKit.js';

/**
 * RCT across Tidemark operations that change a disk outside the tracking layer: `tidemark disk resize`
 * (raw and VHDX, grow and shrink) and `tidemark disk merge` into a tracked parent, through the real CLI;
 * and a read-write open of a raw disk without writes, which must leave its tracking valid.
 */

const MAIN = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
const KiB = 1024;
const MiB = 1024 * KiB;
const BS = 64 * KiB;

function cli(...args: string[]): Promise<{ status: number; stdout: string; stderr: string }> {
  return new Promise((res, rej) => {
    const c = spawn(process.execPath, [MAIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    c.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    c.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    c.on('error', rej);
    c.on('close', (code, signal) => res({ status: code ?? (signal ? 128 : -1), stdout, stderr }));
  });
}
async function ok(...args: string[]): Promise<string> {
  const r = await cli(...args);
  assert.equal(r.status, 0, `tidemark ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}
async function seal(disk: string): Promise<string> {
  return (JSON.parse(await ok('rct', 'seal', disk, '--json')) as { id: string }).id;
}
async function changes(disk: string, since: string): Promise<Range[]> {
  return (JSON.parse(await ok('rct', 'changes', disk, '--since', since, '--json')) as { ranges: Range[] }).ranges;
}

/** Write through Tidemark (tracked), each write a distinct pattern. */
async function tidemarkWrite(disk: string, writes: Array<[number, number]>, fill = 0x5a): Promise<void> {
  const dev = await openTrackedDisk(disk);
  assert.ok(isTracked(dev), 'a disk with tracking enabled opens tracked');
  for (const [off, len] of writes) await dev.write(off, Buffer.alloc(len, fill));
  await dev.close();
}

/** The verdict a tracked writable open reaches now (clean = older IDs trusted exactly). */
async function verdictNow(disk: string): Promise<string | undefined> {
  const dev = await openTrackedDisk(disk);
  assert.ok(isTracked(dev));
  const v = dev.status().verdict;
  await dev.close();
  return v;
}

async function readAll(disk: string): Promise<Buffer> {
  const dev = await openDisk(disk, { readOnly: true });
  try {
    return await dev.read(0, dev.size);
  } finally {
    await dev.close();
  }
}

/** Every byte that differs between a and b (same length) lies inside `ranges`. */
function assertCovers(ranges: Range[], a: Buffer, b: Buffer, what: string): void {
  assert.equal(a.length, b.length);
  let r = 0;
  for (let i = 0; i < a.length; i++) {
    if (a[i] === b[i]) continue;
    while (r < ranges.length && ranges[r]!.offset + ranges[r]!.length <= i) r++;
    const hit = ranges[r];
    assert.ok(hit && hit.offset <= i, `${what}: byte ${i} changed but is not reported (ranges ${JSON.stringify(ranges)})`);
  }
}

const blocks = (ranges: Range[]) => [...blocksOf(ranges, BS)].sort((x, y) => x - y);

for (const format of ['raw', 'vhdx'] as const) {
  test(`resize (${format}): growing through \`tidemark disk resize\` keeps older IDs and reports the new area`, async (t) => {
    const dir = await tempDir(t, 'tidemark-rctint-');
    const disk = join(dir, `disk.${format}`);
    // Raw: an odd size, so the old partial last block becomes part of the new area.
    const size = format === 'raw' ? 8 * MiB + 3 * 512 : 8 * MiB;
    if (format === 'raw') await (await RawFileDevice.create(disk, size)).close();
    else await ok('disk', 'create', disk, '--size', String(size), '--block-size', '1M');
    await ok('rct', 'enable', disk, '--block-size', '64K');
    await tidemarkWrite(disk, [[0, 4096]]);
    const id1 = await seal(disk);
    await tidemarkWrite(disk, [[MiB, 4096], [3 * MiB + 100, 70 * KiB]]);

    await new Promise((r) => setTimeout(r, 20)); // any timestamp change by the resize would show
    const res = JSON.parse(await ok('disk', 'resize', disk, '--size', String(12 * MiB), '--json'));
    assert.equal(res.newSize, 12 * MiB);
    assert.equal(res.tracking.tracked, true);
    assert.equal(res.tracking.grewFrom, size);
    assert.equal(res.tracking.restarted, undefined);

    const newArea = { offset: 8 * MiB, length: 4 * MiB };
    assert.deepEqual(await changes(disk, id1), [{ offset: MiB, length: BS }, { offset: 3 * MiB, length: 2 * BS }, newArea]);
    assert.equal(await verdictNow(disk), 'clean', 'the resize was re-bound: the next open trusts the state exactly');
    // Writes after the resize, including in the new area, are tracked as usual.
    const id2 = await seal(disk);
    await tidemarkWrite(disk, [[11 * MiB, 10]]);
    assert.deepEqual(await changes(disk, id2), [{ offset: 11 * MiB, length: BS }]);
    assert.deepEqual(await changes(disk, id1), [{ offset: MiB, length: BS }, { offset: 3 * MiB, length: 2 * BS }, newArea]);
    const st = JSON.parse(await ok('rct', 'status', disk, '--json'));
    assert.equal(st.diskSize, 12 * MiB);
  });

  test(`resize (${format}): shrinking invalidates older IDs with a message saying the disk shrank (exit 6)`, async (t) => {
    const dir = await tempDir(t, 'tidemark-rctint-');
    const disk = join(dir, `disk.${format}`);
    if (format === 'raw') await (await RawFileDevice.create(disk, 8 * MiB)).close();
    else await ok('disk', 'create', disk, '--size', '8M', '--block-size', '1M');
    await ok('rct', 'enable', disk);
    await tidemarkWrite(disk, [[0, 4096]]);
    const id1 = await seal(disk);
    await tidemarkWrite(disk, [[MiB, 4096]]);

    const refused = await cli('disk', 'resize', disk, '--size', '4M');
    assert.equal(refused.status, ExitCode.USAGE, 'shrinking needs --force');
    assert.deepEqual(await changes(disk, id1), [{ offset: MiB, length: BS }], 'a refused shrink changes nothing');

    const res = JSON.parse(await ok('disk', 'resize', disk, '--size', '4M', '--force', '--json'));
    assert.match(res.tracking.restarted, /shrank from 8388608 to 4194304 bytes/);
    const r = await cli('rct', 'changes', disk, '--since', id1);
    assert.equal(r.status, ExitCode.TRACKING_INVALID, r.stderr);
    assert.match(r.stderr, /the disk shrank from 8388608 to 4194304 bytes/);
    assert.match(r.stderr, /full/);
    // Tracking restarted cleanly: new IDs work at the new size.
    const id2 = await seal(disk);
    await tidemarkWrite(disk, [[2 * MiB, 1]]);
    assert.deepEqual(await changes(disk, id2), [{ offset: 2 * MiB, length: BS }]);
    assert.equal(JSON.parse(await ok('rct', 'status', disk, '--json')).diskSize, 4 * MiB);
  });
}

test('resize of a tracked disk is refused while another process holds it; untracked resize is unchanged', async (t) => {
  const dir = await tempDir(t, 'tidemark-rctint-');
  const disk = join(dir, 'disk.raw');
  await (await RawFileDevice.create(disk, 4 * MiB)).close();
  await ok('disk', 'resize', disk, '--size', '5M');
  assert.equal((await stat(disk)).size, 5 * MiB);
  await assert.rejects(stat(`${disk}.lock`), 'an untracked resize takes no lock (unchanged behaviour)');

  await ok('rct', 'enable', disk);
  const lock = await DiskLock.acquire(disk, { exclusive: true, holder: 'test writer' });
  try {
    const r = await cli('disk', 'resize', disk, '--size', '6M');
    assert.equal(r.status, ExitCode.IN_USE, r.stderr);
    assert.match(r.stderr, /test writer/);
    assert.equal((await stat(disk)).size, 5 * MiB, 'nothing changed');
  } finally {
    await lock.release();
  }
});

test('merge of a differencing child into a tracked parent: changes since an older ID cover every changed byte', async (t) => {
  const dir = await tempDir(t, 'tidemark-rctint-');
  const parent = join(dir, 'parent.vhdx');
  const child = join(dir, 'child.vhdx');
  await ok('disk', 'create', parent, '--size', '24M', '--block-size', '1M');
  await ok('rct', 'enable', parent, '--block-size', '64K');
  await tidemarkWrite(parent, [[0, 24 * MiB]], 0x11);
  const id1 = await seal(parent);
  await tidemarkWrite(parent, [[20 * MiB, 4096]], 0x22);
  const id2 = await seal(parent);

  await ok('disk', 'create', child, '--parent', parent);
  const c = await VhdxDevice.open(child);
  await c.write(2 * MiB, Buffer.alloc(MiB, 0x33)); // a whole block
  await c.write(5 * MiB + 512, Buffer.alloc(1024, 0x44)); // two sectors: a partially present block
  await c.write(9 * MiB + 300 * KiB, Buffer.alloc(200 * KiB, 0x55));
  await c.write(12 * MiB + 700 * KiB, Buffer.alloc(5000, 0x11)); // same bytes as the parent: no content change
  await c.zero(15 * MiB, MiB); // hides the parent's data
  await c.trim(17 * MiB, 64 * KiB);
  await c.close();

  const own = await childOwnRanges(child);
  assert.ok(own.length >= 4, `the child holds its own ranges: ${JSON.stringify(own)}`);
  const before = await readAll(parent);
  const viaChild = await readAll(child);
  const res = JSON.parse(await ok('disk', 'merge', child, '--json'));
  await assert.rejects(stat(child), 'the child is gone');
  const after = await readAll(parent);
  assert.ok(after.equals(viaChild), 'the merged parent reads as the child did');
  assert.ok(!after.equals(before));
  assert.deepEqual(res.tracking.marked, own, 'the merge marked exactly the child\'s own ranges');

  const since1 = await changes(parent, id1);
  const since2 = await changes(parent, id2);
  assertCovers(since2, before, after, 'changes since an ID sealed before the merge');
  assertCovers(since1, before, after, 'changes since an older ID');
  assert.deepEqual(blocks(since2), blocks(own), 'exactly the blocks the merge rewrote');
  assert.deepEqual(blocks(since1), [...new Set([...blocks(own), (20 * MiB) / BS])].sort((x, y) => x - y));
  assert.equal(await verdictNow(parent), 'clean', 'the parent\'s new DataWriteGuid was recorded');
  assert.deepEqual(await changes(parent, id2), since2, 'older IDs stay valid after a tracked open');
});

test('merge into an untracked parent still works and reports no tracking', async (t) => {
  const dir = await tempDir(t, 'tidemark-rctint-');
  const parent = join(dir, 'parent.vhdx');
  const child = join(dir, 'child.vhdx');
  await ok('disk', 'create', parent, '--size', '4M', '--block-size', '1M');
  await ok('disk', 'create', child, '--parent', parent);
  const c = await VhdxDevice.open(child);
  await c.write(MiB, Buffer.alloc(4096, 7));
  await c.close();
  const res = JSON.parse(await ok('disk', 'merge', child, '--json'));
  assert.equal(res.tracking, undefined);
  assert.equal((await readAll(parent))[MiB], 7);
});

test('a read-write open of a raw disk without writes keeps tracking valid (no fingerprintBeforeOpen)', async (t) => {
  const dir = await tempDir(t, 'tidemark-rctint-');
  const disk = join(dir, 'disk.raw');
  await (await RawFileDevice.create(disk, 4 * MiB)).close();
  await ok('rct', 'enable', disk);
  await tidemarkWrite(disk, [[0, 1]]);
  const id = await seal(disk);
  await tidemarkWrite(disk, [[2 * MiB, 1]]);
  for (let i = 0; i < 2; i++) {
    await new Promise((r) => setTimeout(r, 30));
    const raw: BlockDevice = await RawFileDevice.open(disk);
    const dev = await openTracked(raw, disk); // fingerprint taken after the open, on purpose
    assert.equal(dev.status().verdict, 'clean', 'the open did not look like an outside write');
    assert.deepEqual(await dev.changes(id), [{ offset: 2 * MiB, length: BS }]);
    await dev.close();
  }
  assert.deepEqual(await changes(disk, id), [{ offset: 2 * MiB, length: BS }]);
});
