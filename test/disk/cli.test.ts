import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFile, open, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ExitCode } from '../../src/errors.js';
import { requireTools, run, tempDir } from '../helpers/tools.js';
import { tidemark, tidemarkJson } from './cliHarness.js';
import { makeRaw, pattern } from './fixtures.js';
import { openDisk } from '../../src/disk/openDisk.js';
import { RawFileDevice } from '../../src/blockdev/RawFileDevice.js';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const TiB = 1024 * GiB;

interface Info {
  format: string;
  type: string;
  size: number;
  blockSize: number | null;
  logicalSectorSize: number;
  physicalSectorSize: number;
  allocatedBytes: number;
  diskId: string | null;
  dataWriteGuid: string | null;
  parentChain: string[];
}

/** The data runs of a file (SEEK_DATA/SEEK_HOLE via RawFileDevice). */
async function dataExtents(path: string): Promise<Array<[number, number]>> {
  const dev = await RawFileDevice.open(path, { readOnly: true });
  try {
    assert.ok(dev.capabilities.extents, 'extents supported here');
    return (await dev.extents(0, dev.size)).filter((e) => e.type === 'data').map((e) => [e.offset, e.length]);
  } finally {
    await dev.close();
  }
}

async function allocated(path: string): Promise<number> {
  return (await stat(path)).blocks * 512;
}

test('disk --help and every subcommand --help exit 0 and describe usage', async () => {
  for (const sub of ['', 'create', 'info', 'check', 'convert', 'compare', 'merge', 'resize']) {
    const r = await tidemark('disk', ...(sub ? [sub] : []), '--help');
    assert.equal(r.status, 0, `${sub} --help: ${r.stderr}`);
    assert.match(r.stdout, /Usage: tidemark disk/);
  }
});

test('create: dynamic VHDX by default, raw, fixed, sector sizes, block size; info reports them', async (t) => {
  const dir = await tempDir(t);
  const v = join(dir, 'a.vhdx');
  const c = await tidemarkJson<Info>('disk', 'create', v, '--size', '1G', '--json');
  assert.equal(c.status, 0, c.stderr);
  assert.equal(c.json.format, 'vhdx');
  assert.equal(c.json.type, 'dynamic');
  assert.equal(c.json.size, GiB);
  const i = await tidemarkJson<Info>('disk', 'info', v, '--json');
  assert.equal(i.status, 0);
  assert.deepEqual({ ...i.json }, { ...c.json });
  assert.match(i.json.diskId ?? '', /^[0-9a-f-]{36}$/i);
  assert.ok((await stat(v)).size < 16 * MiB, 'dynamic disk is small');

  const f = join(dir, 'f.vhdx');
  const cf = await tidemarkJson<Info>('disk', 'create', f, '--size', '64M', '--type', 'fixed', '--block-size', '8M', '--logical-sector-size', '4096', '--json');
  assert.equal(cf.status, 0, cf.stderr);
  assert.equal(cf.json.type, 'fixed');
  assert.equal(cf.json.blockSize, 8 * MiB);
  assert.equal(cf.json.logicalSectorSize, 4096);
  assert.ok((await stat(f)).size >= 64 * MiB, 'fixed disk holds its payload');

  const r = join(dir, 'r.img');
  const cr = await tidemarkJson<Info>('disk', 'create', r, '--size', '3T', '--format', 'raw', '--json');
  assert.equal(cr.status, 0, cr.stderr);
  assert.equal(cr.json.format, 'raw');
  assert.equal(cr.json.size, 3 * TiB);
  assert.equal(cr.json.blockSize, null);
  assert.equal((await stat(r)).size, 3 * TiB);
  assert.equal(await allocated(r), 0);

  const text = await tidemark('disk', 'info', v);
  assert.equal(text.status, 0);
  assert.match(text.stdout, /format\s+vhdx/);
  assert.match(text.stdout, /virtual size\s+1\.00 GiB/);
});

test('create: errors are usage errors that say what to do, and leave nothing behind', async (t) => {
  const dir = await tempDir(t);
  const v = join(dir, 'a.vhdx');
  assert.equal((await tidemark('disk', 'create', v, '--size', '1M')).status, 0);
  const before = await readFile(v);
  const exists = await tidemark('disk', 'create', v, '--size', '2M');
  assert.equal(exists.status, ExitCode.USAGE);
  assert.match(exists.stderr, /already exists/);
  assert.deepEqual(await readFile(v), before, 'existing disk untouched');

  const cases: Array<[string[], RegExp]> = [
    [['--size', 'ten'], /invalid size/],
    [[], /size/],
    [['--size', '1M', '--format', 'qcow2'], /format/],
    [['--size', '1M', '--type', 'sparse'], /type/],
    [['--size', '1M', '--logical-sector-size', '1024'], /logical-sector-size/],
    [['--size', '1M', '--format', 'raw', '--parent', v], /parent/],
    [['--size', '1M', '--bogus'], /unknown option/],
  ];
  for (const [args, msg] of cases) {
    const r = await tidemark('disk', 'create', join(dir, 'b.vhdx'), ...args);
    assert.equal(r.status, ExitCode.USAGE, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, msg, args.join(' '));
  }
  assert.deepEqual((await readdir(dir)).sort(), ['a.vhdx'], 'no temporary or partial files');
  const noDir = await tidemark('disk', 'create', join(dir, 'nope', 'x.vhdx'), '--size', '1M');
  assert.notEqual(noDir.status, 0);
});

test('format is detected from content: a VHDX named .raw and a raw named .vhdx', async (t) => {
  const dir = await tempDir(t);
  const v = join(dir, 'really-vhdx.raw');
  const r = join(dir, 'really-raw.vhdx');
  assert.equal((await tidemark('disk', 'create', v, '--size', '8M')).status, 0);
  await makeRaw(r, 8 * MiB, [[MiB, 4096]]);
  assert.equal((await tidemarkJson<Info>('disk', 'info', v, '--json')).json.format, 'vhdx');
  const ri = await tidemarkJson<Info>('disk', 'info', r, '--json');
  assert.equal(ri.json.format, 'raw');
  assert.equal(ri.json.size, 8 * MiB);
  // Reading goes through the detected format: the VHDX reads as zeros, not as its own headers.
  assert.equal((await tidemark('disk', 'compare', v, join(dir, 'zeros'))).status, ExitCode.NOT_FOUND);
  await makeRaw(join(dir, 'zeros'), 8 * MiB, []);
  assert.equal((await tidemark('disk', 'compare', v, join(dir, 'zeros'))).status, 0);
  const diff = await tidemarkJson<{ equal: boolean; firstDifference: number }>('disk', 'compare', r, join(dir, 'zeros'), '--json');
  assert.equal(diff.status, ExitCode.DIFFERENT);
  assert.equal(diff.json.firstDifference, MiB);
});

test('info/check on missing, foreign and corrupt files: exit codes and messages', async (t) => {
  const dir = await tempDir(t);
  const missing = await tidemark('disk', 'info', join(dir, 'missing.vhdx'));
  assert.equal(missing.status, ExitCode.NOT_FOUND);
  assert.match(missing.stderr, /not found/);
  const missingJson = await tidemarkJson<{ error: { code: string } }>('disk', 'info', join(dir, 'missing.vhdx'), '--json');
  assert.equal(missingJson.json.error.code, 'E_NOT_FOUND');
  assert.equal((await tidemark('disk', 'check', join(dir, 'missing.vhdx'))).status, ExitCode.NOT_FOUND);

  // A VHDX whose both headers and both region tables are destroyed.
  const v = join(dir, 'broken.raw');
  assert.equal((await tidemark('disk', 'create', v, '--size', '64M')).status, 0);
  const good = join(dir, 'good.vhdx');
  await copyFile(v, good);
  const fh = await open(v, 'r+');
  for (const off of [0x10000, 0x20000, 0x30000, 0x40000]) await fh.write(Buffer.alloc(4096, 0xee), 0, 4096, off);
  await fh.close();
  const info = await tidemark('disk', 'info', v);
  assert.equal(info.status, ExitCode.CORRUPT, info.stderr);
  assert.match(info.stderr, /broken\.raw/);
  const check = await tidemarkJson<{ ok: boolean; problems: Array<{ structure: string; message: string }> }>('disk', 'check', v, '--json');
  assert.equal(check.status, ExitCode.DIFFERENT);
  assert.equal(check.json.ok, false);
  assert.ok(check.json.problems.length > 0);
  const checkText = await tidemark('disk', 'check', v);
  assert.equal(checkText.status, ExitCode.DIFFERENT);
  assert.match(checkText.stdout, /problem/);
  const convert = await tidemark('disk', 'convert', v, join(dir, 'out.vhdx'));
  assert.equal(convert.status, ExitCode.CORRUPT);

  const ok = await tidemarkJson<{ ok: boolean; format: string }>('disk', 'check', good, '--json');
  assert.equal(ok.status, 0);
  assert.deepEqual([ok.json.ok, ok.json.format], [true, 'vhdx']);

  // The "vhdxfile" signature alone destroyed: refused, not silently read as raw.
  const sig = join(dir, 'sig.vhdx');
  await copyFile(good, sig);
  const fh2 = await open(sig, 'r+');
  await fh2.write(Buffer.from('XXXXXXXX'), 0, 8, 0);
  await fh2.close();
  assert.equal((await tidemark('disk', 'info', sig)).status, ExitCode.CORRUPT);
  assert.equal((await tidemark('disk', 'check', sig)).status, ExitCode.DIFFERENT);

  const raw = join(dir, 'plain');
  await makeRaw(raw, 5 * MiB, [[0, 512]]);
  const rc = await tidemarkJson<{ ok: boolean; format: string; size: number }>('disk', 'check', raw, '--json');
  assert.equal(rc.status, 0);
  assert.deepEqual([rc.json.ok, rc.json.format, rc.json.size], [true, 'raw', 5 * MiB]);
});

test('info refuses formats Tidemark does not read (qcow2) instead of reading them as raw', async (t) => {
  if (!requireTools(t, 'qemu-img')) return;
  const dir = await tempDir(t);
  const q = join(dir, 'disk.img');
  run('qemu-img', ['create', '-q', '-f', 'qcow2', q, '1G']);
  const r = await tidemark('disk', 'info', q);
  assert.equal(r.status, ExitCode.UNSUPPORTED);
  assert.match(r.stderr, /qcow2.*convert/);
});

test('convert raw -> vhdx -> raw: bit-exact and sparse; dst replaced atomically', async (t) => {
  const dir = await tempDir(t);
  const src = join(dir, 'src.img');
  const size = 100 * MiB + 12 * 1024;
  await makeRaw(src, size, [[0, 4096], [3 * MiB + 512, 70_000], [40 * MiB, 9 * MiB], [size - 8192, 8192]]);
  const v = join(dir, 'mid.vhdx');
  const back = join(dir, 'back.img');
  const c1 = await tidemarkJson<{ written: number }>('disk', 'convert', src, v, '--block-size', '1M', '--json');
  assert.equal(c1.status, 0, c1.stderr);
  const vi = await tidemarkJson<Info>('disk', 'info', v, '--json');
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

test('convert of a 3 TiB sparse disk finishes quickly and stays sparse', async (t) => {
  const dir = await tempDir(t);
  const src = join(dir, 'big.img');
  const size = 3 * TiB + 64 * 1024;
  await makeRaw(src, size, [[0, 65536], [2 * TiB + 5 * MiB, 1 * MiB], [size - 4096, 4096]]);
  const v = join(dir, 'big.vhdx');
  const t0 = Date.now();
  const r1 = await tidemark('disk', 'convert', src, v);
  assert.equal(r1.status, 0, r1.stderr);
  const back = join(dir, 'back.img');
  const r2 = await tidemark('disk', 'convert', v, back, '--format', 'raw');
  assert.equal(r2.status, 0, r2.stderr);
  const cmp = await tidemark('disk', 'compare', src, back);
  assert.equal(cmp.status, 0, cmp.stdout + cmp.stderr);
  assert.ok(Date.now() - t0 < 30_000, `took ${Date.now() - t0} ms`);
  assert.equal((await stat(back)).size, size);
  assert.ok(await allocated(back) <= 2 * MiB, `sparse: ${await allocated(back)}`);
  const vi = await tidemarkJson<Info>('disk', 'info', v, '--json');
  assert.equal(vi.json.size, size);
  assert.ok(vi.json.allocatedBytes < 256 * MiB, `sparse vhdx: ${vi.json.allocatedBytes}`);
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

test('resize: grow raw and VHDX, shrink needs --force', async (t) => {
  const dir = await tempDir(t);
  const v = join(dir, 'v.vhdx');
  const r = join(dir, 'r.img');
  assert.equal((await tidemark('disk', 'create', v, '--size', '64M')).status, 0);
  await makeRaw(r, 64 * MiB, [[0, 4096]]);
  for (const p of [v, r]) {
    const g = await tidemarkJson<{ oldSize: number; newSize: number }>('disk', 'resize', p, '--size', '128M', '--json');
    assert.equal(g.status, 0, g.stderr);
    assert.deepEqual([g.json.oldSize, g.json.newSize], [64 * MiB, 128 * MiB]);
    assert.equal((await tidemarkJson<Info>('disk', 'info', p, '--json')).json.size, 128 * MiB);
    const s = await tidemark('disk', 'resize', p, '--size', '32M');
    assert.equal(s.status, ExitCode.USAGE);
    assert.match(s.stderr, /--force/);
    assert.equal((await tidemarkJson<Info>('disk', 'info', p, '--json')).json.size, 128 * MiB, 'unchanged without --force');
  }
  const s = await tidemark('disk', 'resize', r, '--size', '32M', '--force');
  assert.equal(s.status, 0, s.stderr);
  assert.equal((await stat(r)).size, 32 * MiB);
  assert.equal((await tidemark('disk', 'resize', r)).status, ExitCode.USAGE, '--size is required');
  assert.equal((await tidemark('disk', 'resize', join(dir, 'none'), '--size', '1G')).status, ExitCode.NOT_FOUND);
});

test('create --parent makes a differencing disk; merge folds it into the parent', async (t) => {
  const dir = await tempDir(t);
  const base = join(dir, 'base.vhdx');
  const child = join(dir, 'child.avhdx');
  assert.equal((await tidemark('disk', 'create', base, '--size', '16M', '--block-size', '1M')).status, 0);
  const pd = await openDisk(base);
  await pd.write(0, pattern(3 * MiB, 1));
  await pd.close();
  const cc = await tidemarkJson<Info>('disk', 'create', child, '--parent', base, '--json');
  assert.equal(cc.status, 0, cc.stderr);
  assert.equal(cc.json.type, 'differencing');
  assert.equal(cc.json.size, 16 * MiB);
  assert.equal(cc.json.parentChain.length, 1);
  assert.equal(await realOrSame(cc.json.parentChain[0]!), await realOrSame(base));
  const cd = await openDisk(child);
  await cd.write(MiB + 512, pattern(5000, 2));
  await cd.write(10 * MiB, pattern(MiB, 3));
  await cd.close();
  const expected = join(dir, 'expected.img');
  assert.equal((await tidemark('disk', 'convert', child, expected, '--format', 'raw')).status, 0, 'flattening convert');
  assert.notEqual((await tidemark('disk', 'compare', base, expected)).status, 0);

  const notDiff = await tidemark('disk', 'merge', base);
  assert.equal(notDiff.status, ExitCode.USAGE);
  assert.match(notDiff.stderr, /no parent/);
  const m = await tidemark('disk', 'merge', child);
  assert.equal(m.status, 0, m.stderr);
  assert.match(m.stdout, /merged/);
  const cmp = await tidemark('disk', 'compare', base, expected);
  assert.equal(cmp.status, 0, cmp.stdout);
  assert.equal((await tidemark('disk', 'merge', join(dir, 'none'))).status, ExitCode.NOT_FOUND);
  const raw = join(dir, 'r');
  await writeFile(raw, Buffer.alloc(4096));
  assert.equal((await tidemark('disk', 'merge', raw)).status, ExitCode.USAGE);
});

async function realOrSame(p: string): Promise<string> {
  const { realpath } = await import('node:fs/promises');
  return realpath(p).catch(() => p);
}
