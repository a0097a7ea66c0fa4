import type { Command } from 'commander';

/** Every noun of the CLI. A command module exports `register(program)`. */
export const commands: Array<(program: Command) => void> = [];
