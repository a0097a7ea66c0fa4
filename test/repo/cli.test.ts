import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { LocalBackend } from '../../src/backend/LocalBackend.js';
import { MemoryDevice } from '../../src/blockdev/MemoryDevice.js';
import { IndexTree } from '../../src/repo/IndexTree.js';
import { Repository } from '../../src/repo/Repository.js';
import { runBackup } from '../../src/repo/runBackup.js';
import { tempDir } from '../helpers/tools.js';
import { tidemark, tidemarkJson } from '../disk/cliHarness.js';
import { flipBlobByte } from './helpers.js';

test('tidemark repo: init --encrypt, snapshots, verify, forget, prune, unlock; exit codes', async (t) => {
  const dir = await tempDir(t);
  const path = join(dir, 'repo');
  const pf = join(dir, 'pass');
  const wrong = join(dir, 'wrong');
  await writeFile(pf, 'secret words\n');
  await writeFile(wrong, 'other words\n');

  const init = await tidemarkJson<{ encryption: string; chunkSize: number }>('repo', 'init', path, '--encrypt', '--passphrase-file', pf, '--chunk-size', '16K', '--json');
  assert.equal(init.status, 0, init.stderr);
  assert.equal(init.json.encryption, 'aes-256-gcm');
  assert.equal(init.json.chunkSize, 16384);
  assert.equal((await tidemark('repo', 'init', path, '--encrypt', '--passphrase-file', pf)).status, 2, 'exists');

  const repo = await Repository.open(new LocalBackend(path), { passphrase: 'secret words' });
  const dev = new MemoryDevice(1 << 20);
  await dev.write(0, randomBytes(100_000));
  const s1 = await runBackup(repo, { source: { id: 'vm', name: 'web' }, disks: [{ name: 'disk0', device: dev }] });
  await dev.write(500_000, randomBytes(20_000));
  const s2 = await runBackup(repo, { source: { id: 'vm', name: 'web' }, parent: s1.id, disks: [{ name: 'disk0', device: dev, previous: s1.disks[0], changedRanges: [{ offset: 500_000, length: 20_000 }] }] });

  const list = await tidemarkJson<Array<{ id: string }>>('repo', 'snapshots', path, '--passphrase-file', pf, '--json');
  assert.deepEqual(list.json.map((s) => s.id), [s1.id, s2.id]);
  const human = await tidemark('repo', 'snapshots', path, '--passphrase-file', pf);
  assert.match(human.stdout, new RegExp(`${s1.id.slice(0, 12)} .* web .*disk0:1.00 MiB`));

  const bad = await tidemark('repo', 'snapshots', path, '--passphrase-file', wrong);
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /wrong passphrase/);
  assert.equal((await tidemark('repo', 'snapshots', join(dir, 'nothing'))).status, 3);

  const ok = await tidemarkJson<{ ok: boolean }>('repo', 'verify', path, '--read-data', '--passphrase-file', pf, '--json');
  assert.equal(ok.status, 0);
  assert.equal(ok.json.ok, true);
  const victim = await IndexTree.open(repo, s2.disks[0]).lookup(Math.floor(500_000 / 16384));
  await flipBlobByte(repo, 'chunks', victim, 50);
  const damaged = await tidemarkJson<{ ok: boolean; problems: Array<{ name: string; snapshots: string[] }> }>('repo', 'verify', path, '--read-data', '--passphrase-file', pf, '--json');
  assert.equal(damaged.status, 1);
  assert.deepEqual(damaged.json.problems.map((p) => [p.name, p.snapshots]), [[victim, [s2.id]]]);
  const text = await tidemark('repo', 'verify', path, '--read-data', '--passphrase-file', pf);
  assert.match(text.stdout, new RegExp(`chunks/${victim}: corrupt; affects ${s2.id.slice(0, 12)}`));

  assert.equal((await tidemark('repo', 'forget', path, '--passphrase-file', pf)).status, 2, 'forget needs a policy');
  const dry = await tidemarkJson<{ removed: Array<{ id: string }> }>('repo', 'forget', path, '--keep-last', '1', '--dry-run', '--passphrase-file', pf, '--json');
  assert.deepEqual(dry.json.removed.map((r) => r.id), [s1.id]);
  assert.equal((await tidemarkJson<unknown[]>('repo', 'snapshots', path, '--passphrase-file', pf, '--json')).json.length, 2);
  const f = await tidemarkJson<{ removed: Array<{ id: string }>; prune: { keptYoung: number } }>('repo', 'forget', path, '--keep-last', '1', '--prune', '--passphrase-file', pf, '--json');
  assert.equal(f.status, 0, f.stderr);
  assert.deepEqual(f.json.removed.map((r) => r.id), [s1.id]);
  assert.ok(f.json.prune.keptYoung > 0, 'fresh garbage is kept for the grace period');
  const pr = await tidemarkJson<{ removedChunks: number }>('repo', 'prune', path, '--passphrase-file', pf, '--json');
  assert.equal(pr.status, 0);
  assert.equal(pr.json.removedChunks, 0);
  const un = await tidemarkJson<{ removed: number }>('repo', 'unlock', path, '--passphrase-file', pf, '--json');
  assert.deepEqual(un.json, { removed: 0 });
});
