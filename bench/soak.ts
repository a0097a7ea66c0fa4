/**
 * `npm run soak [-- name...]`: run every soak module in this directory (`soak-<name>.ts` exporting
 * `run(): Promise<void>`), or only those named (`npm run soak -- nbd` runs soak-nbd). Soaks are long
 * randomized runs kept out of the test suite; each one throws when it finds a problem. The runner goes
 * on with the others and exits non-zero when any failed.
 */
import { readdir } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { runModules } from './_runModules.js';

const here = dirname(fileURLToPath(import.meta.url));
const ext = import.meta.url.endsWith('.ts') ? '.ts' : '.js';

/** Soak names: files `soak-<name>.js` in this directory. */
export async function soakNames(): Promise<string[]> {
  const files = await readdir(here);
  return files
    .filter((f) => f.startsWith('soak-') && f.endsWith(ext) && !f.endsWith(`.d${ext}`))
    .map((f) => f.slice('soak-'.length, -ext.length))
    .sort();
}

async function main(argv: string[]): Promise<number> {
  const available = await soakNames();
  const wanted = argv.length > 0 ? argv.map((n) => n.replace(/^soak-/, '')) : available;
  const unknown = wanted.filter((n) => !available.includes(n));
  if (unknown.length > 0) {
    process.stderr.write(`soak: no soak named ${unknown.join(', ')}; available: ${available.join(', ') || '(none)'}\n`);
    return 2;
  }
  const failed = await runModules(wanted.map((name) => ({ name, file: join(here, `soak-${name}${ext}`) })), {
    kind: 'soak',
    passed: 'passed',
    onNoRun: (name) => {
      process.stderr.write(`soak: soak-${name} exports no run(); skipped\n`);
      return false;
    },
  });
  return failed > 0 ? 1 : 0;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  main(process.argv.slice(2)).then((code) => {
    process.exitCode = code;
  });
}
