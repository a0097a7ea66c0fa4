import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { LocalBackend } from '../../src/backend/LocalBackend.js';
import { join } from 'node:path';
import { MemoryDevice } from '../../src/blockdev/MemoryDevice.js';
import { RawFileDevice } from '../../src/blockdev/RawFileDevice.js';
import { backupDevice } from '../../src/repo/backupDevice.js';
import { CorruptObjectError } from '../../src/repo/errors.js';
import { IndexTree } from '../../src/repo/IndexTree.js';
import { restoreDevice } from '../../src/repo/restoreDevice.js';
import { tempDir } from '../helpers/tools.js';
import { deviceHash, flipBlobByte, initRepo, recordPublishOrder } from './helpers.js';

const KiB = 1024;

/** A disk with random, compressible, repeated and zero chunks and a short last chunk. */
async function makeDisk(): Promise<MemoryDevice> {
  const dev = new MemoryDevice(3 * 1024 * KiB + 1000);
  const rnd = randomBytes(4 * KiB);
  for (let off = 0; off + 4 * KiB <= dev.size; off += 4 * KiB) {
    const i = off / (4 * KiB);
    if (i % 7 === 3) continue; // zero chunk
    if (i % 5 === 0) await dev.write(off, rnd); // the same chunk at many places
    else if (i % 3 === 0) await dev.write(off, Buffer.alloc(4 * KiB, `text ${i} `));
    else await dev.write(off, randomBytes(4 * KiB));
  }
  await dev.write(dev.size - 1000, randomBytes(1000));
  return dev;
}

for (const encrypted of [false, true]) {
  for (const workers of [0, 2]) {
    test(`restore reads pack windows, decodes ${workers ? `on ${workers} workers` : 'inline'}, writes out of order: bit-exact, incremental chunks from other packs (${encrypted ? 'encrypted' : 'plain'})`, async (t) => {
      const repo = await initRepo(new LocalBackend(await tempDir(t)), { chunkSize: 4 * KiB, fanout: 16, packSize: 256 * KiB, ...(encrypted ? { passphrase: 'pw' } : {}) });
      const dev = await makeDisk();
      const full = await backupDevice(repo, dev);
      // Change scattered chunks: the incremental's chunks live in new packs, interleaved with old ones.
      const changed: Array<{ offset: number; length: number }> = [];
      for (let off = 8 * KiB; off < dev.size - 8 * KiB; off += 97 * KiB) {
        await dev.write(off + 100, randomBytes(5000));
        changed.push({ offset: off + 100, length: 5000 });
      }
      const inc = await backupDevice(repo, dev, { previous: full.disk, changedRanges: changed });
      await repo.flush();
      assert.ok(repo.packs.indexedPacks.size >= 8, 'several packs: several windows');
      const target = new MemoryDevice(dev.size);
      const p = await restoreDevice(repo, inc.disk, target, { workers });
      assert.equal(await deviceHash(target), await deviceHash(dev));
      let nonZero = 0;
      for await (const _ of IndexTree.open(repo, inc.disk).entries()) nonZero++;
      assert.equal(p.chunksDone, nonZero, 'every non-zero chunk written, zero chunks skipped');
      await repo.close();
    });
  }
}

for (const workers of [0, 1]) {
  test(`restore: a damaged chunk inside a window is CorruptObjectError naming it and its pack (${workers ? 'worker' : 'inline'})`, async (t) => {
    const repo = await initRepo(new LocalBackend(await tempDir(t)), { chunkSize: 4 * KiB, fanout: 16 });
    const dev = new MemoryDevice(512 * KiB);
    await dev.write(0, randomBytes(dev.size));
    const { disk } = await backupDevice(repo, dev);
    await repo.flush();
    const victim = await IndexTree.open(repo, disk).lookup(60);
    const loc = await flipBlobByte(repo, 'chunks', victim, 40);
    assert.ok(loc.offset > 0, 'the damaged blob is in the middle of its pack');
    await assert.rejects(restoreDevice(repo, disk, new MemoryDevice(dev.size), { workers }), (e: unknown) => {
      assert.ok(e instanceof CorruptObjectError);
      assert.equal(e.objectName, victim);
      assert.equal(e.data.pack, loc.pack);
      assert.equal(e.data.offset, loc.offset);
      return true;
    });
    await repo.close();
  });
}

test('flush stores one pack index naming both the data and the tree pack, published after them', async (t) => {
  const { LocalBackend } = await import('../../src/backend/LocalBackend.js');
  const backend = new LocalBackend(await tempDir(t));
  const repo = await initRepo(backend, { chunkSize: 4 * KiB, fanout: 16 });
  const order = recordPublishOrder(backend);
  const dev = new MemoryDevice(256 * KiB);
  await dev.write(0, randomBytes(dev.size));
  await backupDevice(repo, dev);
  await repo.flush();
  assert.deepEqual(order, ['packs', 'packs', 'packindex']);
  const names: string[] = [];
  for await (const n of backend.list('packindex')) names.push(n);
  assert.equal(names.length, 1);
  assert.equal((await repo.packs.readIndex(names[0])).length, 2, 'one index names both packs');
  await repo.close();
});

for (const encrypted of [false, true]) {
  test(`restore into a raw file with vectored O_DIRECT writes (RawFileDevice directWrites): bit-exact, also the short last chunk (${encrypted ? 'encrypted' : 'plain'})`, async (t) => {
    const dir = await tempDir(t);
    const repo = await initRepo(new LocalBackend(join(dir, 'repo')), { chunkSize: 4 * KiB, fanout: 16, packSize: 256 * KiB, ...(encrypted ? { passphrase: 'pw' } : {}) });
    const dev = await makeDisk();
    const { disk } = await backupDevice(repo, dev);
    await repo.flush();
    const target = await RawFileDevice.create(join(dir, 'out.raw'), dev.size, { directWrites: true });
    let vectored = 0;
    const writev = target.writev!.bind(target);
    target.writev = (offset, buffers) => {
      vectored++;
      return writev(offset, buffers);
    };
    await restoreDevice(repo, disk, target, { workers: 1 });
    await target.close();
    assert.ok(vectored > 0, 'runs of chunks gathered into vectored writes');
    const back = await RawFileDevice.open(join(dir, 'out.raw'), { readOnly: true });
    assert.equal(await deviceHash(back), await deviceHash(dev));
    await back.close();
    await repo.close();
  });
}
