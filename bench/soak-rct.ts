/**
 * RCT crash soak: hundreds of rounds of "seal, shadow-copy the disk, let a child write through the
 * tracking layer, SIGKILL it at a random moment, reopen, check every really changed block is reported".
 * Throws on the first lost block. Prints how coarse the crash superset got (reported / truly changed).
 * TIDEMARK_SOAK_RCT_ROUNDS overrides the round count.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCrashRounds } from '../test/rct/crashHarness.js';

export async function run(rounds = Number(process.env.TIDEMARK_SOAK_RCT_ROUNDS ?? 300)): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'tidemark-soak-rct-'));
  try {
    const t0 = Date.now();
    const r = await runCrashRounds(dir, rounds, { maxMs: 400 });
    const ratio = r.changedBytes ? r.reportedBytes / r.changedBytes : 1;
    process.stdout.write(
      `rct crash soak: ${r.rounds} SIGKILL rounds in ${((Date.now() - t0) / 1000).toFixed(0)} s, no changed block lost; ` +
        `truly changed ${r.changedBytes} B, reported ${r.reportedBytes} B: superset ratio ${ratio.toFixed(2)} ` +
        `(64 KiB blocks, 2 MiB regions)\n`,
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
