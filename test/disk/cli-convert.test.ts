import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFile, open, readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ExitCode } from '../../src/errors.js';
import { tempDir } from '../helpers/tools.js';
import { allocated, dataExtents, MiB, tidemark, tidemarkJson, type DiskInfoJson } from './cliHarness.js';
import { makeRaw } from './fixtures.js';

test('convert raw -> vhdx -> raw: bit-exact and sparse; dst replaced atomically', async (t) => {
  const dir = await tempDir(t);
  const src = join(dir, 'src.img');
  const size = 48 * MiB + 12 * 1024;
  await makeRaw(src, size, [[0, 4096], [3 * MiB + 512, 70_000], [20 * MiB, 9 * MiB], [size - 8192, 8192]]);
  const v = join(dir, 'mid.vhdx');
  const back = join(dir, 'back.img');
  const c1 = await tidemarkJson<{ written: number }>('disk', 'convert', src, v, '--block-size', '1M', '--json');
  assert.equal(c1.status, 0, c1.stderr);
  const vi = await tidemarkJson<DiskInfoJson>('disk', 'info', v, '--json');
  assert.deepEqual([vi.json.format, vi.json.type, vi.json.size, vi.json.blockSize], ['vhdx', 'dynamic', size, MiB]);
  assert.ok(vi.json.allocatedBytes <= 16 * MiB, `only touched blocks allocated: ${vi.json.allocatedBytes}`);
  const c2 = await tidemark('disk', 'convert', v, back, '--format', 'raw');
  assert.equal(c2.status, 0, c2.stderr);
  assert.deepEqual(await readFile(back), await readFile(src), 'bit-exact round trip');
  // Same data map as the original (st_blocks may differ by file system metadata such as extent-tree blocks).
  assert.deepEqual(await dataExtents(back), await dataExtents(src), 'as sparse as the original');
  assert.ok(await allocated(back) <= (await allocated(src)) + 64 * 1024);
  assert.equal((await tidemark('disk', 'compare', src, v)).status, 0);

  // Converting over an existing file replaces it whole; a failed convert leaves it untouched.
  const prev = await readFile(back);
  const corrupt = join(dir, 'corrupt.vhdx');
  await copyFile(v, corrupt);
  const fh = await open(corrupt, 'r+');
  for (const off of [0x10000, 0x20000]) await fh.write(Buffer.alloc(4096, 0x55), 0, 4096, off);
  await fh.close();
  const bad = await tidemark('disk', 'convert', corrupt, back, '--format', 'raw');
  assert.notEqual(bad.status, 0);
  assert.deepEqual(await readFile(back), prev, 'the good file is untouched');
  assert.deepEqual((await readdir(dir)).filter((f) => f.includes('tidemark')), [], 'no temporary files left');

  // Converting a disk onto itself is refused before anything is written.
  const self = await tidemark('disk', 'convert', v, v);
  assert.equal(self.status, ExitCode.USAGE);
  assert.equal((await tidemark('disk', 'compare', src, v)).status, 0);

  const badArgs = await tidemark('disk', 'convert', src, join(dir, 'x'), '--format', 'raw', '--type', 'dynamic');
  assert.equal(badArgs.status, ExitCode.USAGE);
  assert.equal((await tidemark('disk', 'convert', join(dir, 'nope'), join(dir, 'y'))).status, ExitCode.NOT_FOUND);
  assert.equal((await tidemark('disk', 'convert', src)).status, ExitCode.USAGE);
});

test('compare: identical, first differing offset, size mismatch, --json', async (t) => {
  const dir = await tempDir(t);
  const a = join(dir, 'a');
  const b = join(dir, 'b');
  await makeRaw(a, 32 * MiB, [[MiB, 2 * MiB]]);
  await copyFile(a, b);
  const same = await tidemark('disk', 'compare', a, b);
  assert.equal(same.status, 0);
  assert.match(same.stdout, /identical/);
  const off = MiB + 123_457;
  const fh = await open(b, 'r+');
  await fh.write(Buffer.from([0]), 0, 1, off); // pattern bytes are never 0
  await fh.write(Buffer.from([7]), 0, 1, 20 * MiB);
  await fh.close();
  const diff = await tidemark('disk', 'compare', a, b);
  assert.equal(diff.status, ExitCode.DIFFERENT);
  assert.match(diff.stdout, new RegExp(`offset ${off}\\b`));
  const j = await tidemarkJson<{ equal: boolean; firstDifference: number }>('disk', 'compare', a, b, '--json');
  assert.deepEqual([j.status, j.json.equal, j.json.firstDifference], [ExitCode.DIFFERENT, false, off]);
  // data in a hole of the other side
  const c = join(dir, 'c');
  await makeRaw(c, 32 * MiB, [[MiB, 2 * MiB], [30 * MiB + 5, 1]]);
  const hj = await tidemarkJson<{ firstDifference: number }>('disk', 'compare', a, c, '--json');
  assert.equal(hj.json.firstDifference, 30 * MiB + 5);
  // different sizes with equal common content: the first byte only one has
  const d = join(dir, 'd');
  await makeRaw(d, 33 * MiB, [[MiB, 2 * MiB]]);
  const sj = await tidemarkJson<{ equal: boolean; firstDifference: number }>('disk', 'compare', a, d, '--json');
  assert.deepEqual([sj.status, sj.json.equal, sj.json.firstDifference], [ExitCode.DIFFERENT, false, 32 * MiB]);
  assert.equal((await tidemark('disk', 'compare', a)).status, ExitCode.USAGE);
  assert.equal((await tidemark('disk', 'compare', a, join(dir, 'zz'))).status, ExitCode.NOT_FOUND);
});

