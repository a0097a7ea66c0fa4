import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { cp, readdir, rename, stat } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { tempDir } from '../helpers/tools.js';
import { spawnSync } from 'node:child_process';
import { cli, hashDisk, MAIN, ok, writeDisk } from './harness.js';
import { exportMachine } from '../../src/export/exportMachine.js';
import { importExport } from '../../src/export/importExport.js';
import { verifyExport } from '../../src/export/verifyExport.js';
import { ExportBaseMissingError } from '../../src/export/errors.js';
import { diskInfo as diskInfoLib } from '../../src/disk/diskInfo.js';
import { listMachines, removeMachine } from '../../src/vm/machines.js';
import { UsageError } from '../../src/errors.js';

const MiB = 2 ** 20;
const exists = (p: string) => stat(p).then(() => true, () => false);

/** `tidemark disk info <path> --json` (the disk noun takes no --home). */
function diskInfo(path: string): any {
  const r = spawnSync(process.execPath, [MAIN, 'disk', 'info', path, '--json'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout);
}

test('a differential export imports by chaining onto copies of its base exports; the chain survives moves; a missing base is a typed error', async (t) => {
  const home = await tempDir(t);
  const root = await tempDir(t, 'tidemark-imp-');
  const out = join(root, 'exports');
  const m = ok(home, ['vm', 'create', 'src', '--disk', '16M', '--disk', '8M']);
  const [d0, d1] = m.disks.map((d: any) => d.path as string);
  const state = async () => [await hashDisk(d0), await hashDisk(d1)];

  await writeDisk(d0, [[0, randomBytes(MiB)], [9 * MiB + 77, randomBytes(70000)]]);
  await writeDisk(d1, [[4096, randomBytes(65536)]]);
  const s1 = await state();
  const e1 = await exportMachine(home, 'src', join(out, 'e1'));
  await writeDisk(d0, [[3 * MiB, randomBytes(5000)], [0, Buffer.alloc(4096)]]);
  const s2 = await state();
  const e2 = await exportMachine(home, 'src', join(out, 'e2'), { since: e1.manifest.refpoint.id });
  await writeDisk(d0, [[12 * MiB, randomBytes(3000)]]);
  await writeDisk(d1, [[7 * MiB, randomBytes(MiB)]]);
  const s3 = await state();
  const e3 = await exportMachine(home, 'src', join(out, 'e3'), { since: e2.manifest.refpoint.id });
  assert.deepEqual(e3.manifest.disks.map((d) => d.mode), ['differential', 'differential']);
  assert.notDeepEqual(s3, s2);
  assert.notDeepEqual(s2, s1);

  // --copy --new-id: the machine's disks are chains inside its own folder, reading as the source did at e3.
  const c3 = ok(home, ['import', e3.dir, '--copy', '--new-id', '--name', 'c3']);
  assert.notEqual(c3.id, m.id);
  const top0 = c3.disks[0].path as string;
  assert.equal(top0, join(c3.dir, 'disk0.avhdx'));
  assert.deepEqual([await hashDisk(top0), await hashDisk(c3.disks[1].path)], s3, 'imported disks equal the source at e3');
  for (const slot of [0, 1]) {
    // Our own `qemu-img info --backing-chain`: the CLI for slot 0, the library for slot 1.
    const info = slot === 0 ? diskInfo(join(c3.dir, `disk${slot}.avhdx`)) : await diskInfoLib(join(c3.dir, `disk${slot}.avhdx`));
    assert.equal(info.type, 'differencing');
    assert.deepEqual(info.parentChain, [join(c3.dir, `disk${slot}.r${e2.manifest.refpoint.seq}.avhdx`), join(c3.dir, `disk${slot}.r${e1.manifest.refpoint.seq}.vhdx`)], `slot ${slot} chains inside the machine folder`);
  }
  // Each layer is the base export's file (its content at that export).
  assert.equal(await hashDisk(join(c3.dir, `disk0.r${e1.manifest.refpoint.seq}.vhdx`)), s1[0]);
  assert.equal(await hashDisk(join(c3.dir, `disk0.r${e2.manifest.refpoint.seq}.avhdx`)), s2[0]);
  // --copy left the exports whole.
  for (const e of [e1, e2, e3]) assert.equal((await verifyExport(e.dir)).ok, true);

  // The imported machine works: it writes only its top file, and can be exported (reads through the chain).
  const baseBefore = await hashDisk(join(c3.dir, `disk0.r${e2.manifest.refpoint.seq}.avhdx`));
  await writeDisk(top0, [[5 * MiB, randomBytes(4096)]]);
  const now0 = await hashDisk(top0);
  assert.notEqual(now0, s3[0]);
  assert.equal(await hashDisk(join(c3.dir, `disk0.r${e2.manifest.refpoint.seq}.avhdx`)), baseBefore, 'a base layer is never written');
  // With a snapshot provider: a chain is not one file, so it is copied through the chain (said so).
  const ex = await exportMachine(home, 'c3', join(root, 'c3-full'), { provider: 'copy' });
  assert.equal(ex.manifest.disks[0]!.sha256, now0);
  assert.equal(ex.manifest.disks[0]!.mode, 'full');
  assert.equal(ex.manifest.disks[0]!.provider, undefined);
  assert.match(ex.manifest.disks[0]!.fallback ?? '', /differencing disk/);
  assert.equal((await diskInfoLib(join(root, 'c3-full', 'disk0.vhdx'))).type, 'dynamic');

  // The machine folder's chain uses relative locators: a copy of the folder elsewhere keeps its own chain.
  const elsewhere = join(root, 'machine-copy');
  await cp(c3.dir, elsewhere, { recursive: true });
  const far = await diskInfoLib(join(elsewhere, 'disk0.avhdx'));
  assert.deepEqual(far.parentChain.map((p: string) => basename(p)), [`disk0.r${e2.manifest.refpoint.seq}.avhdx`, `disk0.r${e1.manifest.refpoint.seq}.vhdx`]);
  assert.ok(far.parentChain.every((p: string) => p.startsWith(elsewhere)));

  // The export tree moved as a whole still imports (manifest parents are relative); without --copy the
  // differential's own files leave the export, the base exports stay.
  const moved = join(root, 'moved-exports');
  await rename(out, moved);
  const c3b = await importExport(home, join(moved, 'e3'), { newId: true, name: 'c3b' });
  assert.deepEqual([await hashDisk(c3b.disks[0].path), await hashDisk(c3b.disks[1].path)], s3);
  assert.equal(await exists(join(moved, 'e3', 'disk0.avhdx')), false, 'moved out of the export');
  await assert.rejects(importExport(home, join(moved, 'e3'), { newId: true, name: 'again' }), (e: any) => e.code === 'E_NOT_FOUND' && /moves the disks out/.test(e.message));
  assert.equal((await verifyExport(join(moved, 'e2'))).ok, true, 'the base exports are untouched');
  assert.equal((await verifyExport(join(moved, 'e1'))).ok, true);

  // Missing base: e2 alone (its base e1 is not beside it) -> typed error naming e1's file; nothing registered.
  const lone = join(root, 'lone');
  await cp(join(moved, 'e2'), join(lone, 'e2'), { recursive: true });
  const before = await listMachines(home);
  const machinesBefore = await readdir(join(home, 'machines'));
  const r = cli(home, ['import', join(lone, 'e2'), '--new-id', '--name', 'nobase']);
  assert.equal(r.status, 3);
  assert.equal(r.json.error.code, 'E_EXPORT_BASE_MISSING');
  assert.equal(r.json.error.data.missing, join(lone, 'e1', 'disk0.vhdx'));
  assert.match(r.stderr, /lone\/e1\/disk0\.vhdx/);
  assert.match(r.stderr, /copy the base export/);
  assert.deepEqual(await listMachines(home), before, 'inventory unchanged');
  assert.deepEqual(await readdir(join(home, 'machines')), machinesBefore, 'no machine folder left');
  assert.equal(await exists(join(lone, 'e2', 'disk0.avhdx')), true, 'the export is untouched');

  // A deeper gap (e2 present, its base e1 gone) names e1's file: the whole chain is checked first.
  await rename(join(moved, 'e1'), join(root, 'e1-away'));
  await assert.rejects(importExport(home, join(moved, 'e2'), { copy: true, newId: true, name: 'gap' }),
    (e) => e instanceof ExportBaseMissingError && e.data.missing === join(moved, 'e1', 'disk0.vhdx'));
  await rename(join(root, 'e1-away'), join(moved, 'e1'));

  // Copy the base export beside it, as the message says, and the same import works.
  await cp(join(moved, 'e1'), join(lone, 'e1'), { recursive: true });
  const fixed = await importExport(home, join(lone, 'e2'), { newId: true, name: 'fixed' });
  assert.deepEqual([await hashDisk(fixed.disks[0].path), await hashDisk(fixed.disks[1].path)], s2);

  // Same ID over a folder kept by `vm remove --keep-files`: refused, the kept files and the export untouched.
  await removeMachine(home, 'src', { keepFiles: true });
  const kept = await readdir(m.dir);
  await assert.rejects(importExport(home, join(moved, 'e1')), (e) => e instanceof UsageError && /already exists and is not empty/.test(e.message));
  assert.deepEqual(await readdir(m.dir), kept);
  assert.equal(await exists(join(moved, 'e1', 'disk0.vhdx')), true);

  // A full export still imports as one file (moved out of the export).
  const full = await importExport(home, join(moved, 'e1'), { newId: true, name: 'full' });
  assert.equal(full.disks[0].path, join(full.dir, 'disk0.vhdx'));
  assert.equal((await diskInfoLib(full.disks[0].path)).type, 'dynamic');
  assert.deepEqual([await hashDisk(full.disks[0].path), await hashDisk(full.disks[1].path)], s1);
  assert.equal(await exists(join(moved, 'e1', 'disk0.vhdx')), false);
});
