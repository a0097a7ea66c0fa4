import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { LocalBackend } from '../../src/backend/LocalBackend.js';
import { RawFileDevice } from '../../src/blockdev/RawFileDevice.js';
import { restoreDevice } from '../../src/repo/restoreDevice.js';
import { runBackup } from '../../src/repo/runBackup.js';
import { requireTools, run, tempDir } from '../helpers/tools.js';
import { initRepo } from './helpers.js';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

test('raw image files: full (extents) + incremental backup, sparse restore identical per qemu-img compare', async (t) => {
  if (!requireTools(t, 'qemu-img', 'qemu-io')) return;
  const dir = await tempDir(t);
  const src = join(dir, 'src.raw');
  const dev = await RawFileDevice.create(src, 3 * GiB); // offsets beyond 2^31
  await dev.write(0, randomBytes(MiB));
  await dev.write(2.5 * GiB + 4096, randomBytes(300_000));
  await dev.close();
  const repo = await initRepo(new LocalBackend(join(dir, 'repo')), { passphrase: 'pw' });

  const ro = await RawFileDevice.open(src, { readOnly: true });
  const s1 = await runBackup(repo, { source: { id: 'raw', name: 'src.raw' }, disks: [{ name: 'disk0', device: ro }] });
  await ro.close();
  assert.ok((s1.stats?.bytesRead ?? 0) < 2 * MiB, `a full backup reads only allocated data (read ${s1.stats?.bytesRead})`);

  // Another program changes the image; the change list comes from elsewhere (RCT in production).
  run('qemu-io', ['-f', 'raw', '-c', 'write -P 0xab 1234567 70000', '-c', `write -z ${2.5 * GiB} 65536`, src]);
  const ro2 = await RawFileDevice.open(src, { readOnly: true });
  const s2 = await runBackup(repo, {
    source: { id: 'raw', name: 'src.raw' },
    parent: s1.id,
    disks: [{ name: 'disk0', device: ro2, previous: s1.disks[0], changedRanges: [{ offset: 1234567, length: 70000 }, { offset: 2.5 * GiB, length: 65536 }] }],
  });
  await ro2.close();

  for (const [snap, name] of [[s2, 'r2.raw'], [s1, 'r1.raw']] as const) {
    const out = join(dir, name);
    const target = await RawFileDevice.create(out, snap.disks[0].size);
    await restoreDevice(repo, snap.disks[0], target);
    await target.close();
    assert.ok((await stat(out)).blocks * 512 < 8 * MiB, 'restore is sparse');
  }
  assert.equal(run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', src, join(dir, 'r2.raw')], { allowFail: true }).status, 0, 'latest restore point equals the image');
  assert.equal(run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', src, join(dir, 'r1.raw')], { allowFail: true }).status, 1, 'the first restore point predates the change');
});
