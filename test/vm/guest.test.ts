import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import { tempDir } from '../helpers/tools.js';
import { bootGuest, assertGuestOk, requireVm, nbdBlockdev, parseResults, parseScriptStatus, qemuArgs, VmError } from './guest.js';
import { debugfsCat, debugfsList } from './debugfs.js';
import { NbdTap } from './NbdTap.js';

const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/** qemu-nbd (the harness's stand-in server) on a unix socket; resolves once the socket exists. */
async function qemuNbd(t: TestContext, image: string, socket: string): Promise<ChildProcess> {
  const child = spawn('qemu-nbd', ['-f', 'raw', '--discard=unmap', '-k', socket, image], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  t.after(() => {
    if (child.exitCode === null) child.kill('SIGKILL');
  });
  for (let i = 0; i < 200 && !existsSync(socket); i++) {
    if (child.exitCode !== null) break;
    await new Promise((r) => setTimeout(r, 25));
  }
  if (!existsSync(socket)) throw new Error(`qemu-nbd did not create ${socket}: ${stderr}`);
  return child;
}

const exited = (child: ChildProcess): Promise<number | null> =>
  child.exitCode !== null ? Promise.resolve(child.exitCode) : new Promise((r) => child.once('exit', (c) => r(c)));

test('pure parts: results, end marker, NBD URL forms, command line', () => {
  const log = 'x\nTIDEMARK-RESULT a=1\n[ 1.0] noise\nTIDEMARK-RESULT b=two words\nTIDEMARK-RESULT a=3\nTIDEMARK-END rc=4\n';
  assert.deepEqual(parseResults(log), { a: '3', b: 'two words' });
  assert.equal(parseScriptStatus(log), 4);
  assert.equal(parseScriptStatus('TIDEMARK-BEGIN\n'), null);

  assert.deepEqual(nbdBlockdev('nbd+unix:///exp?socket=/tmp/s.sock', 'd0').file, {
    driver: 'nbd', server: { type: 'unix', path: '/tmp/s.sock' }, export: 'exp', discard: 'unmap',
  });
  assert.deepEqual((nbdBlockdev('nbd://127.0.0.1:1234', 'd0').file as Record<string, unknown>).server, { type: 'inet', host: '127.0.0.1', port: '1234' });
  assert.equal((nbdBlockdev('nbd://[::1]/', 'd0').file as { server: { host: string; port: string } }).server.host, '::1');
  assert.throws(() => nbdBlockdev('http://x/', 'd0'), VmError);
  assert.throws(() => nbdBlockdev('nbd+unix:///x', 'd0'), /socket/);

  const args = qemuArgs({ kernel: '/k', initrd: '/i' }, { disks: [{ nbdUrl: 'nbd://h/e' }, { file: '/f.vhdx', format: 'vhdx' }], script: '' }, '/s');
  assert.ok(args.includes('tcg') && args.includes('-no-reboot'));
  assert.match(args[args.indexOf('-append') + 1]!, /tidemark\.disks=2/);
  const blockdevs = args.flatMap((a, i) => (args[i - 1] === '-blockdev' ? [JSON.parse(a) as Record<string, unknown>] : []));
  assert.equal(blockdevs.length, 2);
  for (const b of blockdevs) {
    assert.equal(b.discard, 'unmap');
    assert.equal(b['detect-zeroes'], 'unmap');
  }
  assert.equal(blockdevs[1]!.driver, 'vhdx');
  assert.throws(() => qemuArgs({ kernel: '/k', initrd: '/i' }, { disks: [], script: '', memoryMb: 64 }, '/s'), /too small/);
});

test('guest makes ext2 on an NBD disk served by qemu-nbd; host reads the files back', { timeout: 180_000 }, async (t) => {
  if (!(await requireVm(t, 'qemu-nbd', 'debugfs'))) return;
  const dir = await tempDir(t);
  const image = join(dir, 'disk.raw');
  await writeFile(image, '');
  await truncate(image, 64 * 1024 * 1024);
  const socket = join(dir, 'nbd.sock');
  const server = await qemuNbd(t, image, socket);
  const tap = await NbdTap.start(socket, join(dir, 'tap.sock'));
  t.after(() => tap.close());

  const guest = await bootGuest({
    disks: [{ nbdUrl: tap.url }],
    script: `
      mke2fs /dev/vda >/dev/null
      mount -t ext2 /dev/vda /mnt
      echo "hello from the guest" > /mnt/hello.txt
      mkdir /mnt/sub
      dd if=/dev/urandom of=/mnt/sub/random.bin bs=4096 count=100 2>/dev/null
      result random_sha "$(sha /mnt/sub/random.bin)"
      dd if=/dev/zero of=/mnt/zeros.bin bs=65536 count=16 2>/dev/null
      sync
      rm /mnt/zeros.bin
      sync
      fstrim /mnt
      umount /mnt
      result done yes
    `,
  });
  assertGuestOk(guest);
  assert.equal(guest.results.done, 'yes');
  assert.equal(await exited(server), 0, 'qemu-nbd exits cleanly once the guest disconnects');

  assert.equal(debugfsCat(image, '/hello.txt').toString(), 'hello from the guest\n');
  const random = debugfsCat(image, '/sub/random.bin');
  assert.equal(random.length, 409600);
  assert.equal(sha256(random), guest.results.random_sha);
  assert.deepEqual(debugfsList(image, '/').sort(), ['hello.txt', 'lost+found', 'sub']);

  // What went over the wire: the harness really exercises every data command.
  const s = tap.stats;
  assert.deepEqual(s.errors, []);
  assert.equal(s.structuredReplies, true);
  assert.ok(s.metaContexts.includes('base:allocation'), JSON.stringify(s.options));
  for (const cmd of ['READ', 'WRITE', 'FLUSH', 'TRIM', 'WRITE_ZEROES', 'DISC']) assert.ok((s.counts[cmd] ?? 0) > 0, `no ${cmd} in ${JSON.stringify(s.counts)}`);
  // Every write landed inside the 64 MiB export.
  for (const c of s.commands) assert.ok(c.offset + c.length <= 64 * 1024 * 1024, JSON.stringify(c));
  t.diagnostic(`NBD commands: ${JSON.stringify(s.counts)}`);
  t.diagnostic(`boot + script took ${guest.durationMs} ms`);
});

test('a raw file disk: guest writes are visible on the host; a failing script is reported, not thrown', { timeout: 180_000 }, async (t) => {
  if (!(await requireVm(t))) return;
  const dir = await tempDir(t);
  const image = join(dir, 'disk.raw');
  await writeFile(image, Buffer.alloc(1024 * 1024, 0xee));
  const guest = await bootGuest({
    disks: [{ file: image, format: 'raw' }],
    script: `
      printf 'TIDEMARK-WAS-HERE' | dd of=/dev/vda bs=512 seek=3 conv=notrunc 2>/dev/null
      result size "$(blockdev --getsize64 /dev/vda)"
      sync
      false
      result unreachable 1
    `,
  });
  assert.equal(guest.exitOk, false);
  assert.equal(guest.scriptStatus, 1, guest.console);
  assert.equal(guest.qemuStatus, 0);
  assert.equal(guest.results.size, String(1024 * 1024));
  assert.equal(guest.results.unreachable, undefined, 'sh -e stops at the first failing command');
  assert.throws(() => assertGuestOk(guest), /script status 1/);
  const data = await readFile(image);
  assert.equal(data.subarray(1536, 1536 + 17).toString(), 'TIDEMARK-WAS-HERE');
  assert.equal(data[1535], 0xee);
  assert.equal(data[1536 + 17], 0xee);
});

test('a guest that does not power off is killed at the timeout', { timeout: 180_000 }, async (t) => {
  if (!(await requireVm(t))) return;
  // The timeout fires while the guest is still booting or in the script: either way QEMU must die
  // promptly and the error must say what happened.
  const started = Date.now();
  await assert.rejects(
    bootGuest({ disks: [], script: 'echo about-to-hang; sleep 600', timeoutMs: 3000 }),
    (err: unknown) => err instanceof VmError && /did not power off within 3000 ms \(QEMU killed\)\. Console tail:/.test(err.message),
  );
  assert.ok(Date.now() - started < 30_000);
});

test('QEMU failing before the script (no NBD server) rejects with its stderr', { timeout: 60_000 }, async (t) => {
  if (!(await requireVm(t))) return;
  const dir = await tempDir(t);
  await assert.rejects(
    bootGuest({ disks: [{ nbdUrl: `nbd+unix:///?socket=${join(dir, 'nobody.sock')}` }], script: 'true' }),
    (err: unknown) => err instanceof VmError && /before the guest ran its script/.test(err.message) && /nobody\.sock/.test(err.message),
  );
});
