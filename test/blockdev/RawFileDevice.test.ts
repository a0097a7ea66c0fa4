import assert from 'node:assert/strict';
import { existsSync, statfsSync } from 'node:fs';
import { readFile, stat, writeFile, mkdtemp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { RawFileDevice } from '../../src/blockdev/RawFileDevice.js';
import { AlreadyExistsError } from '../../src/blockdev/errors.js';
import { NotFoundError, NotSupportedError, ReadOnlyError, UsageError } from '../../src/errors.js';
import { requireTools, run, tempDir } from '../helpers/tools.js';
import { alignedSharedBuffer } from '../../src/util/alignedSharedBuffer.js';
import { pattern, runContract } from './contract.js';

const MiB = 1024 * 1024;
const TiB = 1024 * 1024 * MiB;

runContract(
  'RawFileDevice',
  async (t, size) => {
    const path = join(await tempDir(t), 'disk.img');
    return { device: await RawFileDevice.create(path, size), reopen: () => RawFileDevice.open(path) };
  },
  { sizes: [MiB, MiB + 12345] },
);

runContract(
  'RawFileDevice (directWrites)',
  async (t, size) => {
    const path = join(await tempDir(t), 'disk.img');
    return { device: await RawFileDevice.create(path, size, { directWrites: true }), reopen: () => RawFileDevice.open(path, { directWrites: true }) };
  },
  { sizes: [MiB + 12345] },
);

runContract(
  'RawFileDevice (read-only)',
  async (t, size) => {
    const path = join(await tempDir(t), 'disk.img');
    const dev = await RawFileDevice.create(path, size);
    await dev.write(4096, pattern(70000, 3));
    await dev.close();
    return { device: await RawFileDevice.open(path, { readOnly: true }) };
  },
  { readOnly: true },
);

const TMPFS = '/dev/shm';
const haveTmpfs = existsSync(TMPFS) && statfsSync(TMPFS).type === 0x01021994;
if (haveTmpfs) {
  // tmpfs can punch holes but not ZERO_RANGE: exercises the noHole fallbacks.
  runContract(
    'RawFileDevice on tmpfs',
    async (_t, size) => {
      const dir = await mkdtemp(join(TMPFS, 'tidemark-'));
      const path = join(dir, 'disk.img');
      return { device: await RawFileDevice.create(path, size), reopen: () => RawFileDevice.open(path), cleanup: () => rm(dir, { recursive: true, force: true }) };
    },
    { sizes: [MiB], largeSize: 0 },
  );
}

test('RawFileDevice.create makes a sparse file and refuses to overwrite', async (t) => {
  const path = join(await tempDir(t), 'disk.img');
  const dev = await RawFileDevice.create(path, 3 * TiB);
  assert.equal(dev.size, 3 * TiB);
  assert.ok((await dev.allocatedBytes()) < MiB, 'nothing allocated');
  assert.deepEqual(await dev.extents(0, dev.size), [{ offset: 0, length: 3 * TiB, type: 'hole' }]);
  await dev.close();
  assert.equal((await stat(path)).size, 3 * TiB);
  await assert.rejects(RawFileDevice.create(path, MiB), AlreadyExistsError);
  assert.equal((await stat(path)).size, 3 * TiB, 'existing file untouched');
  await assert.rejects(RawFileDevice.create(join(path, 'x', 'y.img'), MiB), (e) => e instanceof NotFoundError || (e as NodeJS.ErrnoException).code === 'ENOTDIR');
  await assert.rejects(RawFileDevice.create(join(await tempDir(t), 'a.img'), -1), UsageError);
  await assert.rejects(RawFileDevice.create(join(await tempDir(t), 'b.img'), MiB, { logicalSectorSize: 1000 }), UsageError);
});

test('RawFileDevice.open: missing file, directory, sector sizes', async (t) => {
  const dir = await tempDir(t);
  await assert.rejects(RawFileDevice.open(join(dir, 'nope.img')), NotFoundError);
  await assert.rejects(RawFileDevice.open(dir), UsageError);
  await writeFile(join(dir, 'd.img'), Buffer.alloc(8192, 7));
  const dev = await RawFileDevice.open(join(dir, 'd.img'), { logicalSectorSize: 4096 });
  assert.equal(dev.logicalSectorSize, 4096);
  assert.equal(dev.size, 8192);
  assert.ok((await dev.read(100, 10)).equals(Buffer.alloc(10, 7)));
  await dev.close();
});

test('RawFileDevice: extents follow real allocation (data / hole) on a sparse file > 2 TiB', async (t) => {
  const path = join(await tempDir(t), 'disk.img');
  const dev = await RawFileDevice.create(path, 3 * TiB);
  const at = [MiB, 2 * TiB + 5 * MiB, 3 * TiB - MiB];
  for (const off of at) await dev.write(off, Buffer.alloc(MiB, 0x11));
  const ext = await dev.extents(0, dev.size);
  assert.deepEqual(ext.filter((e) => e.type === 'data'), at.map((off) => ({ offset: off, length: MiB, type: 'data' })));
  assert.equal(ext.reduce((n, e) => n + e.length, 0), dev.size);
  // Sub-range queries clip to the range.
  assert.deepEqual(await dev.extents(2 * TiB + 5 * MiB + 100, 2 * MiB), [
    { offset: 2 * TiB + 5 * MiB + 100, length: MiB - 100, type: 'data' },
    { offset: 2 * TiB + 6 * MiB, length: MiB + 100, type: 'hole' },
  ]);
  await dev.close();
});

test('RawFileDevice: trim and zero deallocate; zero noHole keeps storage; fast zero on ext4', async (t) => {
  const path = join(await tempDir(t), 'disk.img');
  const dev = await RawFileDevice.create(path, 16 * MiB);
  assert.equal(dev.capabilities.trim, true, 'this filesystem punches holes');
  assert.equal(dev.capabilities.extents, true);
  await dev.write(0, Buffer.alloc(16 * MiB, 0xaa));
  await dev.flush();
  const full = await dev.allocatedBytes();
  assert.ok(full >= 16 * MiB);
  await dev.trim(0, 4 * MiB);
  assert.ok((await dev.allocatedBytes()) <= full - 4 * MiB, 'trim released storage');
  await dev.zero(4 * MiB, 4 * MiB);
  assert.ok((await dev.allocatedBytes()) <= full - 8 * MiB, 'zero released storage');
  const before = await dev.allocatedBytes();
  await dev.zero(8 * MiB, 4 * MiB, { noHole: true, fast: true });
  assert.equal(await dev.allocatedBytes(), before, 'zero noHole kept storage allocated');
  assert.ok((await dev.read(0, 12 * MiB)).every((b) => b === 0));
  assert.ok((await dev.read(12 * MiB, 4 * MiB)).every((b) => b === 0xaa));
  assert.deepEqual((await dev.extents(0, 4 * MiB)).map((e) => e.type), ['hole']);
  await dev.close();
});

test('RawFileDevice on tmpfs: fast noHole zero is refused, plain noHole zero writes zeros', { skip: !haveTmpfs && 'no tmpfs at /dev/shm' }, async (t) => {
  const dir = await mkdtemp(join(TMPFS, 'tidemark-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const dev = await RawFileDevice.create(join(dir, 'disk.img'), 4 * MiB);
  await dev.write(0, Buffer.alloc(4 * MiB, 0x33));
  await assert.rejects(dev.zero(MiB, MiB, { noHole: true, fast: true }), NotSupportedError);
  assert.ok((await dev.read(MiB, MiB)).every((b) => b === 0x33), 'refused fast zero changed nothing');
  const alloc = await dev.allocatedBytes();
  await dev.zero(MiB, MiB, { noHole: true });
  assert.ok((await dev.read(MiB, MiB)).every((b) => b === 0));
  assert.equal(await dev.allocatedBytes(), alloc, 'storage kept');
  await dev.zero(2 * MiB, MiB, { fast: true }); // punch works on tmpfs
  assert.ok((await dev.allocatedBytes()) < alloc);
  await dev.close();
});

test('RawFileDevice: a read-only open never modifies the file', async (t) => {
  const path = join(await tempDir(t), 'disk.img');
  await writeFile(path, pattern(MiB, 42));
  const before = await stat(path, { bigint: true });
  const dev = await RawFileDevice.open(path, { readOnly: true });
  assert.equal(dev.capabilities.readOnly, true);
  await assert.rejects(dev.write(0, Buffer.alloc(1)), ReadOnlyError);
  await assert.rejects(dev.zero(0, 4096), ReadOnlyError);
  await assert.rejects(dev.trim(0, 4096), ReadOnlyError);
  await assert.rejects(dev.resize(2 * MiB), ReadOnlyError);
  await dev.flush();
  await dev.close();
  const after = await stat(path, { bigint: true });
  assert.equal(after.mtimeNs, before.mtimeNs);
  assert.ok((await readFile(path)).equals(pattern(MiB, 42)));
});

test('RawFileDevice: identity fingerprints dev/ino/size/mtime and changes on writes', async (t) => {
  const path = join(await tempDir(t), 'disk.img');
  const dev = await RawFileDevice.create(path, MiB);
  const a = await dev.identity();
  assert.equal(a.current, a.next, 'raw has no write GUID to rotate');
  const st = await stat(path, { bigint: true });
  assert.equal(a.current, `raw:${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}`);
  assert.deepEqual(await dev.identity(), a, 'stable without writes');
  await new Promise((r) => setTimeout(r, 20));
  await dev.write(0, Buffer.alloc(512, 1));
  const b = await dev.identity();
  assert.notEqual(b.current, a.current, 'our own write changes mtime, so the tracker must re-record');
  await dev.close();
  // Another writer changes it too.
  await new Promise((r) => setTimeout(r, 20));
  await writeFile(path, Buffer.alloc(MiB, 2));
  const again = await RawFileDevice.open(path, { readOnly: true });
  assert.notEqual((await again.identity()).current, b.current);
  await again.close();
});

test('RawFileDevice: resize grows sparsely and shrinks', async (t) => {
  const path = join(await tempDir(t), 'disk.img');
  const dev = await RawFileDevice.create(path, MiB);
  await dev.write(MiB - 10, Buffer.alloc(10, 9));
  await dev.resize(3 * TiB);
  assert.equal(dev.size, 3 * TiB);
  assert.equal((await stat(path)).size, 3 * TiB);
  await dev.write(3 * TiB - 1, Buffer.from([1]));
  assert.ok((await dev.read(MiB - 10, 20)).equals(Buffer.concat([Buffer.alloc(10, 9), Buffer.alloc(10)])));
  await dev.resize(MiB - 5);
  assert.equal(dev.size, MiB - 5);
  await assert.rejects(dev.read(MiB - 5, 1), /outside the device/);
  assert.ok((await dev.read(MiB - 10, 5)).equals(Buffer.alloc(5, 9)));
  await assert.rejects(dev.resize(-1), UsageError);
  await dev.close();
});

test('RawFileDevice: close waits for in-flight operations', async (t) => {
  const path = join(await tempDir(t), 'disk.img');
  const dev = await RawFileDevice.create(path, 64 * MiB);
  const ops = [dev.write(0, Buffer.alloc(32 * MiB, 5)), dev.zero(40 * MiB, 8 * MiB), dev.extents(0, 64 * MiB), dev.trim(50 * MiB, MiB)];
  await dev.close();
  await Promise.all(ops);
  const again = await RawFileDevice.open(path, { readOnly: true });
  assert.ok((await again.read(0, 32 * MiB)).every((b) => b === 5));
  await again.close();
});

/** Pages of `path` in the page cache (fincore, util-linux). */
function residentPages(path: string): number {
  const out = run('fincore', ['--bytes', '--noheadings', '--output', 'PAGES', path]).stdout.trim();
  return Number(out);
}

test('RawFileDevice directWrites: aligned writes from aligned memory bypass the page cache; others and tmpfs still work', async (t) => {
  if (!requireTools(t, 'fincore')) return;
  const dir = await tempDir(t);
  const path = join(dir, 'direct.img');
  const dev = await RawFileDevice.create(path, 16 * MiB, { directWrites: true });
  const mem = alignedSharedBuffer(4 * MiB);
  mem.set(pattern(4 * MiB, 31));
  await dev.writev(4 * MiB, [mem.subarray(0, 2 * MiB), mem.subarray(2 * MiB)]);
  assert.ok(residentPages(path) < 64, `aligned writes went around the page cache (${residentPages(path)} pages cached)`);
  // Unaligned offset / unaligned memory: the normal path, same content rules.
  await dev.write(12 * MiB + 3, pattern(10000, 32));
  await dev.write(8 * MiB, Buffer.concat([Buffer.alloc(1), mem.subarray(0, 4096)]).subarray(1));
  assert.ok(residentPages(path) >= 2, 'unaligned writes are cached as usual');
  await dev.close();
  const back = await readFile(path);
  assert.ok(back.subarray(4 * MiB, 8 * MiB).equals(mem), 'direct writes landed');
  assert.ok(back.subarray(12 * MiB + 3, 12 * MiB + 10003).equals(pattern(10000, 32)));
  assert.ok(back.subarray(8 * MiB, 8 * MiB + 4096).equals(mem.subarray(0, 4096)));
  assert.ok(back.subarray(0, 4 * MiB).every((b) => b === 0), 'nothing else written');
  if (haveTmpfs) {
    // tmpfs refuses O_DIRECT: the option is ignored, writes work.
    const tdir = await mkdtemp(join(TMPFS, 'tidemark-'));
    try {
      const tdev = await RawFileDevice.create(join(tdir, 'd.img'), MiB, { directWrites: true });
      await tdev.writev(0, [mem.subarray(0, 4096), mem.subarray(4096, 8192)]);
      assert.ok((await tdev.read(0, 8192)).equals(mem.subarray(0, 8192)));
      await tdev.close();
    } finally {
      await rm(tdir, { recursive: true, force: true });
    }
  }
});
