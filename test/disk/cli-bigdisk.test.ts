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

