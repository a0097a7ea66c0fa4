import type { Command } from 'commander';
import { register as disk } from './disk.js';
import { register as rct } from './rct.js';
import { register as repo } from './repo.js';
import { register as serve } from './serve.js';
import { register as vm } from './vm.js';
import { register as group } from './group.js';
import { register as checkpoint } from './checkpoint.js';
import { register as refpoint } from './refpoint.js';
import { register as exportCmd } from './export.js';
import { register as importCmd } from './import.js';
import { register as backup } from './backup.js';
import { register as restore } from './restore.js';
import { register as snapshots } from './snapshots.js';
import { register as mount } from './mount.js';

/** Every noun of the CLI. A command module exports `register(program)`. */
export const commands: Array<(program: Command) => void> = [disk, rct, repo, serve, vm, group, checkpoint, refpoint, exportCmd, importCmd, backup, restore, snapshots, mount];
