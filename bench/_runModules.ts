/**
 * The loop shared by the bench and soak runners (run.ts, soak.ts): import each module, call its
 * `run()` with a header and a timing, and keep going after a failure. The leading `_` keeps this file
 * out of the bench list.
 */
import { pathToFileURL } from 'node:url';

export interface RunModulesOptions {
  /** Word in the header, `=== <kind> <name> ===`. */
  kind: string;
  /** Word in the success line, `=== <name> <passed> in 1.2 s ===`. */
  passed: string;
  /** Called for a module that exports no `run()`; returns true when that counts as a failure. */
  onNoRun(name: string): boolean;
}

/** Run `modules` (name and file path) one after another; resolves with the number that failed. */
export async function runModules(modules: Array<{ name: string; file: string }>, opts: RunModulesOptions): Promise<number> {
  let failed = 0;
  for (const { name, file } of modules) {
    const mod = (await import(pathToFileURL(file).href)) as { run?: unknown };
    if (typeof mod.run !== 'function') {
      if (opts.onNoRun(name)) failed++;
      continue;
    }
    process.stdout.write(`\n=== ${opts.kind} ${name} ===\n`);
    const t0 = process.hrtime.bigint();
    try {
      await (mod.run as () => Promise<void>)();
      process.stdout.write(`=== ${name} ${opts.passed} in ${(Number(process.hrtime.bigint() - t0) / 1e9).toFixed(1)} s ===\n`);
    } catch (err) {
      failed++;
      process.stdout.write(`=== ${name} FAILED: ${(err as Error)?.stack ?? String(err)} ===\n`);
    }
  }
  return failed;
}
