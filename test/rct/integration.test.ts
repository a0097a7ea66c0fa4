import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { stat, truncate } from 'node:fs/promises';
import { join } from 'node:path';
import type { BlockDevice } from '../../src/blockdev/BlockDevice.js';
import { DiskLock } from '../../src/blockdev/DiskLock.js';
import { RawFileDevice } from '../../src/blockdev/RawFileDevice.js';
import { ExitCode } from '../../src/errors.js';
import { openDisk } from '../../src/disk/openDisk.js';
import { ChangeTracker } from '../../src/rct/ChangeTracker.js';
import { openTrackedDisk } from '../../src/rct/openTrackedDisk.js';
import { isTracked } from '../../src/rct/trackingLayer.js';
import { openTracked } from '../../src/rct/trackingLayer.js';
import { tempDir } from '../helpers/tools.js';
import { BS, KiB, MiB, changes, cli, ok, seal, tidemarkWrite, verdictNow } from './integrationKit.js';

/**
 * RCT across Tidemark operations that change a disk outside the tracking layer: `tidemark disk resize`
 * (raw and VHDX, grow and shrink) through the real CLI; and a read-write open of a raw disk without
 * writes, which must leave its tracking valid. Merges: mergeIntegration.test.ts.
 */

for (const format of ['raw', 'vhdx'] as const) {
  test(`resize (${format}): growing through \`tidemark disk resize\` keeps older IDs and reports the new area`, async (t) => {
    const dir = await tempDir(t, 'tidemark-rctint-');
    const disk = join(dir, `disk.${format}`);
    // Raw: an odd size, so the old partial last block becomes part of the new area.
    const size = format === 'raw' ? 8 * MiB + 3 * 512 : 8 * MiB;
    if (format === 'raw') await (await RawFileDevice.create(disk, size)).close();
    else await ok('disk', 'create', disk, '--size', String(size), '--block-size', '1M');
    await ok('rct', 'enable', disk, '--block-size', '64K');
    await tidemarkWrite(disk, [[0, 4096]]);
    const id1 = await seal(disk);
    await tidemarkWrite(disk, [[MiB, 4096], [3 * MiB + 100, 70 * KiB]]);

    await new Promise((r) => setTimeout(r, 20)); // any timestamp change by the resize would show
    const res = JSON.parse(await ok('disk', 'resize', disk, '--size', String(12 * MiB), '--json'));
    assert.equal(res.newSize, 12 * MiB);
    assert.equal(res.tracking.tracked, true);
    assert.equal(res.tracking.grewFrom, size);
    assert.equal(res.tracking.restarted, undefined);

    const newArea = { offset: 8 * MiB, length: 4 * MiB };
    assert.deepEqual(await changes(disk, id1), [{ offset: MiB, length: BS }, { offset: 3 * MiB, length: 2 * BS }, newArea]);
    assert.equal(await verdictNow(disk), 'clean', 'the resize was re-bound: the next open trusts the state exactly');
    // Writes after the resize, including in the new area, are tracked as usual.
    const id2 = await seal(disk);
    await tidemarkWrite(disk, [[11 * MiB, 10]]);
    assert.deepEqual(await changes(disk, id2), [{ offset: 11 * MiB, length: BS }]);
    assert.deepEqual(await changes(disk, id1), [{ offset: MiB, length: BS }, { offset: 3 * MiB, length: 2 * BS }, newArea]);
    const st = JSON.parse(await ok('rct', 'status', disk, '--json'));
    assert.equal(st.diskSize, 12 * MiB);
  });

  test(`resize (${format}): shrinking invalidates older IDs with a message saying the disk shrank (exit 6)`, async (t) => {
    const dir = await tempDir(t, 'tidemark-rctint-');
    const disk = join(dir, `disk.${format}`);
    if (format === 'raw') await (await RawFileDevice.create(disk, 8 * MiB)).close();
    else await ok('disk', 'create', disk, '--size', '8M', '--block-size', '1M');
    await ok('rct', 'enable', disk);
    await tidemarkWrite(disk, [[0, 4096]]);
    const id1 = await seal(disk);
    await tidemarkWrite(disk, [[MiB, 4096], [6 * MiB, 4096]]);

    const refused = await cli('disk', 'resize', disk, '--size', '4M');
    assert.equal(refused.status, ExitCode.USAGE, 'a shrink that loses data needs --force');
    assert.match(refused.stderr, /--force/);
    assert.deepEqual(await changes(disk, id1), [{ offset: MiB, length: BS }, { offset: 6 * MiB, length: BS }], 'a refused shrink changes nothing');

    const res = JSON.parse(await ok('disk', 'resize', disk, '--size', '4M', '--force', '--json'));
    assert.match(res.tracking.restarted, /shrank from 8388608 to 4194304 bytes/);
    const r = await cli('rct', 'changes', disk, '--since', id1);
    assert.equal(r.status, ExitCode.TRACKING_INVALID, r.stderr);
    assert.match(r.stderr, /the disk shrank from 8388608 to 4194304 bytes/);
    assert.match(r.stderr, /full/);
    // Tracking restarted cleanly: new IDs work at the new size.
    const id2 = await seal(disk);
    await tidemarkWrite(disk, [[2 * MiB, 1]]);
    assert.deepEqual(await changes(disk, id2), [{ offset: 2 * MiB, length: BS }]);
    assert.equal(JSON.parse(await ok('rct', 'status', disk, '--json')).diskSize, 4 * MiB);
  });
}

/** A 4 MiB raw disk in a temp dir with tracking enabled, written at 0 and then sealed (ID `id`). */
async function sealedRawDisk(t: TestContext): Promise<{ disk: string; id: string }> {
  const dir = await tempDir(t, 'tidemark-rctint-');
  const disk = join(dir, 'disk.raw');
  await (await RawFileDevice.create(disk, 4 * MiB)).close();
  await ok('rct', 'enable', disk);
  await tidemarkWrite(disk, [[0, 1]]);
  return { disk, id: await seal(disk) };
}

test('resize of a tracked disk is refused while another process holds it; untracked resize is unchanged', async (t) => {
  const dir = await tempDir(t, 'tidemark-rctint-');
  const disk = join(dir, 'disk.raw');
  await (await RawFileDevice.create(disk, 4 * MiB)).close();
  await ok('disk', 'resize', disk, '--size', '5M');
  assert.equal((await stat(disk)).size, 5 * MiB);
  await assert.rejects(stat(`${disk}.lock`), 'an untracked resize takes no lock (unchanged behaviour)');

  await ok('rct', 'enable', disk);
  const lock = await DiskLock.acquire(disk, { exclusive: true, holder: 'test writer' });
  try {
    const r = await cli('disk', 'resize', disk, '--size', '6M');
    assert.equal(r.status, ExitCode.IN_USE, r.stderr);
    assert.match(r.stderr, /test writer/);
    assert.equal((await stat(disk)).size, 5 * MiB, 'nothing changed');
  } finally {
    await lock.release();
  }
});

test('a read-write open of a raw disk without writes keeps tracking valid (no fingerprintBeforeOpen)', async (t) => {
  const { disk, id } = await sealedRawDisk(t);
  await tidemarkWrite(disk, [[2 * MiB, 1]]);
  for (let i = 0; i < 2; i++) {
    await new Promise((r) => setTimeout(r, 30));
    const raw: BlockDevice = await RawFileDevice.open(disk);
    const dev = await openTracked(raw, disk); // fingerprint taken after the open, on purpose
    assert.equal(dev.status().verdict, 'clean', 'the open did not look like an outside write');
    assert.deepEqual(await dev.changes(id), [{ offset: 2 * MiB, length: BS }]);
    await dev.close();
  }
  assert.deepEqual(await changes(disk, id), [{ offset: 2 * MiB, length: BS }]);
});

test('a crash in the middle of a tracked raw resize (marks durable, not re-bound) keeps older IDs: the grown area is reported', async (t) => {
  const { disk, id } = await sealedRawDisk(t);
  await tidemarkWrite(disk, [[MiB, 1]]);

  // Steps 1-4 of withTrackedOperation by hand, then "crash" before endOperation.
  const before = await RawFileDevice.open(disk, { readOnly: true });
  const tracker = await ChangeTracker.open(disk, before, 'meta');
  await tracker.beginOperation(before, 'file', { ranges: [{ offset: 3 * MiB, length: 10 }] });
  await before.close();
  await tracker.abandon();
  await new Promise((r) => setTimeout(r, 20));
  await truncate(disk, 6 * MiB);

  assert.deepEqual(await changes(disk, id), [{ offset: MiB, length: BS }, { offset: 3 * MiB, length: BS }, { offset: 4 * MiB, length: 2 * MiB }]);
  assert.equal(await verdictNow(disk), 'recovered', 'accepted by the crash rule (same inode, ctime within the lease)');
  assert.deepEqual(await changes(disk, id), [{ offset: MiB, length: BS }, { offset: 3 * MiB, length: BS }, { offset: 4 * MiB, length: 2 * MiB }]);
});

test('a writable openDisk of a tracked disk is refused (pointing to openTrackedDisk); read-only and openTrackedDisk work', async (t) => {
  const { disk, id } = await sealedRawDisk(t);
  const before = await stat(disk);
  for (const opts of [{}, { readOnly: false }]) {
    await assert.rejects(openDisk(disk, opts), (err: Error & { exitCode?: number }) => {
      assert.equal(err.exitCode, ExitCode.USAGE);
      assert.match(err.message, /change tracking is enabled/);
      assert.match(err.message, /openTrackedDisk/);
      return true;
    });
  }
  assert.equal((await stat(disk)).mtimeMs, before.mtimeMs, 'the refused open touched nothing');
  await (await openDisk(disk, { readOnly: true })).close();
  const dev = await openTrackedDisk(disk);
  assert.ok(isTracked(dev));
  await dev.write(3 * MiB, Buffer.alloc(10, 1));
  await dev.close();
  assert.deepEqual(await changes(disk, id), [{ offset: 3 * MiB, length: BS }], 'tracking stayed valid: only the tracked write shows');
  // the explicit opt-out opens it untracked (the caller keeps tracking valid itself)
  const raw = await openDisk(disk, { untracked: true });
  assert.ok(!isTracked(raw));
  await raw.close();
});
