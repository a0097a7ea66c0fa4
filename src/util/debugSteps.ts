/**
 * Test hook shared by the jobs that tests kill at a chosen step (export, backup): with
 * TIDEMARK_DEBUG_STEPS=<ms> set, `debugStep(name)` prints `tidemark-step <name>` to stderr and pauses
 * <ms> there — at every step, or only at step TIDEMARK_DEBUG_PAUSE_AT when that is set. Without
 * TIDEMARK_DEBUG_STEPS it returns at once and prints nothing.
 */
export async function debugStep(s: string): Promise<void> {
  const ms = process.env.TIDEMARK_DEBUG_STEPS;
  if (ms === undefined) return;
  process.stderr.write(`tidemark-step ${s}\n`);
  const at = process.env.TIDEMARK_DEBUG_PAUSE_AT;
  if (!at || at === s) await new Promise((r) => setTimeout(r, Number(ms) || 0));
}
