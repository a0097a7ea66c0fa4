import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { open, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DiskLock } from '../../src/blockdev/DiskLock.js';
import { RawFileDevice } from '../../src/blockdev/RawFileDevice.js';
import { ExitCode } from '../../src/errors.js';
import { startControlServer } from '../../src/rct/control.js';
import { openTrackedDisk } from '../../src/rct/openTrackedDisk.js';
import { isTracked } from '../../src/rct/trackingLayer.js';
import { requireTools, run, tempDir } from '../helpers/tools.js';

const MAIN = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
const MiB = 1024 * 1024;

/** Run the real CLI asynchronously (the control server may live in this process). */
function cli(...args: string[]): Promise<{ status: number; stdout: string; stderr: string }> {
  return new Promise((res) => {
    execFile(process.execPath, [MAIN, ...args], { encoding: 'utf8' }, (err, stdout, stderr) => {
      const status = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : -1) : 0;
      res({ status, stdout, stderr });
    });
  });
}
async function ok(...args: string[]): Promise<string> {
  const r = await cli(...args);
  assert.equal(r.status, 0, `tidemark ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

/** Write through Tidemark (the library path every writer uses). */
async function tidemarkWrite(disk: string, writes: Array<[number, number]>): Promise<void> {
  const dev = await openTrackedDisk(disk);
  assert.ok(isTracked(dev), 'a disk with tracking enabled opens tracked');
  for (const [off, len] of writes) await dev.write(off, Buffer.alloc(len, 0x5a));
  await dev.close();
}

test('cli: enable, seal, changes, drop, outside writer, disable on a raw disk', async (t) => {
  const dir = await tempDir(t, 'tidemark-rct-cli-');
  const disk = join(dir, 'disk.raw');
  await (await RawFileDevice.create(disk, 256 * MiB)).close();

  assert.equal((await cli('rct', 'enable', disk, '--block-size', '3000')).status, ExitCode.USAGE);
  await ok('rct', 'enable', disk, '--block-size', '64K');
  const st = JSON.parse(await ok('rct', 'status', disk, '--json'));
  assert.equal(st.enabled, true);
  assert.equal(st.blockSize, 65536);
  assert.deepEqual(st.liveIds, []);

  const id1 = JSON.parse(await ok('rct', 'seal', disk, '--json')).id as string;
  assert.match(id1, /^rct:/);
  await tidemarkWrite(disk, [[100, 10], [200 * MiB, MiB + 1]]);
  const id2 = (await ok('rct', 'seal', disk)).trim();
  await tidemarkWrite(disk, [[5 * MiB, 4096]]);

  const c1 = JSON.parse(await ok('rct', 'changes', disk, '--since', id1, '--json'));
  assert.deepEqual(c1.ranges, [{ offset: 0, length: 65536 }, { offset: 5 * MiB, length: 65536 }, { offset: 200 * MiB, length: MiB + 65536 }]);
  assert.equal(c1.changedBytes, 65536 * 2 + MiB + 65536);
  const c12 = JSON.parse(await ok('rct', 'changes', disk, '--since', id1, '--until', id2, '--json'));
  assert.deepEqual(c12.ranges, [{ offset: 0, length: 65536 }, { offset: 200 * MiB, length: MiB + 65536 }]);
  assert.match(await ok('rct', 'changes', disk, '--since', id2), /^5242880\t65536\n# 1 range/);
  const st2 = JSON.parse(await ok('rct', 'status', disk, '--json'));
  assert.deepEqual(st2.liveIds.map((x: { id: string }) => x.id), [id1, id2]);
  assert.equal(st2.lastCloseClean, true);

  await ok('rct', 'drop', disk, id1);
  const dropped = await cli('rct', 'changes', disk, '--since', id1);
  assert.equal(dropped.status, ExitCode.NOT_FOUND);
  assert.match(dropped.stderr, /dropped/);

  // a writer outside Tidemark
  await new Promise((r) => setTimeout(r, 20));
  const fh = await open(disk, 'r+');
  await fh.write(Buffer.from('x'), 0, 1, 7 * MiB);
  await fh.close();
  const inv = await cli('rct', 'changes', disk, '--since', id2, '--json');
  assert.equal(inv.status, ExitCode.TRACKING_INVALID);
  assert.equal(JSON.parse(inv.stdout).error.code, 'E_RCT_INVALID');
  assert.match(inv.stderr, /full/);
  // tracking restarts: a new seal works
  const id3 = (await ok('rct', 'seal', disk)).trim();
  assert.deepEqual(JSON.parse(await ok('rct', 'changes', disk, '--since', id3, '--json')).ranges, []);

  await ok('rct', 'disable', disk);
  assert.equal(JSON.parse(await ok('rct', 'status', disk, '--json')).enabled, false);
  const off = await cli('rct', 'changes', disk, '--since', id3);
  assert.equal(off.status, ExitCode.USAGE);
  assert.match(off.stderr, /not enabled/);
});

test('cli: a missing disk is not found, a never-enabled disk is a usage error, a corrupt disk cannot be enabled', async (t) => {
  if (!requireTools(t, 'qemu-img')) return;
  const dir = await tempDir(t, 'tidemark-rct-errs-');
  const missing = join(dir, 'nope.raw');
  for (const args of [['status', missing], ['status', missing, '--json'], ['seal', missing], ['changes', missing, '--since', 'rct:x'], ['enable', missing]]) {
    const r = await cli('rct', ...args);
    assert.equal(r.status, ExitCode.NOT_FOUND, `rct ${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, /not found/);
  }

  const disk = join(dir, 'plain.raw');
  await (await RawFileDevice.create(disk, 16 * MiB)).close();
  assert.equal(JSON.parse(await ok('rct', 'status', disk, '--json')).enabled, false, 'an existing untracked disk: status says so, exit 0');
  for (const args of [['seal', disk], ['changes', disk, '--since', 'rct:x'], ['drop', disk, 'rct:x']]) {
    const r = await cli('rct', ...args);
    assert.equal(r.status, ExitCode.USAGE, `rct ${args.join(' ')}: ${r.stderr}`);
    assert.ok(r.stderr.includes(`tidemark rct enable ${disk}`), r.stderr);
  }
  const j = await cli('rct', 'seal', disk, '--json');
  assert.equal(JSON.parse(j.stdout).error.code, 'E_RCT_NOT_ENABLED');

  // a VHDX whose both headers are destroyed: enabling refuses (exit 4) and writes no tracking file
  const bad = join(dir, 'bad.vhdx');
  run('qemu-img', ['create', '-q', '-f', 'vhdx', bad, '64M']);
  const fh = await open(bad, 'r+');
  await fh.write(Buffer.alloc(4096, 0xee), 0, 4096, 64 * 1024);
  await fh.write(Buffer.alloc(4096, 0xee), 0, 4096, 128 * 1024);
  await fh.close();
  const e = await cli('rct', 'enable', bad);
  assert.equal(e.status, ExitCode.CORRUPT, e.stderr);
  assert.equal(JSON.parse(await ok('rct', 'status', bad, '--json')).enabled, false, 'no tracking file was written');
});

test('cli: a served disk is sealed and queried through its control socket', async (t) => {
  const dir = await tempDir(t, 'tidemark-rct-ctl-');
  const disk = join(dir, 'disk.raw');
  await (await RawFileDevice.create(disk, 64 * MiB)).close();
  await ok('rct', 'enable', disk);
  const dev = await openTrackedDisk(disk);
  assert.ok(isTracked(dev));
  const server = await startControlServer(disk, dev);
  t.after(() => server.close());
  await assert.rejects(startControlServer(disk, dev), /in use/);

  const id = JSON.parse(await ok('rct', 'seal', disk, '--json')).id as string;
  await dev.write(10 * MiB, Buffer.alloc(70_000, 1));
  const c = JSON.parse(await ok('rct', 'changes', disk, '--since', id, '--json'));
  assert.deepEqual(c.ranges, [{ offset: 10 * MiB, length: 2 * 65536 }]);
  const st = JSON.parse(await ok('rct', 'status', disk, '--json'));
  assert.equal(st.verdict, 'bound', 'answered by the serving process (its open bound the fresh tracking state)');
  assert.deepEqual(st.liveIds.map((x: { id: string }) => x.id), [id]);
  const bad = await cli('rct', 'changes', disk, '--since', id.replace(/.$/, (ch) => (ch === '0' ? '1' : '0')));
  assert.equal(bad.status, ExitCode.NOT_FOUND, 'typed errors cross the socket');
  assert.equal((await cli('rct', 'disable', disk)).status, ExitCode.IN_USE);
  await ok('rct', 'drop', disk, id);
  assert.deepEqual(dev.status().liveIds, []);

  await server.close();
  // locked by a process that has no control socket: refused, naming it
  const lock = await DiskLock.acquire(disk, { exclusive: true, holder: 'rct cli test writer' });
  const busy = await cli('rct', 'seal', disk);
  assert.equal(busy.status, ExitCode.IN_USE);
  assert.match(busy.stderr, new RegExp(`in use by PID ${process.pid}`));
  await lock.release();
  await dev.close();
  // a stale socket file (its server died) does not stand in the way
  await writeFile(`${disk}.ctl`, '');
  assert.deepEqual(JSON.parse(await ok('rct', 'status', disk, '--json')).liveIds, []);
});

test('cli: a real VHDX: DataWriteGuid identity accepts our writes and rejects qemu-io\'s', async (t) => {
  if (!requireTools(t, 'qemu-img', 'qemu-io')) return;
  const dir = await tempDir(t, 'tidemark-rct-vhdx-');
  const disk = join(dir, 'disk.vhdx');
  run('qemu-img', ['create', '-q', '-f', 'vhdx', disk, '1G']);
  await ok('rct', 'enable', disk);
  const id = (await ok('rct', 'seal', disk)).trim();
  await tidemarkWrite(disk, [[300 * MiB, 8192]]);
  await tidemarkWrite(disk, [[301 * MiB, 8192]]);
  assert.deepEqual(JSON.parse(await ok('rct', 'changes', disk, '--since', id, '--json')).ranges, [
    { offset: 300 * MiB, length: 65536 },
    { offset: 301 * MiB, length: 65536 },
  ]);
  run('qemu-io', ['-f', 'vhdx', '-c', `write -P 0x11 ${500 * MiB} 4096`, disk]);
  const r = await cli('rct', 'changes', disk, '--since', id);
  assert.equal(r.status, ExitCode.TRACKING_INVALID, r.stderr);
  assert.match(r.stderr, /written outside Tidemark/);
});
