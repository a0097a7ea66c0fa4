import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { requireTools, run } from '../helpers/tools.js';
import { mountXfs, xfsSkipReason } from '../native/xfsMount.js';
import { ReflinkProvider } from '../../src/export/providers/ReflinkProvider.js';
import { exportMachine } from '../../src/export/exportMachine.js';
import { importExport } from '../../src/export/importExport.js';
import { createMachine, showMachine } from '../../src/vm/machines.js';
import { listRefpoints } from '../../src/checkpoint/refpoints.js';
import { cli, hashDisk, writeDisk } from '../vm-mgmt/harness.js';
import { readFile } from 'node:fs/promises';

const MiB = 2 ** 20;
const freeBlocks = (p: string) => Number(run('stat', ['-f', '-c', '%f', p]).stdout.trim());

/** Data extents of `path` per `filefrag -v`, and how many carry the `shared` flag (FIEMAP_EXTENT_SHARED). */
function extents(path: string): { total: number; shared: number } {
  const lines = run('filefrag', ['-v', path]).stdout.split('\n').filter((l) => /^\s*\d+:/.test(l));
  return { total: lines.length, shared: lines.filter((l) => /\bshared\b/.test(l)).length };
}

test('export --provider reflink on XFS: the clones share extents with the frozen disks, read the same, verify, import; COW keeps them', async (t) => {
  if (!requireTools(t, 'filefrag')) return;
  const xfs = mountXfs();
  if ('why' in xfs) return t.skip(xfsSkipReason(xfs.why));
  t.after(() => xfs.unmount());
  const home = join(xfs.mnt, 'home');
  const m = await createMachine(home, 'x', { disks: [{ size: 64 * MiB }, { size: 16 * MiB }] });
  const [d0, d1] = m.disks.map((d) => d.path) as [string, string];
  await writeDisk(d0, [[0, randomBytes(8 * MiB)], [40 * MiB, randomBytes(6 * MiB)]]);
  await writeDisk(d1, [[MiB, randomBytes(2 * MiB)]]);
  const s1 = [await hashDisk(d0), await hashDisk(d1)];
  run('sync', []);

  // A bare clone first: shared extents, almost no space used, same bytes.
  const bare = join(xfs.mnt, 'bare.vhdx');
  const before = freeBlocks(xfs.mnt);
  const r = await new ReflinkProvider().clone(d0, bare);
  assert.deepEqual(r, { bytesCopied: 0, shared: true });
  assert.ok(before - freeBlocks(xfs.mnt) < 64, `the clone used ${before - freeBlocks(xfs.mnt)} blocks for ~14 MiB of data`);
  assert.ok((await readFile(bare)).equals(await readFile(d0)));
  const e = extents(bare);
  assert.ok(e.total > 0 && e.shared === e.total, `every extent of the clone is shared (${e.shared}/${e.total})`);

  // The export through the CLI: disk files cloned by reflink, hashed, a reference point recorded.
  const dir = join(xfs.mnt, 'e1');
  const freeBefore = freeBlocks(xfs.mnt);
  const x = cli(home, ['export', 'x', dir, '--provider', 'reflink']);
  assert.equal(x.status, 0, x.stderr);
  const man = x.json[0].manifest;
  assert.equal(man.provider, 'reflink');
  assert.deepEqual(man.disks.map((d: any) => [d.provider, d.copied]), [['reflink', 0], ['reflink', 0]]);
  assert.deepEqual(man.disks.map((d: any) => d.sha256), s1);
  assert.ok(freeBefore - freeBlocks(xfs.mnt) < 1024, `the export used ${freeBefore - freeBlocks(xfs.mnt)} blocks (4 KiB) for ~16 MiB of disk data`);
  for (const f of ['disk0.vhdx', 'disk1.vhdx']) {
    const ex = extents(join(dir, f));
    assert.ok(ex.shared > 0 && ex.shared === ex.total, `${f}: ${ex.shared}/${ex.total} extents shared`);
  }
  assert.equal((await listRefpoints(home, 'x')).at(-1)!.id, man.refpoint.id);
  assert.deepEqual((await showMachine(home, 'x')).checkpoints, []);

  // Copy on write: the machine keeps writing; the export still verifies and imports as it was.
  await writeDisk(d0, [[0, Buffer.alloc(MiB, 0xaa)]]);
  assert.notEqual(await hashDisk(d0), s1[0]);
  const v = cli(home, ['export', 'verify', dir]);
  assert.equal(v.status, 0, v.stderr);
  assert.equal(v.json.ok, true);
  const imp = await importExport(home, dir, { copy: true, newId: true, name: 'x2' });
  assert.deepEqual([await hashDisk(imp.disks[0]!.path), await hashDisk(imp.disks[1]!.path)], s1);
  const ie = extents(imp.disks[0]!.path);
  assert.ok(ie.shared > 0, 'import --copy on XFS reflinks too');
  // A differential based on the reflinked export.
  const e2 = await exportMachine(home, 'x', join(xfs.mnt, 'e2'), { since: dir });
  assert.equal(e2.manifest.disks[0]!.mode, 'differential');
  assert.equal(e2.manifest.disks[0]!.sha256, await hashDisk(d0));
});
