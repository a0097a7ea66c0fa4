import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { mkdir, open, rm, type FileHandle } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { fileURLToPath } from 'node:url';
import { alignGap, allocate, ficlone, ficloneRange, flock, isNotSupported, nativeAvailable, punchHole, seekData, seekHole, zeroRange, type NativeErrnoError } from '../../src/native/native.js';
import { hasTool, run, tempDir } from '../helpers/tools.js';
import { exited, startChild } from './childProcess.js';
import { mountXfs, xfsSkipReason } from './xfsMount.js';
import { alignedSharedBuffer } from '../../src/util/alignedSharedBuffer.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const TiB = 1024 * 1024 * MiB;
const HOLDER = fileURLToPath(new URL('./fixtures/holdFlock.js', import.meta.url));

async function tempFile(t: TestContext, name = 'f.img', flags = 'w+'): Promise<{ path: string; handle: FileHandle }> {
  const path = join(await tempDir(t), name);
  const handle = await open(path, flags);
  t.after(() => handle.close().catch(() => {}));
  return { path, handle };
}

async function blocks(h: FileHandle): Promise<number> {
  return (await h.stat()).blocks * 512;
}

function errnoError(code: string[], syscall: string) {
  return (err: unknown) => {
    const e = err as NativeErrnoError;
    assert.ok(e instanceof Error, 'an Error');
    assert.ok(code.includes(e.code), `code ${e.code} in ${code.join('/')}`);
    assert.equal(e.syscall, syscall);
    assert.equal(typeof e.errno, 'number');
    assert.ok(e.errno < 0);
    assert.match(e.message, new RegExp(`^${e.code}: `));
    return true;
  };
}

test('native addon loads', () => {
  assert.equal(nativeAvailable(), true, 'build it with npm run build');
});

test('seekData / seekHole walk a sparse file, also past 2 TiB', async (t) => {
  const { handle } = await tempFile(t);
  await handle.truncate(3 * TiB);
  const runs = [MiB, 2 * TiB + 3 * MiB];
  for (const off of runs) await handle.write(Buffer.alloc(64 * KiB, 1), 0, 64 * KiB, off);
  assert.equal(await seekData(handle.fd, 0), MiB);
  assert.equal(await seekHole(handle.fd, MiB), MiB + 64 * KiB);
  assert.equal(await seekHole(handle.fd, 0), 0, 'offset 0 is in a hole');
  assert.equal(await seekData(handle.fd, MiB + 64 * KiB), 2 * TiB + 3 * MiB, 'int64 offsets beyond 2^32 and 2^41');
  assert.equal(await seekHole(handle.fd, 2 * TiB + 3 * MiB + 100), 2 * TiB + 3 * MiB + 64 * KiB);
  assert.equal(await seekData(handle.fd, 2 * TiB + 4 * MiB), -1, 'only a hole follows: -1 (ENXIO)');
  assert.equal(await seekHole(handle.fd, 3 * TiB - 1), 3 * TiB - 1);
  await assert.rejects(seekHole(handle.fd, 3 * TiB + 1), errnoError(['ENXIO'], 'lseek(SEEK_HOLE)'));
  await assert.rejects(seekData(9999, 0), errnoError(['EBADF'], 'lseek(SEEK_DATA)'));
  await assert.rejects(seekData(handle.fd, -1), TypeError);
  await assert.rejects(seekData(handle.fd, 1.5), TypeError);
});

test('punchHole deallocates and reads zeros; zeroRange zeroes; allocate reserves', async (t) => {
  const { handle } = await tempFile(t);
  await handle.write(Buffer.alloc(4 * MiB, 0xab), 0, 4 * MiB, 0);
  await handle.datasync();
  const full = await blocks(handle);
  await punchHole(handle.fd, MiB, MiB);
  assert.equal((await handle.stat()).size, 4 * MiB, 'size kept');
  assert.ok((await blocks(handle)) <= full - MiB, 'storage released');
  const back = Buffer.alloc(4 * MiB);
  await handle.read(back, 0, 4 * MiB, 0);
  assert.ok(back.subarray(MiB, 2 * MiB).every((b) => b === 0));
  assert.ok(back.subarray(0, MiB).every((b) => b === 0xab) && back.subarray(2 * MiB).every((b) => b === 0xab));
  assert.equal(await seekData(handle.fd, MiB), 2 * MiB, 'the punched range is a hole');
  // Unaligned punch zeroes the partial blocks too.
  await punchHole(handle.fd, 3 * MiB + 100, 5000);
  await handle.read(back, 0, 4 * MiB, 0);
  assert.ok(back.subarray(3 * MiB + 100, 3 * MiB + 5100).every((b) => b === 0));
  assert.equal(back[3 * MiB + 99], 0xab);
  assert.equal(back[3 * MiB + 5100], 0xab);

  const before = await blocks(handle);
  await zeroRange(handle.fd, 0, MiB);
  await handle.read(back, 0, MiB, 0);
  assert.ok(back.subarray(0, MiB).every((b) => b === 0));
  assert.equal(await blocks(handle), before, 'zeroRange keeps storage');

  await allocate(handle.fd, MiB, MiB);
  assert.ok((await blocks(handle)) >= before + MiB, 'allocate reserved the hole');
  await allocate(handle.fd, 4 * MiB, MiB);
  assert.equal((await handle.stat()).size, 5 * MiB, 'allocate past EOF grows the file');
  await assert.rejects(punchHole(handle.fd, 0, 0), errnoError(['EINVAL'], 'fallocate(PUNCH_HOLE)'));
});

test('fallocate on a read-only descriptor fails with EBADF', async (t) => {
  const { path, handle } = await tempFile(t);
  await handle.truncate(MiB);
  const ro = await open(path, 'r');
  t.after(() => ro.close());
  await assert.rejects(punchHole(ro.fd, 0, 4096), errnoError(['EBADF'], 'fallocate(PUNCH_HOLE)'));
});

test('zeroRange on tmpfs is a typed ENOTSUP', { skip: !hasTool('stat') }, async (t) => {
  const dir = join('/dev/shm', `tidemark-native-${process.pid}`);
  await mkdir(dir, { recursive: true });
  t.after(() => rm(dir, { recursive: true, force: true }));
  if (run('stat', ['-f', '-c', '%T', dir]).stdout.trim() !== 'tmpfs') return t.skip('/dev/shm is not tmpfs');
  const h = await open(join(dir, 'f'), 'w+');
  t.after(() => h.close());
  await h.truncate(MiB);
  await assert.rejects(zeroRange(h.fd, 0, 4096), (e) => errnoError(['ENOTSUP'], 'fallocate(ZERO_RANGE)')(e) && isNotSupported(e));
  await punchHole(h.fd, 0, 4096);
});

test('ficlone on a filesystem without reflink is a typed not-supported error', async (t) => {
  const { path, handle: src } = await tempFile(t, 'src');
  await src.write(Buffer.alloc(64 * KiB, 7), 0, 64 * KiB, 0);
  const { handle: dest } = await tempFile(t, 'dest');
  const fsType = run('stat', ['-f', '-c', '%T', dirname(path)]).stdout.trim();
  if (['xfs', 'btrfs', 'bcachefs'].includes(fsType)) return t.skip(`the temp dir is on ${fsType}, which has reflink (the XFS test covers it)`);
  await assert.rejects(ficlone(dest.fd, src.fd), (e) => errnoError(['ENOTSUP', 'EXDEV', 'EINVAL'], 'ioctl(FICLONE)')(e) && isNotSupported(e));
  await assert.rejects(ficloneRange(dest.fd, src.fd, 0, 4096, 0), errnoError(['ENOTSUP', 'EXDEV', 'EINVAL'], 'ioctl(FICLONERANGE)'));
});

test('ficlone / ficloneRange share extents on a loop-mounted XFS', async (t) => {
  const xfs = mountXfs();
  if ('why' in xfs) return t.skip(xfsSkipReason(xfs.why));
  const mnt = xfs.mnt;
  const handles: FileHandle[] = [];
  try {
    for (const name of ['src', 'dest', 'part']) handles.push(await open(join(mnt, name), 'w+'));
    const [src, dest, part] = handles as [FileHandle, FileHandle, FileHandle];
    const data = Buffer.alloc(8 * MiB);
    for (let i = 0; i < data.length; i++) data[i] = (i * 31) & 0xff;
    await src.write(data, 0, data.length, 0);
    await src.datasync();
    const freeBefore = Number(run('stat', ['-f', '-c', '%f', mnt]).stdout.trim());
    await ficlone(dest.fd, src.fd);
    const freeAfter = Number(run('stat', ['-f', '-c', '%f', mnt]).stdout.trim());
    assert.ok(freeBefore - freeAfter < 256, `clone used no data blocks (${freeBefore - freeAfter} blocks)`);
    const back = Buffer.alloc(data.length);
    await dest.read(back, 0, back.length, 0);
    assert.ok(back.equals(data), 'clone reads the same');
    // Writing to the clone leaves the source alone (copy on write).
    await dest.write(Buffer.alloc(4096, 0xff), 0, 4096, 0);
    await src.read(back, 0, back.length, 0);
    assert.ok(back.equals(data), 'source unchanged by a write to the clone');
    await part.truncate(4 * MiB);
    await ficloneRange(part.fd, src.fd, MiB, MiB, 2 * MiB);
    const slice = Buffer.alloc(MiB);
    await part.read(slice, 0, MiB, 2 * MiB);
    assert.ok(slice.equals(data.subarray(MiB, 2 * MiB)));
    await assert.rejects(ficloneRange(part.fd, src.fd, 100, 4096, 0), errnoError(['EINVAL'], 'ioctl(FICLONERANGE)'), 'unaligned ranges are EINVAL');
  } finally {
    await Promise.all(handles.map((h) => h.close()));
    xfs.unmount();
  }
});

/** Start the holder child and wait for it to report the lock taken. */
async function holdInChild(t: TestContext, path: string, mode: 'exclusive' | 'shared'): Promise<ChildProcess> {
  const { proc, line } = await startChild(t, HOLDER, [path, mode]);
  assert.equal(line, `locked ${proc.pid}`);
  return proc;
}

test('flock: contention with another process, release on exit, waiting', async (t) => {
  const { path, handle } = await tempFile(t);
  const child = await holdInChild(t, path, 'exclusive');
  assert.equal(await flock(handle.fd, 'exclusive', false), false, 'held exclusively elsewhere');
  assert.equal(await flock(handle.fd, 'shared', false), false, 'shared conflicts with exclusive');
  child.kill('SIGKILL');
  await exited(child);
  assert.equal(await flock(handle.fd, 'exclusive', false), true, 'a dead holder leaves no lock');
  assert.equal(await flock(handle.fd, 'unlock', false), true);

  // Shared locks coexist; a waiting exclusive request is granted when the holder lets go.
  const reader = await holdInChild(t, path, 'shared');
  assert.equal(await flock(handle.fd, 'shared', false), true);
  assert.equal(await flock(handle.fd, 'unlock', false), true);
  const waiting = flock(handle.fd, 'exclusive', true);
  let granted = false;
  void waiting.then(() => (granted = true));
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(granted, false, 'still waiting while the reader holds');
  reader.stdin!.end();
  assert.equal(await waiting, true);
  await exited(reader);
  await assert.rejects(flock(handle.fd, 'bogus' as 'shared', false), TypeError);
});

test('flock: two descriptors in one process conflict (one writer per disk)', async (t) => {
  const { path, handle } = await tempFile(t);
  const other = await open(path, 'r');
  t.after(() => other.close());
  assert.equal(await flock(handle.fd, 'exclusive', false), true);
  assert.equal(await flock(other.fd, 'exclusive', false), false);
  await handle.close();
  assert.equal(await flock(other.fd, 'exclusive', false), true, 'closing the holder releases');
});

test('alignGap reports the distance to the next aligned address; alignedSharedBuffer starts on one', () => {
  const b = alignedSharedBuffer(3 * 4096);
  assert.equal(b.length, 3 * 4096);
  assert.ok(b.buffer instanceof SharedArrayBuffer);
  assert.equal(alignGap(b, 4096), 0);
  assert.equal(alignGap(b.subarray(1), 4096), 4095);
  assert.equal(alignGap(b.subarray(4096 + 100), 4096), 4096 - 100);
  assert.equal(alignGap(b.subarray(8), 16), 8);
  assert.equal(alignGap(b.subarray(16), 16), 0);
  const plain = new Uint8Array(100);
  const g = alignGap(plain, 64);
  assert.ok(g >= 0 && g < 64);
  assert.equal(alignGap(plain.subarray(g), 64), 0, 'consistent with itself at an offset');
  assert.throws(() => alignGap(b, 3), RangeError);
  assert.throws(() => alignGap(b, 0), RangeError);
  assert.throws(() => alignGap({} as Uint8Array, 4096), TypeError);
});
