import type { Command } from 'commander';
import { importExport } from '../../export/importExport.js';
import { printResult } from '../output.js';
import { HOME_FLAGS, HOME_HELP, homeOf, machineText } from './vm.js';

/** `tidemark import <dir>`: register an exported machine. */
export function register(program: Command): void {
  program.command('import <dir>').description('register an exported machine (same ID unless --new-id); full disks are moved unless --copy; a differential is chained onto copies of its base exports\' disks (which must be in place)')
    .option('--copy', 'copy the disks (reflink when the filesystem can), leave the export intact')
    .option('--new-id', 'give the machine a new ID')
    .option('--name <name>', 'register under this name')
    .option(HOME_FLAGS, HOME_HELP).option('--json', 'print as JSON')
    .action(async (dir: string, o: { copy?: boolean; newId?: boolean; name?: string; home?: string; json?: boolean }) => {
      const m = await importExport(homeOf(o), dir, { copy: !!o.copy, newId: !!o.newId, ...(o.name ? { name: o.name } : {}) });
      printResult(o.json, m, () => `imported ${machineText(m)}`);
    });
}
