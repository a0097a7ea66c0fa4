import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { tempDir } from '../helpers/tools.js';
import { hashDisk, writeDisk } from './harness.js';
import { createMachine, setMachine, showMachine } from '../../src/vm/machines.js';
import { exportMachine } from '../../src/export/exportMachine.js';
import { removeRefpoint } from '../../src/checkpoint/refpoints.js';
import { createCheckpoint } from '../../src/checkpoint/checkpoints.js';
import { verifyExport } from '../../src/export/verifyExport.js';
import { importExport } from '../../src/export/importExport.js';

const MiB = 2 ** 20;

test('writes between the checkpoint and the end of an export: not in it, but in the next differential', async (t) => {
  const home = await tempDir(t);
  const out = await tempDir(t, 'tidemark-exp-');
  const m = await createMachine(home, 'w', { disks: [{ size: 32 * MiB }] });
  const d0 = m.disks[0]!.path;
  await writeDisk(d0, [[0, randomBytes(MiB)]]);
  const before = await hashDisk(d0);
  let during = '';
  const e1 = await exportMachine(home, 'w', join(out, 'e1'), {
    onFrozen: async (disks) => {
      assert.notEqual(disks[0]!.current, d0);
      await writeDisk(disks[0]!.current, [[5 * MiB, randomBytes(4096)]]);
      during = await hashDisk(disks[0]!.current);
      assert.equal((await showMachine(home, 'w')).status.state, 'held');
    },
  });
  assert.equal(e1.manifest.disks[0]!.sha256, before, 'the export is the frozen state');
  assert.equal(await hashDisk(d0), during, 'the write survived the merge back');
  const e2 = await exportMachine(home, 'w', join(out, 'e2'), { since: e1.manifest.refpoint.id });
  assert.equal(e2.manifest.disks[0]!.mode, 'differential');
  assert.equal(e2.manifest.disks[0]!.copied, 65536, 'exactly the block written during the export');
  assert.equal(e2.manifest.disks[0]!.sha256, during);
  assert.equal((await verifyExport(e2.dir)).ok, true);
});

test('resize then differential: the resized disk is exported in full, the others differentially', async (t) => {
  const home = await tempDir(t);
  const out = await tempDir(t, 'tidemark-exp-');
  const m = await createMachine(home, 'r', { disks: [{ size: 16 * MiB }, { size: 16 * MiB }] });
  const [d0, d1] = m.disks.map((d) => d.path);
  await writeDisk(d0!, [[0, randomBytes(65536)]]);
  const e1 = await exportMachine(home, 'r', join(out, 'e1'));
  await setMachine(home, 'r', { resize: [{ slot: 0, size: 32 * MiB }] });
  await writeDisk(d0!, [[20 * MiB, randomBytes(4096)]]);
  await writeDisk(d1!, [[MiB, randomBytes(4096)]]);
  const e2 = await exportMachine(home, 'r', join(out, 'e2'), { since: e1.manifest.refpoint.id });
  assert.deepEqual(e2.manifest.disks.map((d) => d.mode), ['full', 'differential']);
  assert.match(e2.manifest.disks[0]!.fallback!, /resized \(16777216 -> 33554432 bytes\)/);
  assert.equal(e2.manifest.disks[0]!.size, 32 * MiB);
  assert.deepEqual(e2.manifest.disks.map((d) => d.sha256), [await hashDisk(d0!), await hashDisk(d1!)]);
  // And the chain continues differentially on the resized disk.
  await writeDisk(d0!, [[30 * MiB, randomBytes(4096)]]);
  const e3 = await exportMachine(home, 'r', join(out, 'e3'), { since: e2.manifest.refpoint.id });
  assert.deepEqual(e3.manifest.disks.map((d) => [d.mode, d.copied]), [['differential', 65536], ['differential', 0]]);
  assert.equal(e3.manifest.disks[0]!.sha256, await hashDisk(d0!));
});

test('a removed reference point, a deleted or corrupt tracking file: a clear warning and a full export, never an empty differential', async (t) => {
  const home = await tempDir(t);
  const out = await tempDir(t, 'tidemark-exp-');
  const m = await createMachine(home, 'x', { disks: [{ size: 8 * MiB }, { size: 8 * MiB }] });
  const [d0, d1] = m.disks.map((d) => d.path);
  await writeDisk(d0!, [[0, randomBytes(4096)]]);
  const e1 = await exportMachine(home, 'x', join(out, 'e1'));
  const e2 = await exportMachine(home, 'x', join(out, 'e2'), { since: e1.manifest.refpoint.id });

  await removeRefpoint(home, 'x', e2.manifest.refpoint.id);
  const e3 = await exportMachine(home, 'x', join(out, 'e3'), { since: e2.manifest.refpoint.id });
  assert.equal(e3.manifest.kind, 'full');
  assert.match(e3.manifest.warnings[0]!, /reference point .* not found/);
  assert.deepEqual(e3.manifest.disks.map((d) => d.mode), ['full', 'full']);

  // Tracking file of disk 0 deleted (after a write that tracking would have reported).
  await writeDisk(d0!, [[4 * MiB, randomBytes(4096)]]);
  await rm(`${d0}.rct`);
  await rm(`${d0}.mrt`, { force: true });
  const e4 = await exportMachine(home, 'x', join(out, 'e4'), { since: e3.manifest.refpoint.id });
  assert.deepEqual(e4.manifest.disks.map((d) => d.mode), ['full', 'differential']);
  assert.match(e4.manifest.disks[0]!.fallback!, /change tracking/);
  assert.ok(e4.manifest.warnings.some((w) => /tracking was not enabled/.test(w)));
  assert.equal(e4.manifest.disks[0]!.sha256, await hashDisk(d0!));

  // Corrupt tracking file of disk 1.
  await writeDisk(d1!, [[MiB, randomBytes(4096)]]);
  await writeFile(`${d1}.rct`, randomBytes(300));
  const e5 = await exportMachine(home, 'x', join(out, 'e5'), { since: e4.manifest.refpoint.id });
  assert.deepEqual(e5.manifest.disks.map((d) => d.mode), ['differential', 'full']);
  assert.equal(e5.manifest.disks[1]!.sha256, await hashDisk(d1!));

  // Both disks differential again afterwards.
  await writeDisk(d1!, [[2 * MiB, randomBytes(4096)]]);
  const e6 = await exportMachine(home, 'x', join(out, 'e6'), { since: e5.manifest.refpoint.id });
  assert.deepEqual(e6.manifest.disks.map((d) => [d.mode, d.copied]), [['differential', 0], ['differential', 65536]]);
  assert.deepEqual(e6.manifest.disks.map((d) => d.sha256), [await hashDisk(d0!), await hashDisk(d1!)]);
});

test('a disk added since the reference point is exported in full, a removed one is noted', async (t) => {
  const home = await tempDir(t);
  const out = await tempDir(t, 'tidemark-exp-');
  await createMachine(home, 'y', { disks: [{ size: 8 * MiB }, { size: 8 * MiB }] });
  const e1 = await exportMachine(home, 'y', join(out, 'e1'));
  await setMachine(home, 'y', { removeSlots: [1] });
  await setMachine(home, 'y', { addDisks: [{ size: 4 * MiB }] });
  const e2 = await exportMachine(home, 'y', join(out, 'e2'), { since: e1.manifest.refpoint.id });
  assert.deepEqual(e2.manifest.disks.map((d) => [d.slot, d.mode, d.size]), [[0, 'differential', 8 * MiB], [1, 'full', 4 * MiB]]);
  assert.match(e2.manifest.disks[1]!.fallback!, /disk slot 1 was replaced/);
});

test('import moves a full export into place with the same ID; orphan checkpoint disks are cleaned', async (t) => {
  const home = await tempDir(t);
  const home2 = await tempDir(t);
  const out = await tempDir(t, 'tidemark-exp-');
  const m = await createMachine(home, 'z', { disks: [{ size: 8 * MiB }], notes: 'n' });
  await writeDisk(m.disks[0]!.path, [[MiB, randomBytes(9000)]]);
  const e1 = await exportMachine(home, 'z', join(out, 'e1'));
  const imp = await importExport(home2, e1.dir);
  assert.equal(imp.id, m.id);
  assert.equal(imp.config.notes, 'n');
  assert.equal(await hashDisk(imp.disks[0]!.path), e1.manifest.disks[0]!.sha256);
  assert.equal(await stat(join(e1.dir, 'disk0.vhdx')).then(() => true, () => false), false, 'moved, not copied');
  await assert.rejects(importExport(home2, e1.dir), /not a complete|already registered|disk0\.vhdx/);

  // A job killed after creating a checkpoint disk but before committing the inventory leaves an orphan.
  const orphan = join(m.dir, `${m.id.slice(0, 8)}-d0-ck-0123abcd.avhdx`);
  await writeFile(orphan, 'x');
  await showMachine(home, 'z');
  assert.equal(await stat(orphan).then(() => true, () => false), false);
});

test('an export that fails merges its backup checkpoint back at once and records no reference point', async (t) => {
  const home = await tempDir(t);
  const out = await tempDir(t, 'tidemark-exp-');
  const m = await createMachine(home, 'f', { disks: [{ size: 8 * MiB }] });
  await assert.rejects(exportMachine(home, 'f', join(out, 'e1'), {
    onFrozen: async (disks) => {
      await writeDisk(disks[0]!.current, [[0, Buffer.alloc(4096, 3)]]);
      throw new Error('boom');
    },
  }), /boom/);
  const v = await showMachine(home, 'f');
  assert.deepEqual(v.checkpoints, []);
  assert.deepEqual(v.refpoints, []);
  assert.equal(v.disks[0]!.path, m.disks[0]!.path);
  const dev = await (await import('../../src/disk/openDisk.js')).openDisk(m.disks[0]!.path, { readOnly: true });
  assert.deepEqual(await dev.read(0, 4096), Buffer.alloc(4096, 3), 'the write made during the export was kept');
  await dev.close();
});

test('export adopts a backup checkpoint made with `checkpoint create --type backup`, which becomes a reference point', async (t) => {
  const home = await tempDir(t);
  const out = await tempDir(t, 'tidemark-exp-');
  const m = await createMachine(home, 'b', { disks: [{ size: 8 * MiB }] });
  const d0 = m.disks[0]!.path;
  await writeDisk(d0, [[0, randomBytes(4096)]]);
  const e1 = await exportMachine(home, 'b', join(out, 'e1'));
  await writeDisk(d0, [[MiB, randomBytes(4096)]]);
  const atCheckpoint = await hashDisk(d0);
  const [cp] = await createCheckpoint(home, 'b', { type: 'backup' });
  await writeDisk(cp!.disks[0]!.child, [[2 * MiB, randomBytes(4096)]]); // after the checkpoint
  const e2 = await exportMachine(home, 'b', join(out, 'e2'), { since: e1.manifest.refpoint.id });
  assert.equal(e2.manifest.disks[0]!.mode, 'differential');
  assert.equal(e2.manifest.disks[0]!.copied, 65536);
  assert.equal(e2.manifest.disks[0]!.sha256, atCheckpoint);
  const v = await showMachine(home, 'b');
  assert.deepEqual(v.checkpoints, []);
  assert.deepEqual(v.refpoints.map((r) => r.id), [e1.manifest.refpoint.id, e2.manifest.refpoint.id]);
  const e3 = await exportMachine(home, 'b', join(out, 'e3'), { since: e2.manifest.refpoint.id });
  assert.deepEqual([e3.manifest.disks[0]!.copied, e3.manifest.disks[0]!.sha256], [65536, await hashDisk(d0)]);
});
