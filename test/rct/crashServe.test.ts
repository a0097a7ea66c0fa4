/**
 * A tracked VHDX whose `tidemark serve` is SIGKILLed after a flushed write: the dirty log is replayed
 * by the next RCT query (no dead end for the admin), tracking answers (a superset covering the write),
 * and nothing flushed is lost. Also `tidemark disk check --repair` on a dirty log, and in-use detection
 * while the server still runs.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { basename, join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { VhdxDevice } from '../../src/vhdx/VhdxDevice.js';
import type { Range } from '../../src/rct/Range.js';
import { requireTools, run, tempDir } from '../helpers/tools.js';
import { MAIN, MiB, cli, ok } from './integrationKit.js';

/** Start `tidemark serve <disk> --socket S --json` and wait for its JSON ready line. */
async function serve(t: TestContext, disk: string, socket: string): Promise<ChildProcess> {
  const child = spawn(process.execPath, [MAIN, 'serve', disk, '--socket', socket, '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
  t.after(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  await new Promise<void>((res, rej) => {
    let out = '';
    const timer = setTimeout(() => rej(new Error(`serve did not get ready: ${stderr}`)), 20_000);
    child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      if (!out.includes('\n')) return;
      clearTimeout(timer);
      try {
        const ready = JSON.parse(out.slice(0, out.indexOf('\n'))) as { listening: { socket?: string } };
        assert.equal(ready.listening.socket, socket);
        res();
      } catch (err) {
        rej(err);
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      rej(new Error(`serve exited with ${code}: ${stderr}`));
    });
  });
  return child;
}

async function sigkill(child: ChildProcess): Promise<void> {
  const gone = new Promise<void>((res) => child.once('exit', () => res()));
  child.kill('SIGKILL');
  await gone;
}

/** qemu-io writes 0xab at [1M, 4M) and flushes, through the server. */
function qemuWrite(disk: string, socket: string): void {
  const r = run('qemu-io', ['-f', 'raw', `nbd+unix:///${basename(disk)}?socket=${socket}`, '-c', 'write -P 0xab 1M 3M', '-c', 'flush']);
  assert.equal(r.status, 0, r.stderr);
}

async function readRange(disk: string, offset: number, length: number): Promise<Buffer> {
  const dev = await VhdxDevice.open(disk, { readOnly: true });
  try {
    return await dev.read(offset, length);
  } finally {
    await dev.close();
  }
}

function covers(ranges: Range[], offset: number, end: number): boolean {
  let pos = offset;
  for (const r of [...ranges].sort((a, b) => a.offset - b.offset)) {
    if (r.offset <= pos && r.offset + r.length > pos) pos = r.offset + r.length;
  }
  return pos >= end;
}

test('crashed serve: rct changes replays the dirty log and reports the flushed write; nothing is lost', async (t) => {
  if (!requireTools(t, 'qemu-io')) return;
  const dir = await tempDir(t);
  const disk = join(dir, 'vm.vhdx');
  const sock = join(dir, 'nbd.sock');
  await ok('disk', 'create', disk, '--size', '16M');
  await ok('rct', 'enable', disk);
  const server = await serve(t, disk, sock);
  const id = (JSON.parse(await ok('rct', 'seal', disk, '--json')) as { id: string }).id;
  qemuWrite(disk, sock);

  // While the server runs, its writes leave the log dirty: say who has the disk, not "dirty log".
  for (const args of [['disk', 'info', disk, '--json'], ['disk', 'check', disk, '--json']]) {
    const r = await cli(...args);
    assert.equal(r.status, 5, `${args.join(' ')} while served: ${r.stdout}${r.stderr}`);
    assert.match(r.stderr, new RegExp(`in use by PID ${server.pid} \\(tidemark serve\\)`));
  }

  await sigkill(server);
  const dirty = await cli('disk', 'info', disk);
  assert.equal(dirty.status, 4, 'the crash left the log dirty (a read-only open refuses it)');
  assert.match(dirty.stderr, /tidemark disk check --repair/);

  const r = await cli('rct', 'changes', disk, '--since', id, '--json');
  assert.equal(r.status, 0, r.stderr);
  const ranges = (JSON.parse(r.stdout) as { ranges: Range[] }).ranges;
  assert.ok(covers(ranges, 1 * MiB, 4 * MiB), `changes since the seal cover [1M, 4M): ${JSON.stringify(ranges)}`);

  const info = JSON.parse(await ok('disk', 'info', disk, '--json')) as { logDirty: boolean; size: number };
  assert.equal(info.logDirty, false);
  assert.equal(info.size, 16 * MiB);
  assert.ok((await readRange(disk, 1 * MiB, 3 * MiB)).equals(Buffer.alloc(3 * MiB, 0xab)), 'the flushed write survived the crash');
  assert.ok((await readRange(disk, 0, 1 * MiB)).equals(Buffer.alloc(1 * MiB)), 'nothing else changed');
  // Tracking stays usable: status and a new seal work locally.
  await ok('rct', 'status', disk, '--json');
  await ok('rct', 'seal', disk, '--json');
});

test('disk check --repair replays a dirty log left by a killed writer; refuses while the disk is served', async (t) => {
  if (!requireTools(t, 'qemu-io')) return;
  const dir = await tempDir(t);
  const disk = join(dir, 'plain.vhdx');
  const sock = join(dir, 'nbd.sock');
  await ok('disk', 'create', disk, '--size', '8M');
  const server = await serve(t, disk, sock);
  qemuWrite(disk, sock);
  const busy = await cli('disk', 'check', disk, '--repair');
  assert.equal(busy.status, 5, busy.stderr);
  assert.match(busy.stderr, new RegExp(`in use by PID ${server.pid} \\(tidemark serve\\)`));
  await sigkill(server);

  const before = JSON.parse(await ok('disk', 'check', disk, '--json')) as { ok: boolean; logDirty: boolean };
  assert.deepEqual([before.ok, before.logDirty], [true, true], 'plain check reports the dirty log and changes nothing');
  assert.equal((await cli('disk', 'info', disk)).status, 4, 'still dirty after a plain check');

  const fixed = JSON.parse(await ok('disk', 'check', disk, '--repair', '--json')) as { ok: boolean; logDirty: boolean; repaired: boolean };
  assert.deepEqual([fixed.ok, fixed.logDirty, fixed.repaired], [true, false, true]);
  const after = JSON.parse(await ok('disk', 'check', disk, '--json')) as { ok: boolean; logDirty: boolean; repaired: boolean };
  assert.deepEqual([after.ok, after.logDirty, after.repaired], [true, false, false]);
  assert.ok((await readRange(disk, 1 * MiB, 3 * MiB)).equals(Buffer.alloc(3 * MiB, 0xab)), 'the flushed write survived');
  // Repairing a clean disk is a no-op.
  const again = JSON.parse(await ok('disk', 'check', disk, '--repair', '--json')) as { repaired: boolean };
  assert.equal(again.repaired, false);
});
