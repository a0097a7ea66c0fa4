import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFile, open } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { VhdxDevice } from '../../src/vhdx/VhdxDevice.js';
import { checkVhdx } from '../../src/vhdx/checkVhdx.js';
import { VhdxDirtyLogError } from '../../src/vhdx/errors.js';
import { batEntryToBuffer } from '../../src/vhdx/format/BatEntry.js';
import { HEADER_OFFSETS, MiB, PAYLOAD_FULLY_PRESENT } from '../../src/vhdx/format/constants.js';
import { newGuid } from '../../src/vhdx/format/guid.js';
import { headerToBuffer, pickHeader } from '../../src/vhdx/format/Header.js';
import { logEntryToBuffer } from '../../src/vhdx/format/LogEntry.js';
import { requireTools, run, tempDir } from '../helpers/tools.js';
import { pattern, rawRead, sha256 } from './helpers.js';

const crashWriter = fileURLToPath(new URL('./fixtures/crashWriter.js', import.meta.url));

/**
 * A dynamic disk whose block 2 holds data on disk, but whose BAT entry saying so exists only in an
 * un-replayed log entry (as after a crash between log write and apply). Also returns the expected content.
 */
async function dirtyDisk(dir: string, opts: { torn?: boolean } = {}): Promise<{ path: string; expected: Buffer }> {
  const path = join(dir, 'dirty.vhdx');
  const size = 8 * MiB;
  const dev = await VhdxDevice.create(path, { size, blockSize: MiB });
  await dev.write(0, Buffer.alloc(4096, 0xee));
  await dev.close();
  const fh = await open(path, 'r+');
  try {
    const slots = await Promise.all(HEADER_OFFSETS.map(async (o) => { const b = Buffer.alloc(4096); await fh.read(b, 0, 4096, o); return b; }));
    const { header, slot } = pickHeader(slots as [Buffer, Buffer]);
    const fileSize = (await fh.stat()).size;
    const data = pattern(MiB, 77);
    await fh.truncate(fileSize + MiB);
    await fh.write(data, 0, MiB, fileSize);
    // BAT region: 1 MiB after the metadata region (our layout: log 1 MiB @1 MiB, metadata @2 MiB, BAT @3 MiB).
    const batSector = Buffer.alloc(4096);
    await fh.read(batSector, 0, 4096, 3 * MiB);
    batEntryToBuffer({ state: PAYLOAD_FULLY_PRESENT, fileOffset: fileSize }, batSector, 2 * 8);
    const logGuid = newGuid();
    const entry = logEntryToBuffer({ sequenceNumber: 5n, tail: 0, logGuid, flushedFileOffset: fileSize + MiB, lastFileOffset: fileSize + MiB, zeros: [], writes: [{ fileOffset: 3 * MiB, data: batSector }] });
    if (opts.torn) entry[entry.length - 100]! ^= 0x40;
    await fh.write(entry, 0, entry.length, header.logOffset);
    const h = { ...header, sequenceNumber: header.sequenceNumber + 1n, logGuid };
    await fh.write(headerToBuffer(h), 0, 4096, HEADER_OFFSETS[1 - slot]!);
    const expected = Buffer.alloc(size);
    expected.fill(0xee, 0, 4096);
    if (!opts.torn) data.copy(expected, 2 * MiB);
    return { path, expected };
  } finally {
    await fh.close();
  }
}

test('a read-only open of a dirty log fails with VhdxDirtyLogError and never writes; check reports it without writing', async (t) => {
  const dir = await tempDir(t, 'vhdx-log-');
  const { path } = await dirtyDisk(dir);
  const before = await sha256(path);
  await assert.rejects(VhdxDevice.open(path, { readOnly: true }), (e: unknown) => e instanceof VhdxDirtyLogError && /open it read-write|tidemark disk check/.test(e.message));
  const report = await checkVhdx(path);
  assert.equal(report.logDirty, true);
  assert.equal(report.ok, true, JSON.stringify(report.problems));
  assert.equal(await sha256(path), before, 'file unchanged');
});

test('a read-write open replays the un-replayed log entry and the content is right (qemu agrees)', async (t) => {
  const dir = await tempDir(t, 'vhdx-log-');
  const { path, expected } = await dirtyDisk(dir);
  const qcopy = join(dir, 'qemu-copy.vhdx');
  await copyFile(path, qcopy);
  const dev = await VhdxDevice.open(path);
  assert.ok((await dev.read(0, expected.length)).equals(expected));
  await dev.close();
  const ro = await VhdxDevice.open(path, { readOnly: true });
  assert.equal(ro.info().logDirty, false);
  assert.ok((await ro.read(0, expected.length)).equals(expected));
  await ro.close();
  if (!requireTools(t, 'qemu-img')) return;
  // qemu sees our hand-made entry as a valid log that must be replayed...
  const info = run('qemu-img', ['info', '-f', 'vhdx', qcopy], { allowFail: true });
  assert.notEqual(info.status, 0);
  assert.match(info.stderr, /log that needs to be replayed/);
  // ...and replays it to the same content.
  run('qemu-img', ['check', '-r', 'all', '-f', 'vhdx', qcopy], { allowFail: true });
  run('qemu-img', ['convert', '-f', 'vhdx', '-O', 'raw', qcopy, join(dir, 'q.raw')]);
  assert.ok((await rawRead(join(dir, 'q.raw'), 0, expected.length)).equals(expected));
  assert.equal(run('qemu-img', ['check', '-f', 'vhdx', path], { allowFail: true }).status, 0);
});

test('a torn log entry (bad checksum) is ignored: the previous state stands', async (t) => {
  const dir = await tempDir(t, 'vhdx-log-');
  const { path, expected } = await dirtyDisk(dir, { torn: true });
  const ro = await VhdxDevice.open(path, { readOnly: true });
  assert.ok((await ro.read(0, expected.length)).equals(expected));
  await ro.close();
  const rw = await VhdxDevice.open(path);
  assert.ok((await rw.read(0, expected.length)).equals(expected));
  await rw.close();
});

test('SIGKILL after flush: the log is dirty, replay on read-write open restores every flushed write', async (t) => {
  const dir = await tempDir(t, 'vhdx-log-');
  const path = join(dir, 'k.vhdx');
  const dev = await VhdxDevice.create(path, { size: 16 * MiB, blockSize: MiB });
  await dev.write(0, Buffer.alloc(2 * MiB, 0x33));
  const idBefore = await dev.identity();
  await dev.close();
  const r = spawnSync(process.execPath, [crashWriter, path, 'write-flush-kill']);
  assert.equal(r.signal, 'SIGKILL', r.stderr?.toString());
  const expected = Buffer.alloc(16 * MiB);
  expected.fill(0x33, 0, 2 * MiB);
  expected.fill(0, 0, MiB);
  pattern(2 * MiB, 5).copy(expected, 3 * MiB + 11);
  await assert.rejects(VhdxDevice.open(path, { readOnly: true }), VhdxDirtyLogError);
  const rw = await VhdxDevice.open(path);
  assert.ok((await rw.read(0, 16 * MiB)).equals(expected));
  const id = await rw.identity();
  assert.notEqual(id.current, idBefore.current, 'the crashed session rotated the DataWriteGuid before writing');
  await rw.close();
  if (requireTools(t, 'qemu-img')) assert.equal(run('qemu-img', ['check', '-f', 'vhdx', path], { allowFail: true }).status, 0);
});

test('identity: FileWriteGuid and DataWriteGuid rotate on the first write of each open, not on read-only opens', async (t) => {
  const dir = await tempDir(t, 'vhdx-log-');
  const path = join(dir, 'i.vhdx');
  const dev = await VhdxDevice.create(path, { size: 4 * MiB, blockSize: MiB });
  const id0 = await dev.identity();
  const info0 = dev.info();
  assert.notEqual(id0.current, id0.next);
  await dev.read(0, 100);
  assert.equal((await dev.identity()).current, id0.current, 'reads change nothing');
  await dev.write(10, Buffer.from('x'));
  const id1 = await dev.identity();
  assert.equal(id1.current, id0.next, 'the announced next guid is what got written');
  assert.notEqual(dev.info().fileWriteGuid, info0.fileWriteGuid);
  await dev.write(20, Buffer.from('y'));
  assert.equal((await dev.identity()).current, id1.current, 'only the first write of an open rotates');
  await dev.close();
  const before = await sha256(path);
  const ro = await VhdxDevice.open(path, { readOnly: true });
  assert.equal((await ro.identity()).current, id1.current);
  assert.equal((await ro.identity()).next, id1.current);
  await ro.close();
  assert.equal(await sha256(path), before, 'read-only open never writes');
  const rw = await VhdxDevice.open(path);
  assert.equal(rw.info().dataWriteGuid, id1.current);
  await rw.close();
  const rw2 = await VhdxDevice.open(path);
  assert.equal((await rw2.identity()).current, id1.current, 'an open without writes keeps the DataWriteGuid');
  await rw2.zero(0, MiB);
  assert.notEqual((await rw2.identity()).current, id1.current);
  await rw2.close();
});
