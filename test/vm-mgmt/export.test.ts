import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { tempDir } from '../helpers/tools.js';
import { cli, hashDisk, ok, writeDisk } from './harness.js';
import { verifyExport } from '../../src/export/verifyExport.js';
import { importExport } from '../../src/export/importExport.js';
import { showMachine } from '../../src/vm/machines.js';

const MiB = 2 ** 20;

test('full → differential → differential → synthetic full, each equal to the machine at its checkpoint; imports equal too', async (t) => {
  const home = await tempDir(t);
  const out = await tempDir(t, 'tidemark-exp-');
  const m = ok(home, ['vm', 'create', 'db', '--cpus', '2', '--disk', '64M', '--disk', '16M']);
  const [d0, d1] = m.disks.map((d: any) => d.path as string);
  const state = async () => [await hashDisk(d0), await hashDisk(d1)];

  await writeDisk(d0, [[0, randomBytes(MiB)], [10 * MiB + 123, randomBytes(5000)], [63 * MiB, randomBytes(MiB)]]);
  await writeDisk(d1, [[4096, randomBytes(65536)]]);
  const s1 = await state();
  const e1 = ok(home, ['export', 'db', join(out, 'e1')])[0];
  assert.equal(e1.manifest.kind, 'full');
  assert.deepEqual(e1.manifest.disks.map((d: any) => d.sha256), s1);

  // Small changes: the differential copies only the changed blocks (64 KiB RCT granularity).
  await writeDisk(d0, [[20 * MiB, randomBytes(1000)], [0, Buffer.alloc(4096)]]);
  const s2 = await state();
  const e2 = ok(home, ['export', 'db', join(out, 'e2'), '--since', e1.manifest.refpoint.id])[0];
  assert.equal(e2.manifest.kind, 'differential');
  assert.deepEqual(e2.manifest.disks.map((d: any) => d.mode), ['differential', 'differential']);
  assert.deepEqual(e2.manifest.disks.map((d: any) => d.sha256), s2);
  assert.deepEqual(e2.manifest.disks.map((d: any) => d.copied), [2 * 65536, 0]);
  assert.equal(e2.manifest.disks[0].parent, '../e1/disk0.vhdx');
  assert.notDeepEqual(s2, s1);

  await writeDisk(d1, [[15 * MiB, randomBytes(MiB)]]);
  const s3 = await state();
  // --since also takes the previous export directory.
  const e3 = ok(home, ['export', 'db', join(out, 'e3'), '--since', join(out, 'e2')])[0];
  assert.deepEqual(e3.manifest.disks.map((d: any) => [d.mode, d.copied]), [['differential', 0], ['differential', MiB]]);
  assert.deepEqual(e3.manifest.disks.map((d: any) => d.sha256), s3);

  await writeDisk(d0, [[30 * MiB, randomBytes(70000)]]);
  const s4 = await state();
  const e4 = ok(home, ['export', 'db', join(out, 'e4'), '--since', e3.manifest.refpoint.id, '--merge'])[0];
  assert.equal(e4.manifest.kind, 'synthetic-full');
  assert.deepEqual(e4.manifest.disks.map((d: any) => [d.mode, d.file]), [['full', 'disk0.vhdx'], ['full', 'disk1.vhdx']]);
  assert.deepEqual(e4.manifest.disks.map((d: any) => d.sha256), s4);
  assert.ok(e4.manifest.disks[0].copied <= 2 * 65536, 'a synthetic full reads only the changes from the machine');

  // Reference points are ordered by chain; the machine is back on its base disks with no checkpoint.
  assert.deepEqual(ok(home, ['refpoint', 'list', 'db']).map((r: any) => r.seq), [1, 2, 3, 4]);
  const shown = await showMachine(home, 'db');
  assert.deepEqual(shown.disks.map((d) => d.path), [d0, d1]);
  assert.deepEqual(shown.checkpoints, []);

  for (const [i, e] of [e1, e2, e3, e4].entries()) {
    // The CLI for the differential and the synthetic full, the library for the others (time).
    const cliToo = i === 1 || i === 3;
    assert.equal(cliToo ? ok(home, ['export', 'verify', e.dir]).ok : (await verifyExport(e.dir)).ok, true);
    const imp = cliToo ? ok(home, ['import', e.dir, '--copy', '--new-id', '--name', `imp${i}`]) : await importExport(home, e.dir, { copy: true, newId: true, name: `imp${i}` });
    assert.notEqual(imp.id, m.id);
    const expect = [s1, s2, s3, s4][i]!;
    assert.deepEqual([await hashDisk(imp.disks[0].path), await hashDisk(imp.disks[1].path)], expect, `import of e${i + 1}`);
  }

  // Same ID: a clear error; a corrupted export fails verify.
  const dup = cli(home, ['import', e1.dir, '--copy']);
  assert.equal(dup.json.error.code, 'E_VM_EXISTS');
  assert.match(dup.stderr, /--new-id/);
  await writeDisk(join(out, 'e1', 'disk1.vhdx'), [[0, Buffer.alloc(512, 7)]]);
  const bad = cli(home, ['export', 'verify', e1.dir]);
  assert.equal(bad.status, 1);
  assert.deepEqual(bad.json.disks.map((d: any) => d.ok), [true, false]);
});
