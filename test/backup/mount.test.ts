import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { access, open } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { requireTools, run, tempDir } from '../helpers/tools.js';
import { cli, cliJson, cliSpawn, sha256File, type BackupJson } from './helpers.js';

const MiB = 1 << 20;

async function mount(t: { after(fn: () => unknown): void }, home: string, args: string[]): Promise<{ uri: string; overlay: string | null; stop(): Promise<number | null> }> {
  const p = cliSpawn(home, ['mount', ...args, '--json']);
  let killed = false;
  t.after(() => {
    if (!killed) p.kill('SIGKILL');
  });
  const info = await new Promise<{ uri: string; overlay: string | null }>((resolve, reject) => {
    let out = '';
    let err = '';
    p.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('\n')) resolve(JSON.parse(out.split('\n')[0]!));
    });
    p.stderr.on('data', (d: Buffer) => (err += d.toString()));
    p.once('exit', (c) => reject(new Error(`mount exited ${c}: ${err}`)));
  });
  return {
    ...info,
    stop: () =>
      new Promise((resolve) => {
        killed = true;
        p.once('exit', (c) => resolve(c));
        p.kill('SIGTERM');
      }),
  };
}

test('mount serves a snapshot over NBD: read-only bit-exact, writable into a throw-away overlay', async (t) => {
  if (!requireTools(t, 'qemu-img', 'qemu-io', 'nbdinfo')) return;
  const dir = await tempDir(t);
  const home = join(dir, 'home');
  const disk = join(dir, 'disk.raw');
  const size = 8 * MiB;
  const fh = await open(disk, 'w');
  await fh.truncate(size);
  await fh.write(randomBytes(MiB), 0, MiB, 2 * MiB);
  await fh.write(randomBytes(100_000), 0, 100_000, 6 * MiB + 17);
  await fh.close();
  const snap = cliJson<BackupJson>(home, ['backup', disk]);
  const original = await sha256File(disk);

  const ro = await mount(t, home, [snap.snapshot.slice(0, 12), '--socket', join(dir, 'ro.sock')]);
  run('qemu-img', ['compare', '-f', 'raw', disk, ro.uri]);
  // Allocation comes from the index: the hole before the first data chunk is reported as such.
  const map = JSON.parse(run('nbdinfo', ['--map', '--json', ro.uri]).stdout) as Array<{ offset: number; length: number; type: number }>;
  assert.equal(map[0]!.offset, 0);
  assert.equal(map[0]!.length, 2 * MiB);
  assert.equal(map[0]!.type & 1, 1, 'hole');
  const w = run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 0 65536', ro.uri], { allowFail: true });
  assert.notEqual(w.status, 0, 'a read-only mount refuses writes');
  assert.match(w.stderr, /Permission denied|read-only/i);
  assert.equal(await ro.stop(), 0);

  const rw = await mount(t, home, [snap.snapshot, '--socket', join(dir, 'rw.sock'), '--writable']);
  assert.ok(rw.overlay);
  run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 100000 65536', rw.uri]);
  const rd = run('qemu-io', ['-f', 'raw', '-c', 'read -P 0x5a 100000 65536', '-c', 'read -P 0 0 100000', rw.uri]);
  assert.doesNotMatch(rd.stdout, /mismatch|fail/i, rd.stdout);
  const cmp = run('qemu-img', ['compare', '-f', 'raw', disk, rw.uri], { allowFail: true });
  assert.equal(cmp.status, 1, 'the written overlay differs from the snapshot');
  assert.equal(await rw.stop(), 0);
  await assert.rejects(access(rw.overlay!), 'the overlay is deleted when the mount stops');

  // The repository was never modified: the snapshot still restores to the original.
  const out = join(dir, 'r.raw');
  cliJson(home, ['restore', snap.snapshot, '--to', out]);
  assert.equal(await sha256File(out), original);
  assert.equal(cli(home, ['repo', 'verify', join(home, 'repo'), '--read-data']).status, 0);
});
