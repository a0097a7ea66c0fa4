import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, readFile, rm, writeFile } from 'node:fs/promises';
import fc from 'fast-check';
import { join } from 'node:path';
import { fcSeed, tempDir } from '../helpers/tools.js';
import { compareDisks } from '../../src/disk/compareDisks.js';
import { convertDisk } from '../../src/disk/convertDisk.js';
import { createDisk } from '../../src/disk/createDisk.js';
import { diskInfo } from '../../src/disk/diskInfo.js';
import { openDisk } from '../../src/disk/openDisk.js';
import { OperationAbortedError } from '../../src/disk/errors.js';
import { makeRaw, pattern } from './fixtures.js';

const MiB = 1024 * 1024;

test('convertDisk: an abort mid-copy removes the temporary output and leaves dst as it was', async (t) => {
  const dir = await tempDir(t);
  const src = join(dir, 'src.img');
  await makeRaw(src, 64 * MiB, [[0, 64 * MiB]]);
  const dst = join(dir, 'dst.vhdx');
  await writeFile(dst, 'previous good content');
  const ac = new AbortController();
  await assert.rejects(
    convertDisk(src, dst, { chunkSize: MiB, concurrency: 2, signal: ac.signal, onProgress: (done) => { if (done >= 4 * MiB) ac.abort(); } }),
    OperationAbortedError,
  );
  assert.equal(await readFile(dst, 'utf8'), 'previous good content');
  assert.deepEqual((await readdir(dir)).sort(), ['dst.vhdx', 'src.img']);
});

test('convertDisk flattens a differencing chain into a standalone disk', async (t) => {
  const dir = await tempDir(t);
  const base = join(dir, 'base.vhdx');
  const child = join(dir, 'child.vhdx');
  await createDisk(base, { size: 8 * MiB, blockSize: MiB });
  const b = await openDisk(base);
  await b.write(0, pattern(2 * MiB, 1));
  await b.close();
  await createDisk(child, { parent: base });
  const c = await openDisk(child);
  await c.write(MiB, pattern(4096, 2));
  await c.close();
  const flat = join(dir, 'flat.vhdx');
  await convertDisk(child, flat, { format: 'vhdx', type: 'dynamic' });
  const info = await diskInfo(flat);
  assert.deepEqual([info.type, info.parentChain], ['dynamic', []]);
  const f = await openDisk(flat, { readOnly: true });
  const expect = Buffer.concat([pattern(2 * MiB, 1), Buffer.alloc(6 * MiB)]);
  pattern(4096, 2).copy(expect, MiB);
  assert.ok((await f.read(0, 8 * MiB)).equals(expect));
  await f.close();
  await assert.rejects(createDisk(join(dir, 'x.vhdx'), { parent: base, size: 16 * MiB }), /parent's size/);
});

test('raw -> VHDX -> raw round trip is bit-exact for random layouts, block sizes and sector sizes (property)', async (t) => {
  const dir = await tempDir(t);
  let n = 0;
  await fc.assert(
    fc.asyncProperty(
      fc.integer({ min: 1, max: 12 * 1024 }).map((k) => k * 512),
      fc.array(fc.tuple(fc.nat(6 * MiB), fc.integer({ min: 1, max: 600_000 })), { maxLength: 5 }),
      fc.constantFrom(MiB, 2 * MiB, 4 * MiB),
      fc.constantFrom(512, 4096),
      fc.constantFrom('dynamic', 'fixed'),
      async (size, pieces, blockSize, lss, type) => {
        const id = n++;
        const src = join(dir, `src${id}.img`);
        const mid = join(dir, `mid${id}.vhdx`);
        const back = join(dir, `back${id}.img`);
        const vsize = Math.ceil(size / lss) * lss;
        await makeRaw(src, vsize, pieces.filter(([o]) => o < vsize).map(([o, l]) => [o, Math.min(l, vsize - o)]));
        await convertDisk(src, mid, { format: 'vhdx', type: type as 'dynamic' | 'fixed', blockSize, logicalSectorSize: lss as 512 | 4096, chunkSize: MiB });
        await convertDisk(mid, back, { format: 'raw', chunkSize: 3 * MiB });
        assert.ok((await readFile(back)).equals(await readFile(src)));
        assert.deepEqual(await compareDisks(src, mid), { equal: true, sizeA: vsize, sizeB: vsize });
        for (const f of [src, mid, back]) await rm(f);
      },
    ),
    { seed: fcSeed(), numRuns: 15 },
  );
});
