/**
 * The product path end to end, through the CLI only: `tidemark disk create`, `rct enable`, `rct seal`,
 * `tidemark serve` as a child process with a real Linux guest (QEMU, TCG) on the export, `rct seal` and
 * `rct changes` through the live server's control socket, SIGTERM, then `rct changes` from the files
 * and `disk convert` to raw so debugfs can read what the guest wrote.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { run, tempDir } from '../helpers/tools.js';
import { bootGuest, assertGuestOk, requireVm } from '../vm/guest.js';
import { debugfsCat } from '../vm/debugfs.js';

const execFileP = promisify(execFile);
const CLI = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
const MiB = 1024 * 1024;
const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

async function tidemark(...args: string[]): Promise<string> {
  try {
    return (await execFileP(process.execPath, [CLI, ...args], { maxBuffer: 64 * MiB })).stdout;
  } catch (err) {
    const e = err as { stderr?: string; code?: number };
    throw new Error(`tidemark ${args.join(' ')} exited ${e.code}: ${e.stderr}`);
  }
}

interface Ranges {
  ranges: Array<{ offset: number; length: number }>;
  changedBytes: number;
}

test('tidemark serve + a real guest: files land in the VHDX and rct changes (live and after stop) cover them', { timeout: 240_000 }, async (t) => {
  if (!(await requireVm(t, 'debugfs', 'qemu-img'))) return;
  const dir = await tempDir(t);
  const disk = join(dir, 'guest.vhdx');
  await tidemark('disk', 'create', disk, '--size', '64M');
  await tidemark('rct', 'enable', disk);
  const id0 = (JSON.parse(await tidemark('rct', 'seal', disk, '--json')) as { id: string }).id;

  const sock = join(dir, 'serve.sock');
  const serve = spawn(process.execPath, [CLI, 'serve', disk, '--socket', sock, '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let serveErr = '';
  serve.stderr.setEncoding('utf8').on('data', (d: string) => (serveErr += d));
  const exited = new Promise<number | null>((r) => serve.once('exit', (c) => r(c)));
  t.after(() => {
    if (serve.exitCode === null) serve.kill('SIGKILL');
  });
  const ready = await new Promise<{ exports: Array<{ uri: string; tracked: boolean; name: string }> }>((resolve, reject) => {
    let out = '';
    serve.stdout.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      const nl = out.indexOf('\n');
      if (nl >= 0) resolve(JSON.parse(out.slice(0, nl)));
    });
    serve.once('exit', (c) => reject(new Error(`tidemark serve exited ${c} before it was ready: ${serveErr}`)));
  });
  assert.equal(ready.exports.length, 1);
  assert.equal(ready.exports[0]!.tracked, true);

  const guest = await bootGuest({
    disks: [{ nbdUrl: ready.exports[0]!.uri }],
    script: `
      mke2fs -b 4096 /dev/vda >/dev/null
      mount -t ext2 /dev/vda /mnt
      echo "served by tidemark serve" > /mnt/note.txt
      dd if=/dev/urandom of=/mnt/blob.bin bs=65536 count=20 2>/dev/null
      result blob_sha "$(sha /mnt/blob.bin)"
      sync
      fstrim /mnt
      umount /mnt
    `,
  });
  assertGuestOk(guest);
  t.diagnostic(`guest on tidemark serve: ${guest.durationMs} ms`);

  // While the server still runs, RCT is answered through its control socket.
  const live = JSON.parse(await tidemark('rct', 'changes', disk, '--since', id0, '--json')) as Ranges;
  assert.ok(live.changedBytes > 0 && live.ranges.length > 0);
  const id1 = (JSON.parse(await tidemark('rct', 'seal', disk, '--json')) as { id: string }).id;
  const sinceId1 = JSON.parse(await tidemark('rct', 'changes', disk, '--since', id1, '--json')) as Ranges;
  assert.deepEqual(sinceId1.ranges, [], 'nothing written after the guest powered off');

  serve.kill('SIGTERM');
  assert.equal(await exited, 0, serveErr);
  assert.match(serveErr, /stopped/);

  // After a clean stop, the tracking files give the same answer.
  const after = JSON.parse(await tidemark('rct', 'changes', disk, '--since', id0, '--json')) as Ranges;
  assert.deepEqual(after.ranges, live.ranges);

  await tidemark('disk', 'check', disk);
  const raw = join(dir, 'guest.raw');
  await tidemark('disk', 'convert', disk, raw, '--format', 'raw');
  assert.equal(debugfsCat(raw, '/note.txt').toString(), 'served by tidemark serve\n');
  assert.equal(sha256(debugfsCat(raw, '/blob.bin')), guest.results.blob_sha);

  // The disk started all zeros: every non-zero 4 KiB granule now is inside the reported changes.
  const bytes = await readFile(raw);
  const zero = Buffer.alloc(4096);
  let nonZero = 0;
  for (let off = 0; off < bytes.length; off += 4096) {
    if (bytes.subarray(off, off + 4096).equals(zero)) continue;
    nonZero++;
    assert.ok(after.ranges.some((r) => r.offset <= off && off + 4096 <= r.offset + r.length), `data at ${off} not in rct changes`);
  }
  assert.ok(nonZero > 0);
  run('qemu-img', ['check', '-f', 'vhdx', disk]);
});
