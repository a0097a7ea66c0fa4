import { test } from 'node:test';
import assert from 'node:assert/strict';
import { open, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { RawFileDevice } from '../../src/blockdev/RawFileDevice.js';
import { ExitCode } from '../../src/errors.js';
import { enableTracking } from '../../src/rct/enableTracking.js';
import { TrackingInvalidError, UnknownRctIdError } from '../../src/rct/errors.js';
import { fileFingerprint } from '../../src/rct/fileFingerprint.js';
import { openTracked, type TrackedDevice } from '../../src/rct/trackingLayer.js';
import type { TrackerOptions } from '../../src/rct/ChangeTracker.js';
import { tempDir } from '../helpers/tools.js';
import { withGuidIdentity } from './rctTestKit.js';

const MiB = 1024 * 1024;
const BS = 64 * 1024;

/** A raw disk with tracking enabled. `guid`: emulate a VHDX content identity (DataWriteGuid) beside it. */
async function setup(t: import('node:test').TestContext, opts: { guid?: boolean; size?: number } = {}) {
  const dir = await tempDir(t, 'tidemark-rct-inv-');
  const disk = join(dir, 'disk.raw');
  await (await RawFileDevice.create(disk, opts.size ?? 8 * MiB)).close();
  await enableTracking(disk, { blockSize: BS, regionSize: MiB });
  const openIt = async (o: TrackerOptions = {}): Promise<TrackedDevice> => {
    const fingerprintBeforeOpen = await fileFingerprint(disk);
    const raw = await RawFileDevice.open(disk);
    return openTracked(opts.guid ? withGuidIdentity(raw, `${disk}.guid`) : raw, disk, { persistIntervalMs: 0, fingerprintBeforeOpen, ...o });
  };
  // a first session: seal an ID, change one block, close cleanly
  const dev = await openIt();
  const id = await dev.seal();
  await dev.write(3 * BS, Buffer.alloc(BS, 1));
  await dev.close();
  return { dir, disk, id, openIt };
}

async function expectInvalid(dev: TrackedDevice, id: string, reason: RegExp): Promise<void> {
  assert.equal(dev.status().verdict, 'restarted');
  await assert.rejects(dev.changes(id), (err: unknown) => {
    assert.ok(err instanceof TrackingInvalidError, `expected TrackingInvalidError, got ${String(err)}`);
    assert.equal(err.exitCode, ExitCode.TRACKING_INVALID);
    assert.match(err.message, reason);
    assert.match(err.message, /full/);
    return true;
  });
  assert.match(dev.status().invalidation!.reason, reason);
  // tracking restarted cleanly: a new ID works and sees new writes exactly
  const fresh = await dev.seal();
  await dev.write(0, Buffer.alloc(10, 7));
  assert.deepEqual(await dev.changes(fresh), [{ offset: 0, length: BS }]);
  await dev.close();
}

async function outsideWrite(disk: string, offset: number): Promise<void> {
  const fh = await open(disk, 'r+');
  await fh.write(Buffer.from('outside'), 0, 7, offset);
  await fh.close();
}

test('valid reopen keeps IDs exact (control for the cases below)', async (t) => {
  for (const guid of [false, true]) {
    const { id, openIt } = await setup(t, { guid });
    const dev = await openIt();
    assert.equal(dev.status().verdict, 'clean');
    assert.deepEqual(await dev.changes(id), [{ offset: 3 * BS, length: BS }]);
    await dev.close();
  }
});

test('outside writer, content identity (VHDX-like DataWriteGuid changed): older IDs invalid', async (t) => {
  const { disk, id, openIt } = await setup(t, { guid: true });
  await outsideWrite(disk, 5 * BS);
  await writeFile(`${disk}.guid`, 'someone-else');
  await expectInvalid(await openIt(), id, /written outside Tidemark/);
});

test('content identity after a crash: current or next accepted, anything else rejected', async (t) => {
  const { disk, id, openIt } = await setup(t, { guid: true });
  let dev = await openIt();
  await dev.write(6 * BS, Buffer.alloc(100, 2)); // rotates the identity to "next"
  await dev.tracker.abandon();
  dev = await openIt();
  assert.equal(dev.status().verdict, 'recovered');
  assert.ok((await dev.changes(id)).some((r) => r.offset <= 6 * BS && r.offset + r.length > 6 * BS));
  await dev.write(7 * BS, Buffer.alloc(100, 2));
  await dev.tracker.abandon();
  await writeFile(`${disk}.guid`, 'someone-else');
  await expectInvalid(await openIt(), id, /written outside Tidemark/);
});

test('outside writer, raw file (stat fingerprint changed after a clean close): older IDs invalid', async (t) => {
  const { disk, id, openIt } = await setup(t);
  await new Promise((r) => setTimeout(r, 20));
  await outsideWrite(disk, 5 * BS);
  await expectInvalid(await openIt(), id, /modified outside Tidemark/);
});

test('raw file after a crash: a change after the crashed session\'s lease is an outside writer', async (t) => {
  const { disk, id, openIt } = await setup(t);
  // a session whose clock is 2 minutes behind: its lease ended before the outside write below
  const dev = await openIt({ now: () => Date.now() - 120_000 });
  await dev.write(6 * BS, Buffer.alloc(100, 2));
  await dev.tracker.abandon();
  await outsideWrite(disk, 5 * BS);
  await expectInvalid(await openIt(), id, /after the crashed session's write lease ended/);
});

test('.rct missing: older IDs invalid', async (t) => {
  const { disk, id, openIt } = await setup(t);
  await rm(`${disk}.rct`);
  await expectInvalid(await openIt(), id, /\.rct is missing/);
});

test('.rct corrupt: older IDs invalid', async (t) => {
  const { disk, id, openIt } = await setup(t);
  const buf = await readFile(`${disk}.rct`);
  buf[buf.length - 1]! ^= 0x40;
  await writeFile(`${disk}.rct`, buf);
  await expectInvalid(await openIt(), id, /corrupt.*checksum/);
});

test('.mrt corrupt (both slots): older IDs invalid; one torn slot is survivable', async (t) => {
  const { disk, id, openIt } = await setup(t);
  const good = await readFile(`${disk}.mrt`);
  // one slot torn: the other one carries the table
  const torn = Buffer.from(good);
  torn.fill(0xee, 100, 200);
  await writeFile(`${disk}.mrt`, torn);
  let dev = await openIt();
  assert.equal(dev.status().verdict, 'clean');
  await dev.close();
  const both = await readFile(`${disk}.mrt`);
  both.fill(0xee, 100, 200);
  both.fill(0xee, both.length / 2 + 100, both.length / 2 + 200);
  await writeFile(`${disk}.mrt`, both);
  dev = await openIt();
  await expectInvalid(dev, id, /region table is corrupt/);
});

test('.mrt missing: older IDs invalid', async (t) => {
  const { disk, id, openIt } = await setup(t);
  await rm(`${disk}.mrt`);
  await expectInvalid(await openIt(), id, /region table .* is missing/);
});

test('grow: the new area is reported changed; older IDs stay valid', async (t) => {
  const { disk, id, openIt } = await setup(t, { guid: true, size: 8 * MiB + 1000 });
  await truncate(disk, 12 * MiB);
  const dev = await openIt();
  assert.equal(dev.status().verdict, 'clean');
  const ranges = await dev.changes(id);
  // block 3 from before, plus everything from the old partial last block to the new end
  const oldLastBlock = Math.floor((8 * MiB + 1000) / BS) * BS;
  assert.deepEqual(ranges, [{ offset: 3 * BS, length: BS }, { offset: oldLastBlock, length: 12 * MiB - oldLastBlock }]);
  await dev.close();
});

test('grow of a raw file by another tool cannot be told from an outside write: invalid', async (t) => {
  const { disk, id, openIt } = await setup(t);
  await truncate(disk, 12 * MiB);
  await expectInvalid(await openIt(), id, /modified outside Tidemark/);
});

test('shrink: older IDs invalid', async (t) => {
  const { disk, id, openIt } = await setup(t, { guid: true });
  await truncate(disk, 4 * MiB);
  await expectInvalid(await openIt(), id, /shrank/);
});

test('unknown, dropped, malformed and foreign IDs are typed errors', async (t) => {
  const a = await setup(t);
  const b = await setup(t);
  const dev = await a.openIt();
  const id2 = await dev.seal();
  await dev.drop(a.id);
  await assert.rejects(dev.changes(a.id), (e: unknown) => e instanceof UnknownRctIdError && /dropped/.test(e.message) && e.exitCode === ExitCode.NOT_FOUND);
  await assert.rejects(dev.drop(a.id), UnknownRctIdError);
  await assert.rejects(dev.changes('nonsense'), (e: unknown) => e instanceof UnknownRctIdError && /not a Tidemark RCT ID/.test(e.message));
  const bumped = id2.replace(/:(\d+):/, (_, g) => `:${Number(g) + 5}:`);
  await assert.rejects(dev.changes(bumped), (e: unknown) => e instanceof UnknownRctIdError && /never issued/.test(e.message));
  await assert.rejects(dev.changes(b.id), TrackingInvalidError); // another disk's ID
  await assert.rejects(dev.changes(id2, a.id), UnknownRctIdError);
  assert.deepEqual(await dev.changes(id2), []);
  await dev.close();
});
