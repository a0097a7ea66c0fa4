import type { Command } from 'commander';
import { createGroup, deleteGroup, groupAdd, groupRemove, listGroups } from '../../vm/machines.js';
import { printResult } from '../output.js';
import { HOME_FLAGS, HOME_HELP, homeOf } from './vm.js';

type O = { home?: string; json?: boolean };

/** `tidemark group create|add|remove|delete|list|show`: named sets of machines (checkpoint/export take a group). */
export function register(program: Command): void {
  const group = program.command('group').description('VM groups: checkpoint and export several machines together');
  const text = (g: { name: string; members: string[] }) => `${g.name}: ${g.members.join(', ') || '(empty)'}`;

  group.command('create <name> [vms...]').description('create a group, optionally with machines')
    .option(HOME_FLAGS, HOME_HELP).option('--json', 'print as JSON')
    .action(async (name: string, vms: string[], o: O) => {
      const g = await createGroup(homeOf(o), name, vms);
      printResult(o.json, g, () => `created group ${text(g)}`);
    });
  group.command('add <group> <vms...>').description('add machines to a group')
    .option(HOME_FLAGS, HOME_HELP).option('--json', 'print as JSON')
    .action(async (name: string, vms: string[], o: O) => {
      const g = await groupAdd(homeOf(o), name, vms);
      printResult(o.json, g, () => text(g));
    });
  group.command('remove <group> [vms...]').description('remove machines from a group; without machines, delete the group')
    .option(HOME_FLAGS, HOME_HELP).option('--json', 'print as JSON')
    .action(async (name: string, vms: string[], o: O) => {
      const g = vms.length ? await groupRemove(homeOf(o), name, vms) : await deleteGroup(homeOf(o), name);
      printResult(o.json, g, () => (vms.length ? text(g) : `deleted group ${g.name}`));
    });
  group.command('list').description('list groups')
    .option(HOME_FLAGS, HOME_HELP).option('--json', 'print as JSON')
    .action(async (o: O) => {
      const gs = await listGroups(homeOf(o));
      printResult(o.json, gs, () => gs.map((g) => `${g.name}: ${g.names.join(', ') || '(empty)'}`).join('\n') || 'no groups');
    });
  group.command('show <group>').description('show a group and its machines')
    .option(HOME_FLAGS, HOME_HELP).option('--json', 'print as JSON')
    .action(async (name: string, o: O) => {
      const g = (await listGroups(homeOf(o))).find((x) => x.name === name);
      if (!g) {
        const { VmNotFoundError } = await import('../../vm/errors.js');
        throw new VmNotFoundError('group', name, 'run `tidemark group list`');
      }
      printResult(o.json, g, () => `${g.name}: ${g.names.join(', ') || '(empty)'}`);
    });
}
