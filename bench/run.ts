/**
 * `npm run bench [-- name...]`: run every benchmark module in this directory (a module exporting
 * `run(): Promise<void>`), or only those named (`npm run bench -- disk nbd`). Soak tests (soak*.ts),
 * this runner and modules without `run()` are not benches and are skipped. Each bench prints its
 * figures next to its peer's; this runner adds a header and a timing per bench and exits non-zero
 * when one fails (the others still run).
 */
import '../src/util/threadPool.js'; // first, as in the CLI: benches measure what `tidemark` does
import { readdir } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { runModules } from './_runModules.js';

const here = dirname(fileURLToPath(import.meta.url));
const ext = import.meta.url.endsWith('.ts') ? '.ts' : '.js';

/** Bench names in this directory: files `<name>.js` that are not the runners or soaks. */
export async function benchNames(): Promise<string[]> {
  const files = await readdir(here);
  return files
    .filter((f) => f.endsWith(ext) && !f.endsWith(`.d${ext}`))
    .map((f) => f.slice(0, -ext.length))
    .filter((n) => n !== 'run' && !n.startsWith('soak') && !n.startsWith('_'))
    .sort();
}

async function main(argv: string[]): Promise<number> {
  const available = await benchNames();
  const wanted = argv.length > 0 ? argv : available;
  const unknown = wanted.filter((n) => !available.includes(n));
  if (unknown.length > 0) {
    process.stderr.write(`bench: no benchmark named ${unknown.join(', ')}; available: ${available.join(', ') || '(none)'}\n`);
    return 2;
  }
  const failed = await runModules(wanted.map((name) => ({ name, file: join(here, name + ext) })), {
    kind: 'bench',
    passed: 'done',
    onNoRun: (name) => {
      if (argv.length === 0) return false; // not a bench: skipped silently when running them all
      process.stderr.write(`bench: ${name} is not a benchmark (it exports no run())\n`);
      return true;
    },
  });
  return failed > 0 ? 1 : 0;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  main(process.argv.slice(2)).then((code) => {
    process.exitCode = code;
  });
}
