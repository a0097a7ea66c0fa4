import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, open, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { run, tempDir } from '../helpers/tools.js';
import { CopyProvider } from '../../src/export/providers/CopyProvider.js';
import { ReflinkProvider } from '../../src/export/providers/ReflinkProvider.js';
import { AutoProvider } from '../../src/export/providers/AutoProvider.js';
import { getProvider } from '../../src/export/providers/getProvider.js';
import { ProviderNotSupportedError } from '../../src/export/errors.js';
import { UsageError } from '../../src/errors.js';
import { exportMachine } from '../../src/export/exportMachine.js';
import { verifyExport } from '../../src/export/verifyExport.js';
import { importExport } from '../../src/export/importExport.js';
import { createMachine, showMachine } from '../../src/vm/machines.js';
import { listRefpoints } from '../../src/checkpoint/refpoints.js';
import { cli, hashDisk, writeDisk } from '../vm-mgmt/harness.js';

const MiB = 2 ** 20;
const fsType = (p: string) => run('stat', ['-f', '-c', '%T', p]).stdout.trim();

/** A sparse file: data runs with holes between, a zero-filled (allocated) run, a size not a multiple of 4 KiB. */
async function sparseFile(path: string): Promise<Buffer> {
  const size = 24 * MiB + 1234;
  const h = await open(path, 'w');
  const shadow = Buffer.alloc(size);
  try {
    await h.truncate(size);
    for (const [off, len] of [[0, 70000], [5 * MiB + 3, MiB], [20 * MiB, 2 * MiB], [size - 1000, 1000]] as const) {
      const b = randomBytes(len);
      await h.write(b, 0, len, off);
      b.copy(shadow, off);
    }
    await h.write(Buffer.alloc(MiB), 0, MiB, 10 * MiB); // allocated zeros: the copy may leave a hole
    await h.sync();
  } finally {
    await h.close();
  }
  return shadow;
}

test('copy provider: same bytes and length, holes stay holes, streaming, refuses an existing destination, leaves nothing on failure', async (t) => {
  const dir = await tempDir(t);
  const src = join(dir, 'src.bin');
  const shadow = await sparseFile(src);
  const dst = join(dir, 'out', 'dst.bin');
  await mkdir(join(dir, 'out'));
  const seen: number[] = [];
  const r = await new CopyProvider().clone(src, dst, (done) => seen.push(done));
  assert.equal(r.shared, false);
  const back = await readFile(dst);
  assert.equal(back.length, shadow.length);
  assert.ok(back.equals(shadow), 'same content');
  // Only data runs were read; the allocated zero MiB and the holes were not written.
  assert.ok(r.bytesCopied < 4 * MiB + 200000, `copied ${r.bytesCopied} bytes`);
  assert.ok(r.bytesCopied >= 70000 + MiB + 2 * MiB + 1000);
  assert.ok((await stat(dst)).blocks * 512 < 6 * MiB, 'the copy is sparse');
  assert.ok(seen.length > 0 && seen.every((v, i) => i === 0 || v >= seen[i - 1]!), 'progress grows');

  await assert.rejects(new CopyProvider().clone(src, dst), UsageError, 'an existing destination is refused');
  assert.ok((await readFile(dst)).equals(shadow), 'and left as it was');
  await assert.rejects(new CopyProvider().clone(join(dir, 'missing'), join(dir, 'out', 'x.bin')), /ENOENT/);
  assert.deepEqual((await readdir(join(dir, 'out'))).sort(), ['dst.bin'], 'no temporary or partial file left');
  assert.throws(() => getProvider('san'), (e) => e instanceof UsageError && /reflink, copy, auto/.test(e.message));
});

test('reflink provider on ext4/tmpfs/across filesystems: a typed not-supported error, nothing left behind; auto falls back to copy', async (t) => {
  const dir = await tempDir(t);
  const src = join(dir, 'src.bin');
  await writeFile(src, randomBytes(256 * 1024));
  const here = fsType(dir);
  if (['xfs', 'btrfs', 'bcachefs'].includes(here)) return t.skip(`the temp dir is on ${here}, which has reflink (the XFS test covers reflink)`);
  await assert.rejects(new ReflinkProvider().clone(src, join(dir, 'dst.bin')), (e) =>
    e instanceof ProviderNotSupportedError && e.code === 'E_PROVIDER_NOT_SUPPORTED' && e.exitCode === 7 &&
    /FICLONE: (ENOTSUP|EOPNOTSUPP|EINVAL)/.test(e.message) && /--provider copy/.test(e.message) && (here !== 'ext2/ext3' || /ext2\/3\/4/.test(e.message)));
  assert.deepEqual(await readdir(dir), ['src.bin'], 'no clone and no temporary file');

  const shm = join('/dev/shm', `tidemark-prov-${process.pid}`);
  await mkdir(shm, { recursive: true });
  t.after(() => rm(shm, { recursive: true, force: true }));
  if (fsType(shm) === 'tmpfs') {
    const s2 = join(shm, 'src.bin');
    await writeFile(s2, randomBytes(8192));
    await assert.rejects(new ReflinkProvider().clone(s2, join(shm, 'dst.bin')), (e) => e instanceof ProviderNotSupportedError && /tmpfs/.test(e.message));
    // Across filesystems: EXDEV, said as such.
    await assert.rejects(new ReflinkProvider().clone(src, join(shm, 'x.bin')), (e) => e instanceof ProviderNotSupportedError && /different filesystems/.test(e.message) && /EXDEV/.test(e.message));
    assert.deepEqual((await readdir(shm)).sort(), ['src.bin']);
  }
  const auto = await new AutoProvider().clone(src, join(dir, 'auto.bin'));
  assert.equal(auto.shared, false);
  assert.ok((await readFile(join(dir, 'auto.bin'))).equals(await readFile(src)));
});

test('export --provider copy: full export of cloned disk files with hashes and a reference point; verify, import, next differential', async (t) => {
  const home = await tempDir(t);
  const out = await tempDir(t, 'tidemark-prov-');
  const m = await createMachine(home, 'p', { disks: [{ size: 16 * MiB }, { size: 8 * MiB }] });
  const [d0, d1] = m.disks.map((d) => d.path);
  await writeDisk(d0!, [[0, randomBytes(MiB)], [13 * MiB + 5, randomBytes(9000)]]);
  await writeDisk(d1!, [[4096, randomBytes(65536)]]);
  const s1 = [await hashDisk(d0!), await hashDisk(d1!)];

  // The CLI once: flags, JSON, exit status.
  const r = cli(home, ['export', 'p', join(out, 'e1'), '--provider', 'copy']);
  assert.equal(r.status, 0, r.stderr);
  const man = r.json[0].manifest;
  assert.equal(man.kind, 'full');
  assert.equal(man.provider, 'copy');
  assert.deepEqual(man.disks.map((d: any) => [d.mode, d.provider, d.file]), [['full', 'copy', 'disk0.vhdx'], ['full', 'copy', 'disk1.vhdx']]);
  assert.deepEqual(man.disks.map((d: any) => d.sha256), s1, 'the manifest hashes are the machine content');
  assert.ok(man.disks[0].copied < 3 * MiB, 'sparse: only the VHDX file data was copied');
  const refs = await listRefpoints(home, 'p');
  assert.equal(refs[refs.length - 1]!.id, man.refpoint.id, 'ends with a reference point like every export');
  assert.deepEqual((await showMachine(home, 'p')).checkpoints, [], 'the backup checkpoint is merged back');
  assert.equal((await verifyExport(join(out, 'e1'))).ok, true);

  // --provider is a full export: refused with --since; the next differential builds on the cloned files.
  await assert.rejects(exportMachine(home, 'p', join(out, 'bad'), { provider: 'copy', since: man.refpoint.id }), UsageError);
  await writeDisk(d0!, [[7 * MiB, randomBytes(4096)]]);
  const e2 = await exportMachine(home, 'p', join(out, 'e2'), { since: join(out, 'e1') });
  assert.deepEqual(e2.manifest.disks.map((d) => [d.mode, d.parent]), [['differential', '../e1/disk0.vhdx'], ['differential', '../e1/disk1.vhdx']]);
  assert.deepEqual(e2.manifest.disks.map((d) => d.copied), [65536, 0]);
  assert.equal((await verifyExport(e2.dir)).ok, true);

  // Import works on the provider export and on the differential chained onto it.
  const i1 = await importExport(home, join(out, 'e1'), { copy: true, newId: true, name: 'i1' });
  assert.deepEqual([await hashDisk(i1.disks[0]!.path), await hashDisk(i1.disks[1]!.path)], s1);
  const i2 = await importExport(home, e2.dir, { copy: true, newId: true, name: 'i2' });
  assert.deepEqual([await hashDisk(i2.disks[0]!.path), await hashDisk(i2.disks[1]!.path)], [await hashDisk(d0!), await hashDisk(d1!)]);

  // reflink here (ext4 temp dirs): a typed error, the export rolled back (no checkpoint, no new reference point).
  if (!['xfs', 'btrfs', 'bcachefs'].includes(fsType(out))) {
    const bad = cli(home, ['export', 'p', join(out, 'e3'), '--provider', 'reflink']);
    assert.equal(bad.status, 7);
    assert.equal(bad.json.error.code, 'E_PROVIDER_NOT_SUPPORTED');
    assert.deepEqual((await showMachine(home, 'p')).checkpoints, []);
    assert.equal((await listRefpoints(home, 'p')).length, 2);
    assert.equal((await verifyExport(join(out, 'e1'))).ok, true);
  }
});
