import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { ExitCode } from '../../src/errors.js';
import { tempDir } from '../helpers/tools.js';
import { allocated, GiB, MiB, TiB, tidemark, tidemarkJson, type DiskInfoJson } from './cliHarness.js';
import { makeRaw } from './fixtures.js';

test('disk --help and every subcommand --help exit 0 and describe usage', async () => {
  const subs = ['', 'create', 'info', 'check', 'convert', 'compare', 'merge', 'resize'];
  const results = await Promise.all(subs.map((sub) => tidemark('disk', ...(sub ? [sub] : []), '--help')));
  results.forEach((r, i) => {
    assert.equal(r.status, 0, `${subs[i]} --help: ${r.stderr}`);
    assert.match(r.stdout, new RegExp(`Usage: tidemark disk${subs[i] ? ` ${subs[i]}` : ''}`));
  });
});

test('create: dynamic VHDX by default, raw, fixed, sector sizes, block size; info reports them', async (t) => {
  const dir = await tempDir(t);
  const v = join(dir, 'a.vhdx');
  const c = await tidemarkJson<DiskInfoJson>('disk', 'create', v, '--size', '1G', '--json');
  assert.equal(c.status, 0, c.stderr);
  assert.equal(c.json.format, 'vhdx');
  assert.equal(c.json.type, 'dynamic');
  assert.equal(c.json.size, GiB);
  const i = await tidemarkJson<DiskInfoJson>('disk', 'info', v, '--json');
  assert.equal(i.status, 0);
  assert.deepEqual({ ...i.json }, { ...c.json });
  assert.match(i.json.diskId ?? '', /^[0-9a-f-]{36}$/i);
  assert.ok((await stat(v)).size < 16 * MiB, 'dynamic disk is small');

  const f = join(dir, 'f.vhdx');
  const cf = await tidemarkJson<DiskInfoJson>('disk', 'create', f, '--size', '64M', '--type', 'fixed', '--block-size', '8M', '--logical-sector-size', '4096', '--json');
  assert.equal(cf.status, 0, cf.stderr);
  assert.equal(cf.json.type, 'fixed');
  assert.equal(cf.json.blockSize, 8 * MiB);
  assert.equal(cf.json.logicalSectorSize, 4096);
  assert.ok((await stat(f)).size >= 64 * MiB, 'fixed disk holds its payload');

  const r = join(dir, 'r.img');
  const cr = await tidemarkJson<DiskInfoJson>('disk', 'create', r, '--size', '3T', '--format', 'raw', '--json');
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
  const results = await Promise.all(cases.map(([args]) => tidemark('disk', 'create', join(dir, 'b.vhdx'), ...args)));
  results.forEach((r, i) => {
    const [args, msg] = cases[i]!;
    assert.equal(r.status, ExitCode.USAGE, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, msg, args.join(' '));
  });
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
  assert.equal((await tidemarkJson<DiskInfoJson>('disk', 'info', v, '--json')).json.format, 'vhdx');
  const ri = await tidemarkJson<DiskInfoJson>('disk', 'info', r, '--json');
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

