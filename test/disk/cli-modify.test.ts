import { test } from 'node:test';
import assert from 'node:assert/strict';
import { stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ExitCode } from '../../src/errors.js';
import { tempDir } from '../helpers/tools.js';
import { MiB, tidemark, tidemarkJson, type DiskInfoJson } from './cliHarness.js';
import { makeRaw, pattern } from './fixtures.js';
import { openDisk } from '../../src/disk/openDisk.js';

test('resize: grow raw and VHDX; a lossless shrink just works, a lossy one needs --force', async (t) => {
  const dir = await tempDir(t);
  const v = join(dir, 'v.vhdx');
  const r = join(dir, 'r.img');
  assert.equal((await tidemark('disk', 'create', v, '--size', '64M')).status, 0);
  await makeRaw(r, 64 * MiB, [[0, 4096]]);
  await Promise.all([v, r].map(async (p) => {
    const g = await tidemarkJson<{ oldSize: number; newSize: number }>('disk', 'resize', p, '--size', '128M', '--json');
    assert.equal(g.status, 0, g.stderr);
    assert.deepEqual([g.json.oldSize, g.json.newSize], [64 * MiB, 128 * MiB]);
    assert.equal((await tidemarkJson<DiskInfoJson>('disk', 'info', p, '--json')).json.size, 128 * MiB);
    // only zeros past 96M: no --force needed
    const l = await tidemark('disk', 'resize', p, '--size', '96M');
    assert.equal(l.status, 0, l.stderr);
    assert.equal((await tidemarkJson<DiskInfoJson>('disk', 'info', p, '--json')).json.size, 96 * MiB);
    const dev = await openDisk(p);
    await dev.write(40 * MiB, pattern(4096, 7));
    await dev.close();
    const s = await tidemark('disk', 'resize', p, '--size', '32M');
    assert.equal(s.status, ExitCode.USAGE, s.stderr);
    assert.match(s.stderr, /--force/);
    assert.equal((await tidemarkJson<DiskInfoJson>('disk', 'info', p, '--json')).json.size, 96 * MiB, 'unchanged without --force');
    const f = await tidemark('disk', 'resize', p, '--size', '32M', '--force');
    assert.equal(f.status, 0, f.stderr);
    assert.equal((await tidemarkJson<DiskInfoJson>('disk', 'info', p, '--json')).json.size, 32 * MiB);
  }));
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
  const cc = await tidemarkJson<DiskInfoJson>('disk', 'create', child, '--parent', base, '--json');
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
