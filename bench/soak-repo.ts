/**
 * Repository fault soak: TIDEMARK_SOAK_ROUNDS (default 100) rounds of real `tidemark backup` / `forget`
 * / `prune` runs on two changing disk images — concurrently in most rounds (a backup racing a prune is
 * the dangerous case) — with SIGKILLs at random moments; after each round `verify --read-data` must pass
 * and every snapshot must restore bit-exact to the disk state its backup captured (see
 * test/repo/soakHarness.ts). The seed is printed first; TIDEMARK_SOAK_SEED replays its decisions.
 * On failure the working directory is kept and named. TIDEMARK_SOAK_RESTORE=all restores every snapshot
 * after every round (default: all of them after a round with a prune, else the new ones and two
 * others); TIDEMARK_SOAK_VERBOSE=1 prints one line per round. Concurrent readers (`verify`, `restore`
 * during the operations) run unless TIDEMARK_SOAK_READERS=0; one that fails while the repository is
 * fine fails the soak at the end.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runRepoSoak, soakSeed } from '../test/repo/soakHarness.js';

export async function run(rounds = Number(process.env.TIDEMARK_SOAK_ROUNDS ?? 100)): Promise<void> {
  const seed = soakSeed();
  const dir = await mkdtemp(join(tmpdir(), 'tidemark-soak-repo-'));
  process.stdout.write(`repo fault soak: seed ${seed} (TIDEMARK_SOAK_SEED=${seed} replays it), ${rounds} rounds in ${dir}\n`);
  const verbose = process.env.TIDEMARK_SOAK_VERBOSE === '1';
  const t0 = Date.now();
  try {
    const restore = process.env.TIDEMARK_SOAK_RESTORE === 'all' ? 'all' : 'after-prune';
    const readers = process.env.TIDEMARK_SOAK_READERS !== '0';
    const r = await runRepoSoak({ dir, rounds, seed, restore, readers, log: (l) => verbose && process.stdout.write(`  ${l}\n`) });
    const outcomes = Object.entries(r.outcomes)
      .sort()
      .map(([k, n]) => `${k} ${n}`)
      .join(', ');
    process.stdout.write(
      `repo fault soak: ${r.rounds} rounds in ${((Date.now() - t0) / 1000).toFixed(0)} s (${r.encrypted ? 'encrypted' : 'plain'}), no damage, every restore bit-exact\n` +
        `  operations: ${outcomes}\n` +
        `  backups killed after their manifest (snapshot visible, correct): ${r.killedAfterCommit}; modes: ${JSON.stringify(r.modes)}\n` +
        `  ${r.verifies} verify --read-data, ${r.restores} restores, up to ${r.maxSnapshots} snapshots, prune freed ${(r.bytesPruned / 1048576).toFixed(1)} MiB\n` +
        (r.fullScanReasons.length ? `  full-scan reasons: ${r.fullScanReasons.join(' | ')}\n` : '') +
        `  concurrent readers (verify / restore during the operations): ${r.readers}, anomalies: ${r.readerAnomalies.length}\n`,
    );
    if (r.readerAnomalies.length > 0) {
      throw new Error(`seed ${seed}: ${r.readerAnomalies.length} concurrent reader(s) failed or reported damage though the repository was fine:\n  ${r.readerAnomalies.join('\n  ')}`);
    }
    await rm(dir, { recursive: true, force: true });
  } catch (err) {
    process.stdout.write(`repo fault soak FAILED (seed ${seed}); working directory kept: ${dir}\n`);
    throw err;
  }
}
