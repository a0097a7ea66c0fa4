import { Option, type Command } from 'commander';
import { applyCheckpoint, createCheckpoint, listCheckpoints, removeCheckpoint, type CheckpointView } from '../../checkpoint/checkpoints.js';
import type { CheckpointType } from '../../vm/Inventory.js';
import { printResult } from '../output.js';
import { HOME_FLAGS, HOME_HELP, homeOf } from './vm.js';

type O = { home?: string; json?: boolean };
const line = (c: CheckpointView) => `${c.machine}  ${c.id}  ${c.name}  ${c.type}  ${c.createdAt}${c.consistency ? `  ${c.consistency}-consistent (quiesce: ${c.quiesce ?? 'none'})` : ''}${c.holder ? `  held by PID ${c.holder.pid} since ${c.holder.since}` : ''}`;

/** `tidemark checkpoint create|list|apply|remove` (create and remove also work on a running machine, online). */
export function register(program: Command): void {
  const cp = program.command('checkpoint').description('checkpoints of machines (differencing .avhdx disks over frozen images); create/remove work while the machine runs');
  cp.command('create <vm|group>').description('fork the configuration and every disk into a new checkpoint (a running machine keeps running; a group is forked at one instant; production/backup quiesce running guests first)')
    .addOption(new Option('--type <type>', 'checkpoint type').choices(['standard', 'production', 'backup']).default('standard'))
    .option('--name <name>', 'checkpoint name')
    .addOption(new Option('--fallback <mode>', 'production: when the guest cannot be quiesced (no qemu-guest-agent, no freeze/thaw hooks), make a crash-consistent checkpoint instead of failing (backup checkpoints always do)').choices(['crash']))
    .option(HOME_FLAGS, HOME_HELP).option('--json', 'print as JSON')
    .action(async (ref: string, o: O & { type: CheckpointType; name?: string; fallback?: 'crash' }) => {
      const log = (l: string) => process.stderr.write(`${l}\n`);
      const r = await createCheckpoint(homeOf(o), ref, { type: o.type, log, ...(o.name ? { name: o.name } : {}), ...(o.fallback ? { fallback: o.fallback } : {}) });
      printResult(o.json, r, () => r.map((c) => `created ${line(c)}`).join('\n'));
    });
  cp.command('list <vm|group>').description("list a machine's checkpoints, oldest first")
    .option(HOME_FLAGS, HOME_HELP).option('--json', 'print as JSON')
    .action(async (ref: string, o: O) => {
      const r = await listCheckpoints(homeOf(o), ref);
      printResult(o.json, r, () => r.map(line).join('\n') || 'no checkpoints');
    });
  cp.command('apply <vm> <checkpoint>').description('revert the machine to a checkpoint (later state is discarded; the machine must be off)')
    .option(HOME_FLAGS, HOME_HELP).option('--json', 'print as JSON')
    .action(async (vm: string, ref: string, o: O) => {
      const c = await applyCheckpoint(homeOf(o), vm, ref);
      printResult(o.json, c, () => `applied ${line(c)}`);
    });
  cp.command('remove <vm> <checkpoint>').description('remove the newest checkpoint: merge its disks back (the current state is kept)')
    .option(HOME_FLAGS, HOME_HELP).option('--json', 'print as JSON')
    .action(async (vm: string, ref: string, o: O) => {
      const c = await removeCheckpoint(homeOf(o), vm, ref);
      printResult(o.json, c, () => `removed ${line(c)}`);
    });
}
