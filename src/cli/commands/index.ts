import type { Command } from 'commander';
import { register as disk } from './disk.js';
import { register as rct } from './rct.js';
import { register as repo } from './repo.js';
import { register as serve } from './serve.js';

/** Every noun of the CLI. A command module exports `register(program)`. */
export const commands: Array<(program: Command) => void> = [disk, rct, repo, serve];
