/**
 * `tidemark serve` as a child process: readiness line, real clients, disk locking, change tracking through
 * the control socket and tidemark:changes, clean SIGTERM shutdown.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { requireTools, tempDir } from '../helpers/tools.js';
import { exec } from './helpers/exec.js';

const MAIN = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
const MiB = 1024 * 1024;

interface Ready {
  listening: { host?: string; port?: number; socket?: string };
  tls: string;
  exports: Array<{ name: string; uri: string; size: number; tracked: boolean; readOnly: boolean; path: string }>;
}

function tidemark(args: string[], opts: { allowFail?: boolean } = {}): Promise<{ status: number; stdout: string; stderr: string }> {
  return exec(process.execPath, [MAIN, ...args], opts);
}

/** Start `tidemark serve` and wait for its JSON readiness line. */
async function startServe(t: TestContext, args: string[]): Promise<{ child: ChildProcess; ready: Ready; stderr: () => string; exited: Promise<number | null> }> {
  const child = spawn(process.execPath, [MAIN, 'serve', '--json', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  t.after(() => {
    if (child.exitCode === null) child.kill('SIGKILL');
  });
  const ready = await new Promise<Ready>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`serve did not get ready: ${err}`)), 15_000);
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const nl = out.indexOf('\n');
      if (nl >= 0) {
        clearTimeout(timer);
        resolve(JSON.parse(out.slice(0, nl)) as Ready);
      }
    });
    void exited.then((code) => reject(new Error(`serve exited ${code}: ${err}`)));
  });
  return { child, ready, stderr: () => err, exited };
}

test('serve: two disks as named exports, qemu-io writes land in the files, SIGTERM exits 0 after draining', async (t) => {
  if (!requireTools(t, 'qemu-img', 'qemu-io', 'nbdinfo')) return;
  const dir = await tempDir(t);
  const a = join(dir, 'a.raw');
  const b = join(dir, 'b.img');
  await exec('qemu-img', ['create', '-f', 'raw', a, '8M']);
  await exec('qemu-img', ['create', '-f', 'raw', b, '4M']);
  const { child, ready, stderr, exited } = await startServe(t, [a, b, '--listen', '127.0.0.1:0']);
  assert.match(stderr(), /listening on 127\.0\.0\.1:\d+/);
  assert.deepEqual(ready.exports.map((e) => [e.name, e.size]), [['a.raw', 8 * MiB], ['b.img', 4 * MiB]]);
  const list = JSON.parse((await exec('nbdinfo', ['--list', '--json', `nbd://127.0.0.1:${ready.listening.port}`])).stdout) as { exports: Array<{ 'export-name': string }> };
  assert.deepEqual(list.exports.map((e) => e['export-name']).sort(), ['a.raw', 'b.img']);
  await exec('qemu-io', ['-f', 'raw', '-c', 'write -P 0x6d 1M 1M', ready.exports[0]!.uri]);
  await exec('qemu-io', ['-f', 'raw', '-c', 'write -P 0x6e 0 4k', ready.exports[1]!.uri]);
  // The disk is locked while served: a second server on the same file is refused (exit 5, in use).
  const second = await tidemark(['serve', a, '--listen', '127.0.0.1:0'], { allowFail: true });
  assert.equal(second.status, 5);
  assert.match(second.stderr, /in use/);
  child.kill('SIGTERM');
  assert.equal(await exited, 0);
  assert.match(stderr(), /stopped/);
  const fa = await readFile(a);
  assert.ok(fa.subarray(MiB, 2 * MiB).equals(Buffer.alloc(MiB, 0x6d)));
  assert.ok(fa.subarray(0, MiB).equals(Buffer.alloc(MiB)));
  assert.ok((await readFile(b)).subarray(0, 4096).equals(Buffer.alloc(4096, 0x6e)));
});

test('serve: SIGINT (Ctrl-C) exits 0 after draining, like SIGTERM', async (t) => {
  if (!requireTools(t, 'qemu-img', 'qemu-io')) return;
  const dir = await tempDir(t);
  const a = join(dir, 'a.raw');
  await exec('qemu-img', ['create', '-f', 'raw', a, '4M']);
  const { child, ready, stderr, exited } = await startServe(t, [a, '--listen', '127.0.0.1:0']);
  await exec('qemu-io', ['-f', 'raw', '-c', 'write -P 0x3c 64k 128k', ready.exports[0]!.uri]);
  child.kill('SIGINT');
  assert.equal(await exited, 0, stderr());
  assert.match(stderr(), /stopped/);
  assert.ok((await readFile(a)).subarray(64 * 1024, 192 * 1024).equals(Buffer.alloc(128 * 1024, 0x3c)));
  // the lock went with it: the disk can be served again at once
  const again = await startServe(t, [a, '--listen', '127.0.0.1:0']);
  again.child.kill('SIGTERM');
  assert.equal(await again.exited, 0);
});

test('serve: --read-only, --name and a unix --socket', async (t) => {
  if (!requireTools(t, 'qemu-img', 'qemu-io')) return;
  const dir = await tempDir(t);
  const a = join(dir, 'a.raw');
  await exec('qemu-img', ['create', '-f', 'raw', a, '2M']);
  await exec('qemu-io', ['-f', 'raw', '-c', 'write -P 0x12 0 64k', a]);
  const sock = join(dir, 's.sock');
  const { child, ready, exited } = await startServe(t, [a, '--read-only', '--name', 'vm', '--socket', sock]);
  assert.equal(ready.listening.socket, sock);
  assert.equal(ready.exports[0]!.name, 'vm');
  const url = `nbd+unix:///vm?socket=${sock}`;
  const r = await exec('qemu-io', ['-r', '-f', 'raw', '-c', 'read -P 0x12 0 64k', url]);
  assert.doesNotMatch(r.stdout, /failed/);
  const w = await exec('qemu-io', ['-f', 'raw', '-c', 'write -P 0x99 0 4k', url], { allowFail: true });
  assert.notEqual(w.status, 0, 'the export is advertised read-only: a writable open is refused');
  child.kill('SIGINT');
  assert.equal(await exited, 0);
  assert.ok((await readFile(a)).subarray(0, 4096).equals(Buffer.alloc(4096, 0x12)), 'read-only disk unchanged');
});

test('serve: usage errors exit 2', async () => {
  const r1 = await tidemark(['serve', 'x.raw', 'y.raw', '--name', 'n'], { allowFail: true });
  assert.equal(r1.status, 2);
  const r2 = await tidemark(['serve', 'x.raw', '--listen', 'nonsense'], { allowFail: true });
  assert.equal(r2.status, 2);
  const r3 = await tidemark(['serve', 'x.raw', '--tls'], { allowFail: true });
  assert.equal(r3.status, 2);
  assert.match(r3.stderr, /--tls-cert/);
});

test('serve with change tracking: rct seal reaches the server, tidemark:changes reports writes made over NBD', async (t) => {
  if (!requireTools(t, 'qemu-img', 'qemu-io', 'nbdinfo')) return;
  const dir = await tempDir(t);
  const disk = join(dir, 'vm.raw');
  await exec('qemu-img', ['create', '-f', 'raw', disk, '16M']);
  await tidemark(['rct', 'enable', disk]);
  const { child, ready, exited } = await startServe(t, [disk, '--listen', '127.0.0.1:0']);
  assert.equal(ready.exports[0]!.tracked, true);
  const id = (JSON.parse((await tidemark(['rct', 'seal', disk, '--json'])).stdout) as { id: string }).id;
  const url = ready.exports[0]!.uri;
  await exec('qemu-io', ['-f', 'raw', '-c', 'write -P 0x44 3M 128k', '-c', 'flush', url]);
  const list = JSON.parse((await exec('nbdinfo', ['--json', url])).stdout) as { exports: Array<{ contexts: string[] }> };
  assert.ok(list.exports[0]!.contexts.includes(`tidemark:changes:${id}`));
  const map = JSON.parse((await exec('nbdinfo', [`--map=tidemark:changes:${id}`, '--json', url])).stdout) as Array<{ offset: number; length: number; type: number }>;
  const changed = map.filter((m) => m.type & 1);
  assert.ok(changed.length >= 1);
  const lo = Math.min(...changed.map((m) => m.offset));
  const hi = Math.max(...changed.map((m) => m.offset + m.length));
  assert.ok(lo <= 3 * MiB && hi >= 3 * MiB + 128 * 1024, `changed range [${lo}, ${hi}) covers the write`);
  assert.ok(hi - lo <= MiB, 'and not much more');
  // While serving, `rct changes` is answered through the control socket.
  const live = JSON.parse((await tidemark(['rct', 'changes', disk, '--since', id, '--json'])).stdout) as { changedBytes: number };
  assert.ok(live.changedBytes >= 128 * 1024);
  child.kill('SIGTERM');
  assert.equal(await exited, 0);
  const after = JSON.parse((await tidemark(['rct', 'changes', disk, '--since', id, '--json'])).stdout) as { changedBytes: number };
  assert.equal(after.changedBytes, live.changedBytes, 'the change record survives the server');
  // Served read-only (how a backup reads), the same changes are offered over NBD.
  const ro = await startServe(t, [disk, '--read-only', '--listen', '127.0.0.1:0']);
  assert.equal(ro.ready.exports[0]!.tracked, true);
  const roMap = JSON.parse((await exec('nbdinfo', [`--map=tidemark:changes:${id}`, '--json', ro.ready.exports[0]!.uri])).stdout) as Array<{ offset: number; length: number; type: number }>;
  assert.deepEqual(roMap, map);
  ro.child.kill('SIGTERM');
  assert.equal(await ro.exited, 0);
});

test('serve a VHDX: writes over NBD land in a VHDX that qemu-img checks clean and reads back', async (t) => {
  if (!requireTools(t, 'qemu-img', 'qemu-io', 'nbdinfo')) return;
  const dir = await tempDir(t);
  const disk = join(dir, 'vm.vhdx');
  await exec('qemu-img', ['create', '-f', 'vhdx', disk, '64M']);
  const sock = join(dir, 'v.sock');
  const { child, ready, exited } = await startServe(t, [disk, '--socket', sock]);
  const url = ready.exports[0]!.uri;
  await exec('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5c 1M 2M', '-c', 'write -P 0x5d 40M 64k', '-c', 'write -z 1536k 64k', '-c', 'flush', url]);
  const map = JSON.parse((await exec('nbdinfo', ['--map', '--json', url])).stdout) as Array<{ offset: number; length: number; type: number }>;
  assert.equal(map.reduce((n, m) => n + m.length, 0), 64 * MiB);
  assert.ok(map.some((m) => m.type & 2), 'unallocated VHDX blocks are reported as zero');
  child.kill('SIGTERM');
  assert.equal(await exited, 0);
  await exec('qemu-img', ['check', '-f', 'vhdx', disk]);
  const r = await exec('qemu-io', ['-r', '-f', 'vhdx', '-c', 'read -P 0x5c 1M 512k', '-c', 'read -P 0 1536k 64k', '-c', 'read -P 0x5c 1600k 1472k', '-c', 'read -P 0x5d 40M 64k', '-c', 'read -P 0 0 1M', disk]);
  assert.doesNotMatch(r.stdout, /Pattern verification failed/);
});
