import { test } from 'node:test';
import assert from 'node:assert/strict';
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { tempDir } from '../helpers/tools.js';
import { allocated, MiB, TiB, tidemark, tidemarkJson, type DiskInfoJson } from './cliHarness.js';
import { makeRaw } from './fixtures.js';

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
  const vi = await tidemarkJson<DiskInfoJson>('disk', 'info', v, '--json');
  assert.equal(vi.json.size, size);
  assert.ok(vi.json.allocatedBytes < 256 * MiB, `sparse vhdx: ${vi.json.allocatedBytes}`);
});

