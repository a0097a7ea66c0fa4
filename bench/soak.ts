/**
 * `npm run soak [-- name...]`: run every soak module in this directory (`soak-<name>.ts` exporting
 * `run(): Promise<void>`), or only those named (`npm run soak -- nbd` runs soak-nbd). Soaks are long
 * randomized runs kept out of the test suite; each one throws when it finds a problem. The runner goes
 * on with the others and exits non-zero when any failed.
 */
import { readdir } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

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
  let failed = 0;
  for (const name of wanted) {
    const mod = (await import(pathToFileURL(join(here, `soak-${name}${ext}`)).href)) as { run?: unknown };
    if (typeof mod.run !== 'function') {
      process.stderr.write(`soak: soak-${name} exports no run(); skipped\n`);
      continue;
    }
    process.stdout.write(`\n=== soak ${name} ===\n`);
    const t0 = process.hrtime.bigint();
    try {
      await (mod.run as () => Promise<void>)();
      process.stdout.write(`=== ${name} passed in ${(Number(process.hrtime.bigint() - t0) / 1e9).toFixed(1)} s ===\n`);
    } catch (err) {
      failed++;
      process.stdout.write(`=== ${name} FAILED: ${(err as Error)?.stack ?? String(err)} ===\n`);
    }
  }
  return failed > 0 ? 1 : 0;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  main(process.argv.slice(2)).then((code) => {
    process.exitCode = code;
  });
}
