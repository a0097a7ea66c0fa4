import { Command, InvalidArgumentError } from 'commander';
import { createMachine, listMachines, removeMachine, setMachine, showMachine, type DiskSpec, type MachineView } from '../../vm/machines.js';
import { resolveHome } from '../../vm/Inventory.js';
import { runMachine, startMachine, stopMachine, type BootOptions } from '../../vm/runMachine.js';
import { formatSize, parseSize } from '../../util/size.js';
import { setMachineHooks } from '../../vm/MachineHooks.js';
import { printResult } from '../output.js';

/** `--home <dir>`: the data directory (default TIDEMARK_HOME or ~/.local/share/tidemark). */
export const HOME_FLAGS = '--home <dir>';
export const HOME_HELP = 'data directory (default: $TIDEMARK_HOME or ~/.local/share/tidemark)';
export const homeOf = (o: { home?: string }) => resolveHome(o.home);

export const intArg = (v: string) => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError('expected a whole number');
  return n;
};

/** A SIZE creates a new disk; anything else is a path. */
export const diskSpec = (v: string, prev: DiskSpec[] = []): DiskSpec[] => {
  if (/^\d+(\.\d+)?\s*[KMGTP]?(i?B)?$/i.test(v)) return [...prev, { size: parseSize(v) }];
  return [...prev, { path: v }];
};

const memArg = (v: string) => {
  const bytes = /^\d+$/.test(v) ? Number(v) * 2 ** 20 : parseSize(v);
  if (bytes % 2 ** 20) throw new InvalidArgumentError('memory must be a whole number of MiB');
  return bytes / 2 ** 20;
};

export function machineText(m: MachineView): string {
  const lines = [
    `${m.name}  ${m.id}`,
    `  status: ${m.status.state}${m.status.runtime ? ` (runner PID ${m.status.runtime.pid}${m.status.runtime.qemuPid ? `, QEMU PID ${m.status.runtime.qemuPid}` : ''}, since ${m.status.runtime.since}; console ${m.status.runtime.console})` : ''}${m.status.holder ? ` (backup checkpoint ${m.status.holder.checkpoint} held by ${m.status.holder.command}, PID ${m.status.holder.pid}, since ${m.status.holder.since})` : ''}`,
    `  cpus ${m.config.cpus}, memory ${m.config.memoryMiB} MiB, network ${m.config.network.map((n) => `${n.mode} ${n.mac}`).join(', ') || 'none'}`,
    ...m.disks.map((d) => `  disk ${d.slot}: ${d.path} (${d.format}, ${d.size >= 0 ? formatSize(d.size) : 'missing'})`),
  ];
  if (m.checkpoints.length) lines.push(`  checkpoints: ${m.checkpoints.map((c) => `${c.name} (${c.type})`).join(', ')}`);
  if (m.refpoints.length) lines.push(`  reference points: ${m.refpoints.map((r) => `#${r.seq} ${r.id}`).join(', ')}`);
  if (m.config.hooks) lines.push(`  hooks: freeze ${m.config.hooks.freeze ?? 'none'}, thaw ${m.config.hooks.thaw ?? 'none'}`);
  if (m.config.notes) lines.push(`  notes: ${m.config.notes}`);
  return lines.join('\n');
}

/** `tidemark vm create|list|show|set|remove`: machines in the host inventory. */
export function register(program: Command): void {
  const vm = program.command('vm').description('machines: configuration and disks in the host inventory');

  vm.command('create <name>')
    .description('create a machine; --disk SIZE creates a dynamic VHDX with change tracking in its folder, --disk PATH attaches a disk')
    .option('--cpus <n>', 'virtual CPUs', intArg, 1)
    .option('--memory <size>', 'memory, MiB or with a suffix (512, 2G)', memArg, 512)
    .option('--disk <size|path>', 'a disk (repeatable; slots in order)', diskSpec, [] as DiskSpec[])
    .option('--notes <text>', 'free text')
    .option('--no-network', 'no network adapter')
    .option(HOME_FLAGS, HOME_HELP)
    .option('--json', 'print as JSON')
    .action(async (name: string, o: { cpus: number; memory: number; disk: DiskSpec[]; notes?: string; network: boolean; home?: string; json?: boolean }) => {
      const m = await createMachine(homeOf(o), name, { cpus: o.cpus, memoryMiB: o.memory, disks: o.disk, network: o.network, ...(o.notes !== undefined ? { notes: o.notes } : {}) });
      printResult(o.json, m, () => `created machine ${m.name} (${m.id})`);
    });

  vm.command('list')
    .description('list the machines')
    .option(HOME_FLAGS, HOME_HELP)
    .option('--json', 'print as JSON')
    .action(async (o: { home?: string; json?: boolean }) => {
      const ms = await listMachines(homeOf(o));
      printResult(o.json, ms, () => ms.map((m) => `${m.id}  ${m.name}  ${m.status.state}  ${m.config.cpus} cpu  ${m.config.memoryMiB} MiB  ${m.disks.length} disk(s)`).join('\n') || 'no machines');
    });

  vm.command('show <vm>')
    .description('show a machine (by name or ID): status, configuration, disks, checkpoints, reference points')
    .option(HOME_FLAGS, HOME_HELP)
    .option('--json', 'print as JSON')
    .action(async (ref: string, o: { home?: string; json?: boolean }) => {
      const m = await showMachine(homeOf(o), ref);
      printResult(o.json, m, () => machineText(m));
    });

  vm.command('set <vm>')
    .description('change a machine: name, CPUs, memory, notes, freeze/thaw hooks; add, remove or resize disks')
    .option('--name <name>', 'rename')
    .option('--cpus <n>', 'virtual CPUs', intArg)
    .option('--memory <size>', 'memory', memArg)
    .option('--notes <text>', 'free text')
    .option('--add-disk <size|path>', 'add a disk in the first free slot (repeatable)', diskSpec, [] as DiskSpec[])
    .option('--remove-disk <slot>', 'detach the disk in a slot (repeatable; its file stays)', (v: string, p: number[] = []) => [...p, intArg(v)], [] as number[])
    .option('--resize-disk <slot=size>', 'grow a disk (repeatable)', (v: string, p: Array<{ slot: number; size: number }> = []) => {
      const m = /^(\d+)=(.+)$/.exec(v);
      if (!m) throw new InvalidArgumentError('expected SLOT=SIZE, e.g. 0=20G');
      return [...p, { slot: Number(m[1]), size: parseSize(m[2]!) }];
    }, [] as Array<{ slot: number; size: number }>)
    .option('--freeze-hook <path>', "host executable run before a production checkpoint when the guest agent does not answer ('' removes it)")
    .option('--thaw-hook <path>', "host executable run after it, always once the freeze hook succeeded ('' removes it)")
    .option(HOME_FLAGS, HOME_HELP)
    .option('--json', 'print as JSON')
    .action(async (ref: string, o: { name?: string; cpus?: number; memory?: number; notes?: string; addDisk: DiskSpec[]; removeDisk: number[]; resizeDisk: Array<{ slot: number; size: number }>; freezeHook?: string; thawHook?: string; home?: string; json?: boolean }) => {
      const hooksOnly = o.freezeHook !== undefined || o.thawHook !== undefined
        ? [o.name, o.cpus, o.memory, o.notes].every((x) => x === undefined) && !o.addDisk.length && !o.removeDisk.length && !o.resizeDisk.length
        : false;
      let m = hooksOnly ? undefined : await setMachine(homeOf(o), ref, {
        ...(o.name !== undefined ? { name: o.name } : {}),
        ...(o.cpus !== undefined ? { cpus: o.cpus } : {}),
        ...(o.memory !== undefined ? { memoryMiB: o.memory } : {}),
        ...(o.notes !== undefined ? { notes: o.notes } : {}),
        addDisks: o.addDisk, removeSlots: o.removeDisk, resize: o.resizeDisk,
      });
      // Hooks are host-side: they may be set while the machine runs (setMachine refuses that).
      if (o.freezeHook !== undefined || o.thawHook !== undefined) {
        m = await setMachineHooks(homeOf(o), m?.id ?? ref, { ...(o.freezeHook !== undefined ? { freeze: o.freezeHook } : {}), ...(o.thawHook !== undefined ? { thaw: o.thawHook } : {}) });
      }
      printResult(o.json, m!, () => machineText(m!));
    });

  const bootOpts = (c: Command) => c
    .option('--kernel <file>', 'boot this kernel directly (-kernel)')
    .option('--initrd <file>', 'initial ramdisk (-initrd)')
    .option('--append <cmdline>', 'kernel command line (-append)')
    .option('--qemu-arg <arg>', 'extra QEMU argument, as given (repeatable; use --qemu-arg=-fw_cfg style for dashes)', (v: string, p: string[] = []) => [...p, v], [] as string[])
    .option('--kvm', 'use KVM when available (default TCG)');
  type BootO = { kernel?: string; initrd?: string; append?: string; qemuArg: string[]; kvm?: boolean; home?: string; json?: boolean };
  const boot = (o: BootO): BootOptions => ({
    ...(o.kernel ? { kernel: o.kernel } : {}), ...(o.initrd ? { initrd: o.initrd } : {}), ...(o.append ? { append: o.append } : {}),
    qemuArgs: o.qemuArg, kvm: !!o.kvm,
  });

  bootOpts(vm.command('start <vm>'))
    .description("start a machine: its disks are served by Tidemark's NBD server (tracked) to qemu-system-x86_64, in a background runner")
    .option(HOME_FLAGS, HOME_HELP)
    .option('--json', 'print as JSON')
    .action(async (ref: string, o: BootO) => {
      const m = await startMachine(homeOf(o), ref, boot(o));
      printResult(o.json, m, () => machineText(m));
    });

  bootOpts(vm.command('run <vm>', { hidden: true }))
    .description('(internal) the runner started by `vm start`: serve the disks, run QEMU, wait')
    .option(HOME_FLAGS, HOME_HELP)
    .action(async (ref: string, o: BootO) => {
      const code = await runMachine(homeOf(o), ref, boot(o));
      process.exitCode = code === 0 ? 0 : 1;
    });

  vm.command('stop <vm>')
    .description('stop a running machine (QEMU is asked to quit; disks are flushed and released)')
    .option('--force', 'kill QEMU at once')
    .option(HOME_FLAGS, HOME_HELP)
    .option('--json', 'print as JSON')
    .action(async (ref: string, o: { force?: boolean; home?: string; json?: boolean }) => {
      const m = await stopMachine(homeOf(o), ref, { force: !!o.force });
      printResult(o.json, m, () => machineText(m));
    });

  vm.command('remove <vm>')
    .description("remove a machine from the inventory and delete its folder (disks outside it stay)")
    .option('--keep-files', 'keep the machine folder')
    .option(HOME_FLAGS, HOME_HELP)
    .option('--json', 'print as JSON')
    .action(async (ref: string, o: { keepFiles?: boolean; home?: string; json?: boolean }) => {
      const r = await removeMachine(homeOf(o), ref, { keepFiles: !!o.keepFiles });
      printResult(o.json, r, () => `removed machine ${r.name} (${r.id})`);
    });
}
