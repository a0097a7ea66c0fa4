import type { Command } from 'commander';
import { ExitCode } from '../../errors.js';
import { exportMachines } from '../../export/exportMachine.js';
import { verifyExport } from '../../export/verifyExport.js';
import { getProvider } from '../../export/providers/getProvider.js';
import { printResult } from '../output.js';
import { progress, type Progress } from '../progress.js';
import { HOME_FLAGS, HOME_HELP, homeOf } from './vm.js';

/** `tidemark export <vm|group> <dir>` and `tidemark export verify <dir>`. */
export function register(program: Command): void {
  const ex = program.command('export').description('export machines (configuration + disks) from a backup checkpoint; `export verify <dir>` re-checks one')
    .argument('<vm|group>').argument('<dir>', 'new or empty directory')
    .option('--since <refpoint|dir>', 'differential: only blocks changed since this reference point (or the previous export directory)')
    .option('--merge', 'with --since: write full VHDX files (the chain merged) instead of differencing ones')
    .option('--provider <reflink|copy|auto>', 'storage clones each disk file (full export): reflink (same XFS/btrfs filesystem), copy (sparse streaming) or auto')
    .option(HOME_FLAGS, HOME_HELP).option('--json', 'print as JSON')
    .action(async (ref: string, dir: string, o: { since?: string; merge?: boolean; provider?: string; home?: string; json?: boolean }) => {
      // One bar per disk, replaced when the next disk (of this or the next machine) starts.
      let bar: { slot: number; last: number; p: Progress } | undefined;
      let r;
      try {
        r = await exportMachines(homeOf(o), ref, dir, {
          ...(o.since ? { since: o.since } : {}), merge: !!o.merge,
          ...(o.provider !== undefined ? { provider: getProvider(o.provider).name } : {}),
          onProgress: (slot, done, total) => {
            if (!bar || bar.slot !== slot || done < bar.last) {
              bar?.p.stop();
              bar = { slot, last: 0, p: progress(`disk ${slot}`, total, process.stderr.isTTY === true && !o.json) };
            }
            bar.last = done;
            bar.p.update(done);
          },
        });
      } finally {
        bar?.p.stop();
      }
      for (const x of r) for (const w of x.manifest.warnings) process.stderr.write(`tidemark: warning: ${x.manifest.machine.name}: ${w}\n`);
      printResult(o.json, r, () => r.map((x) => `exported ${x.manifest.machine.name} (${x.manifest.kind}) to ${x.dir}; reference point ${x.manifest.refpoint.id}\n` +
        x.manifest.disks.map((d) => `  disk ${d.slot}: ${d.file} ${d.mode}${d.provider ? ` (cloned by ${d.provider})` : ''}, ${d.copied} bytes copied, sha256 ${d.sha256}`).join('\n')).join('\n'));
    });
  ex.command('verify <dir>').description(`re-hash an export's disks and compare with its manifest (exit ${ExitCode.DIFFERENT} on a mismatch)`)
    .option(HOME_FLAGS, `${HOME_HELP} (not used: accepted for uniformity)`).option('--json', 'print as JSON')
    .action(async (dir: string, o: { json?: boolean }) => {
      const r = await verifyExport(dir);
      // The parent command shares --json/--home: commander may hand them to it.
      printResult(o.json || ex.opts().json, r, () => r.disks.map((d) => `disk ${d.slot} ${d.file}: ${d.ok ? 'ok' : `MISMATCH${d.error ? ` (${d.error})` : ` (${d.actual})`}`}`).join('\n'));
      if (!r.ok) process.exitCode = ExitCode.DIFFERENT;
    });
}
