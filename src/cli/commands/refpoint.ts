import type { Command } from 'commander';
import { listRefpoints, removeRefpoint } from '../../checkpoint/refpoints.js';
import { printResult } from '../output.js';
import { HOME_FLAGS, HOME_HELP, homeOf } from './vm.js';

type O = { home?: string; json?: boolean };

/** `tidemark refpoint list|remove`: reference points left by exports (bases for differentials). */
export function register(program: Command): void {
  const rp = program.command('refpoint').description('reference points: what exports leave behind for the next differential');
  rp.command('list <vm|group>').description('list reference points, oldest first')
    .option(HOME_FLAGS, HOME_HELP).option('--json', 'print as JSON')
    .action(async (ref: string, o: O) => {
      const r = await listRefpoints(homeOf(o), ref);
      printResult(o.json, r, () => r.map((x) => `${x.machine}  #${x.seq}  ${x.id}  ${x.exportDir}`).join('\n') || 'no reference points');
    });
  rp.command('remove <vm> <refpoint>').description('remove a reference point (differentials can no longer start from it)')
    .option(HOME_FLAGS, HOME_HELP).option('--json', 'print as JSON')
    .action(async (vm: string, id: string, o: O) => {
      const r = await removeRefpoint(homeOf(o), vm, id);
      printResult(o.json, r, () => `removed reference point #${r.seq} ${r.id}`);
    });
}
