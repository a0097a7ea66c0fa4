import assert from 'node:assert/strict';
import { test } from 'node:test';
import { tempDir } from '../helpers/tools.js';
import { runRepoSoak, soakSeed } from './soakHarness.js';

// A few rounds of the repository fault soak (bench/soak-repo.ts runs hundreds): real `tidemark backup`,
// `forget` and `prune` processes, concurrent, SIGKILLed at random moments; after each round
// `verify --read-data` passes and snapshots restore bit-exact. TIDEMARK_SOAK_SEED fixes the seed.
test('SIGKILLed backup / forget / prune (some racing): verify passes, every snapshot restores bit-exact', { timeout: 600_000 }, async (t) => {
  // ~25 s of CPU (about 70 CLI processes); the generous timeout only covers a loaded machine.
  const seed = process.env.TIDEMARK_SOAK_SEED ? soakSeed() : 20261127;
  const dir = await tempDir(t, 'tidemark-kill-soak-');
  t.diagnostic(`seed ${seed} (TIDEMARK_SOAK_SEED=${seed} replays it)`);
  const started = Date.now();
  const r = await runRepoSoak({ dir, rounds: 6, seed, diskSize: 8 * 1024 * 1024, restore: 'sample' });
  t.diagnostic(`${r.rounds} rounds in ${((Date.now() - started) / 1000).toFixed(1)} s: ${JSON.stringify(r.outcomes)}; modes ${JSON.stringify(r.modes)}; ${r.restores} restores`);
  const killed = Object.entries(r.outcomes).filter(([k]) => k.includes('killed')).reduce((n, [, v]) => n + v, 0);
  // A kill lands at a random moment, so an operation sometimes finishes first (faster machines, packs):
  // require kills in at least half the rounds, which fails if the harness stops killing at all.
  assert.ok(killed >= Math.ceil(r.rounds / 2), `most rounds kill an operation (${killed} kills in ${r.rounds} rounds)`);
  assert.ok(r.restores >= r.rounds, 'restores were checked');
  assert.ok((r.modes.incremental ?? 0) > 0, 'some backups were incremental');
});

// Format 2's prune *moves* live blobs (repacks a pack with >= 20% garbage, then deletes it). Readers take
// no repository lock (restore, verify, mount's SnapshotDevice), so a Repository that loaded the pack
// index before such a prune must find the moved blobs (PackStore reloads the index once on a miss);
// otherwise a mount serving a snapshot across a nightly prune would start failing reads.
test('a reader that loaded the pack index before a repacking prune still reads live snapshots', async () => {
  const { MemoryBackend } = await import('../../src/backend/MemoryBackend.js');
  const { MemoryDevice } = await import('../../src/blockdev/MemoryDevice.js');
  const { Repository } = await import('../../src/repo/Repository.js');
  const { runBackup } = await import('../../src/repo/runBackup.js');
  const { restoreDevice } = await import('../../src/repo/restoreDevice.js');
  const { forget, prune } = await import('../../src/repo/prune.js');
  const { initRepo, deviceHash } = await import('./helpers.js');
  const { randomBytes } = await import('node:crypto');
  const MiB = 1024 * 1024;
  const backend = new MemoryBackend();
  const writer = await initRepo(backend, { chunkSize: 16384 });
  const source = { id: 'disk:/d', name: 'd' };
  const dev = new MemoryDevice(4 * MiB);
  await dev.write(0, randomBytes(2 * MiB));
  await runBackup(writer, { source, disks: [{ name: 'd', device: dev }] });
  await dev.write(0, randomBytes(MiB)); // half of the first pack's chunks become garbage once s1 is forgotten
  const s2 = await runBackup(writer, { source, disks: [{ name: 'd', device: dev }] });
  const want = await deviceHash(dev);

  const reader = await Repository.open(backend);
  const first = new MemoryDevice(4 * MiB);
  await restoreDevice(reader, s2.disks[0]!, first);
  assert.equal(await deviceHash(first), want);

  await forget(writer, { last: 1 });
  const pr = await prune(writer, { graceMs: 0 });
  assert.ok(pr.repackedPacks > 0 && pr.removedChunks > 0, `prune repacked the first pack (${JSON.stringify(pr)})`);
  const again = new MemoryDevice(4 * MiB);
  await restoreDevice(reader, s2.disks[0]!, again);
  assert.equal(await deviceHash(again), want);
});
