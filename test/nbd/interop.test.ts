/**
 * Real NBD clients (qemu-io, qemu-img, nbdinfo, nbdcopy) against NbdServer running in this process.
 * Tools run asynchronously (execFile): a synchronous spawn would block the event loop serving them.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, writeFile, truncate } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { NbdServer, type ExportSpec } from '../../src/nbd/NbdServer.js';
import { RawFileDevice } from '../../src/blockdev/RawFileDevice.js';
import { MemoryDevice } from '../../src/blockdev/MemoryDevice.js';
import type { ChangeSource } from '../../src/nbd/ChangeSource.js';
import { openDisk } from '../../src/disk/openDisk.js';
import * as P from '../../src/nbd/protocol.js';
import { RawClient } from './helpers/RawClient.js';
import { requireTools, tempDir } from '../helpers/tools.js';
import { exec } from './helpers/exec.js';

const MiB = 1024 * 1024;

/** Serve `exports`; after the test the server closes (flushing) and then the devices close. */
async function serve(t: TestContext, exports: ExportSpec[]): Promise<{ srv: NbdServer; port: number }> {
  const srv = new NbdServer({ exports });
  const a = (await srv.listen({ port: 0 })) as AddressInfo;
  t.after(async () => {
    await srv.close();
    for (const e of exports) await e.device.close();
  });
  return { srv, port: a.port };
}

async function rawDisk(t: TestContext, size: number): Promise<{ path: string; dev: RawFileDevice }> {
  const dir = await tempDir(t);
  const path = join(dir, 'disk.raw');
  await writeFile(path, '');
  await truncate(path, size);
  const dev = await RawFileDevice.open(path);
  return { path, dev };
}

test('qemu-io write/read/zero/discard patterns land in the file', async (t) => {
  if (!requireTools(t, 'qemu-io')) return;
  const { path, dev } = await rawDisk(t, 16 * MiB);
  const { srv, port } = await serve(t, [{ name: 'disk', device: dev }]);
  const url = `nbd://127.0.0.1:${port}/disk`;
  const io = (...cmds: string[]): Promise<{ stdout: string }> => exec('qemu-io', ['-f', 'raw', ...cmds.flatMap((c) => ['-c', c]), url]);
  await io('write -P 0xa5 0 1M', 'write -P 0x3c 1M 64k', 'write -P 0x11 5000 3000', 'write -z 2M 1M', 'write -P 0x77 4M 1M', 'discard 4M 512k', 'aio_write -P 0x42 8M 256k', 'aio_write -P 0x43 9M 256k', 'aio_flush', 'flush');
  const r = await io('read -P 0xa5 0 4096', 'read -P 0x11 5000 3000', 'read -P 0x3c 1M 64k', 'read -P 0 2M 1M', 'read -P 0 4M 512k', 'read -P 0x77 4608k 512k', 'read -P 0x42 8M 256k', 'read -P 0x43 9M 256k');
  assert.doesNotMatch(r.stdout, /Pattern verification failed/);
  // The verifier can fail: a wrong pattern is reported.
  const bad = await exec('qemu-io', ['-f', 'raw', '-c', 'read -P 0x99 0 4096', url], { allowFail: true });
  assert.match(bad.stdout + bad.stderr, /Pattern verification failed/);
  await srv.close();
  const f = await readFile(path);
  const expect = Buffer.alloc(16 * MiB);
  expect.fill(0xa5, 0, MiB);
  expect.fill(0x11, 5000, 8000);
  expect.fill(0x3c, MiB, MiB + 65536);
  expect.fill(0x77, 4 * MiB + 512 * 1024, 5 * MiB);
  expect.fill(0x42, 8 * MiB, 8 * MiB + 256 * 1024);
  expect.fill(0x43, 9 * MiB, 9 * MiB + 256 * 1024);
  assert.ok(f.equals(expect), 'file content matches every pattern written over NBD');
});

test('qemu-img convert both ways, compare and map over nbd://', async (t) => {
  if (!requireTools(t, 'qemu-img')) return;
  const dir = await tempDir(t);
  const src = join(dir, 'src.raw');
  await exec('qemu-img', ['create', '-f', 'raw', src, '32M']);
  await exec('qemu-io', ['-f', 'raw', '-c', 'write -P 0x61 0 3M', '-c', 'write -P 0x62 20M 1M', src]);
  const { path, dev } = await rawDisk(t, 32 * MiB);
  const { port } = await serve(t, [{ name: 'disk', device: dev }]);
  const url = `nbd://127.0.0.1:${port}/disk`;
  await exec('qemu-img', ['convert', '-n', '-f', 'raw', '-O', 'raw', src, url]);
  await exec('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', src, url]);
  const back = join(dir, 'back.raw');
  await exec('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', url, back]);
  assert.ok((await readFile(back)).equals(await readFile(src)));
  assert.ok((await readFile(path)).equals(await readFile(src)));
  const map = JSON.parse((await exec('qemu-img', ['map', '--output=json', '-f', 'raw', url])).stdout) as Array<{ start: number; length: number; data: boolean; zero: boolean }>;
  const dataRanges = map.filter((m) => m.data).map((m) => [m.start, m.start + m.length]);
  assert.deepEqual(dataRanges, [[0, 3 * MiB], [20 * MiB, 21 * MiB]]);
  // compare notices a difference
  await exec('qemu-io', ['-f', 'raw', '-c', 'write -P 0x01 30M 4k', url]);
  const diff = await exec('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', src, url], { allowFail: true });
  assert.equal(diff.status, 1);
});

test('nbdinfo --list shows every export; --map reports base:allocation and tidemark:changes', async (t) => {
  if (!requireTools(t, 'nbdinfo')) return;
  const a = new MemoryDevice(8 * MiB);
  await a.write(2 * MiB, Buffer.alloc(MiB, 1));
  const b = new MemoryDevice(MiB);
  const changes: ChangeSource = {
    async changesSince(id, offset, length) {
      if (id !== 'rct-1') throw new Error('unknown');
      return [{ offset: MiB, length: 512 * 1024 }].filter((r) => r.offset < offset + length && r.offset + r.length > offset);
    },
    async listIds() {
      return ['rct-1'];
    },
  };
  const { port } = await serve(t, [
    { name: 'vm-a', description: 'first disk', device: a, changes },
    { name: 'vm-b', device: b, readOnly: true },
  ]);
  const list = JSON.parse((await exec('nbdinfo', ['--list', '--json', `nbd://127.0.0.1:${port}`])).stdout) as { exports: Array<Record<string, unknown>> };
  const byName = new Map(list.exports.map((e) => [e['export-name'], e]));
  assert.deepEqual([...byName.keys()].sort(), ['vm-a', 'vm-b']);
  assert.equal(byName.get('vm-a')!['description'], 'first disk');
  assert.equal(byName.get('vm-a')!['export-size'], 8 * MiB);
  assert.equal(byName.get('vm-b')!['is_read_only'], true);
  assert.ok((byName.get('vm-a')!['contexts'] as string[]).includes('tidemark:changes:rct-1'));
  const map = JSON.parse((await exec('nbdinfo', ['--map', '--json', `nbd://127.0.0.1:${port}/vm-a`])).stdout) as Array<{ offset: number; length: number; type: number }>;
  assert.deepEqual(map.map((m) => [m.offset, m.length, m.type]), [[0, 2 * MiB, 3], [2 * MiB, MiB, 0], [3 * MiB, 5 * MiB, 3]]);
  const ch = JSON.parse((await exec('nbdinfo', ['--map=tidemark:changes:rct-1', '--json', `nbd://127.0.0.1:${port}/vm-a`])).stdout) as Array<{ offset: number; length: number; type: number }>;
  assert.deepEqual(ch.map((m) => [m.offset, m.length, m.type]), [[0, MiB, 0], [MiB, 512 * 1024, 1], [MiB + 512 * 1024, 8 * MiB - MiB - 512 * 1024, 0]]);
  // An ID the source does not know is not selected: the client gets no such context.
  const bad = await exec('nbdinfo', ['--map=tidemark:changes:nope', `nbd://127.0.0.1:${port}/vm-a`], { allowFail: true });
  assert.notEqual(bad.status, 0);
  // qemu reads it exactly like one of its dirty bitmaps (x-dirty-bitmap reports dirty as "not data").
  if (!requireTools(t, 'qemu-img')) return;
  const qmap = JSON.parse(
    (await exec('qemu-img', ['map', '--output=json', '--image-opts', `driver=nbd,host=127.0.0.1,port=${port},export=vm-a,x-dirty-bitmap=tidemark:changes:rct-1`])).stdout,
  ) as Array<{ start: number; length: number; data: boolean }>;
  assert.deepEqual(qmap.filter((m) => !m.data).map((m) => [m.start, m.length]), [[MiB, 512 * 1024]]);
});

test('nbdcopy both ways over a unix socket, with multi-conn', async (t) => {
  if (!requireTools(t, 'nbdcopy', 'qemu-img')) return;
  const dir = await tempDir(t);
  const src = join(dir, 'src.raw');
  await exec('qemu-img', ['create', '-f', 'raw', src, '24M']);
  await exec('qemu-io', ['-f', 'raw', '-c', 'write -P 0x71 1M 5M', '-c', 'write -P 0x72 17M 3M', src]);
  const { path, dev } = await rawDisk(t, 24 * MiB);
  const sock = join(dir, 'nbd.sock');
  const srv = new NbdServer({ exports: [{ name: 'disk', device: dev }] });
  await srv.listen({ path: sock });
  t.after(async () => {
    await srv.close();
    await dev.close();
  });
  const url = `nbd+unix:///disk?socket=${sock}`;
  await exec('nbdcopy', ['--connections=4', '--requests=16', src, url]);
  assert.ok((await readFile(path)).equals(await readFile(src)));
  const back = join(dir, 'back.raw');
  await writeFile(back, '');
  await truncate(back, 24 * MiB);
  await exec('nbdcopy', ['--connections=4', url, back]);
  assert.ok((await readFile(back)).equals(await readFile(src)));
});

test('a real VHDX served in-process: recycled read buffers never leak old data into unallocated ranges', async (t) => {
  if (!requireTools(t, 'qemu-img', 'qemu-io')) return;
  const dir = await tempDir(t);
  const path = join(dir, 'd.vhdx');
  await exec('qemu-img', ['create', '-f', 'vhdx', '-o', 'block_size=1M', path, '64M']);
  await exec('qemu-io', ['-f', 'vhdx', '-c', 'write -P 0xe1 0 1M', '-c', 'write -P 0xe2 40M 512k', path]);
  const dev = await openDisk(path);
  const { port } = await serve(t, [{ name: 'v', device: dev }]);
  const expect = Buffer.alloc(48 * MiB);
  expect.fill(0xe1, 0, MiB);
  expect.fill(0xe2, 40 * MiB, 40 * MiB + 512 * 1024);
  for (const opts of [{ structured: false }, { structured: true }]) {
    const c = await RawClient.open({ port }, { name: 'v', ...opts });
    t.after(() => c.close());
    // Fill the pool with buffers full of 0xe1/0xe2 data, then read mostly-unallocated ranges through them.
    for (let round = 0; round < 2; round++) {
      const reads = [];
      for (let off = 0; off < 48 * MiB; off += 4 * MiB) reads.push(c.request(P.CMD_READ, { offset: off, length: 4 * MiB, flags: opts.structured ? P.CMD_FLAG_DF : 0 }).then((r) => ({ off, r })));
      for (const { off, r } of await Promise.all(reads)) {
        assert.equal(r.error, 0);
        assert.ok(r.data!.equals(expect.subarray(off, off + 4 * MiB)), `read at ${off} (${JSON.stringify(opts)}, round ${round})`);
      }
    }
  }
});
