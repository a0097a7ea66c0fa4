/**
 * Running machines: `vm start` spawns a detached runner (`tidemark vm run <id>`), which serves the
 * machine's disks with Tidemark's NBD server (through change tracking, with RCT control sockets) on a
 * unix socket in the machine's folder and supervises qemu-system-x86_64 attached to them.
 *
 * How this works: the runner records `runtime {pid, since, socket, console}` (state `starting`), serves
 * the disks (DiskLock: nobody else can write them), spawns QEMU, records `qemuPid` (state `running`),
 * and waits. When QEMU exits (guest power-off) or the runner gets SIGTERM/SIGINT (`vm stop`: QEMU is sent
 * SIGTERM, which makes it flush and quit), the runner closes the NBD server (drain, flush, close disks,
 * release locks) and clears `runtime`. A runner killed outright leaves `runtime` with a dead PID: the
 * next command clears it (the disk locks died with it; the tracking files record an unclean session and
 * RCT widens its answers accordingly). While it runs, the machine can be checkpointed, exported and
 * have checkpoints removed online: the runner listens on `<machine dir>/runner.ctl` (runnerControl.ts)
 * and forks/merges its disks under a running guest (RunnerDisks.ts); it cannot be changed (vm set,
 * checkpoint apply, vm remove: stop it first).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { open, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { TidemarkError, UsageError } from '../errors.js';
import { finishRemoval, liveHolder, pidAlive, recoverMachine, runnerHolder } from '../checkpoint/recover.js';
import { reconcileRunner } from '../checkpoint/runnerLink.js';
import { RunnerDisks, type ForkRequest, type MergeRequest } from './RunnerDisks.js';
import { startRunnerControl, type RunnerConnection } from './runnerControl.js';
import { Inventory } from './Inventory.js';
import { findMachine, view, type MachineView } from './machines.js';
import { VmBusyError } from './errors.js';
import { guestAgentSocket } from './GuestAgent.js';

export interface BootOptions {
  /** Direct kernel boot (no firmware disk boot without them: the guest boots from disk 0 via SeaBIOS). */
  kernel?: string;
  initrd?: string;
  append?: string;
  /** Extra QEMU arguments, passed as given (e.g. `-fw_cfg name=...,file=...`). */
  qemuArgs?: string[];
  /** Use KVM when available (default: TCG only, which works everywhere). */
  kvm?: boolean;
}

const MAIN = fileURLToPath(new URL('../cli/main.js', import.meta.url));

/** The QEMU command line for a machine whose disks are served on `socket` as exports `disk<slot>` (pure). */
export function qemuCommandLine(m: MachineView, socket: string, consoleLog: string, boot: BootOptions): string[] {
  const args = [
    '-nodefaults', '-no-user-config', '-no-reboot', '-name', m.name, '-uuid', m.id,
    '-accel', boot.kvm ? 'kvm' : 'tcg', ...(boot.kvm ? ['-accel', 'tcg'] : []), '-cpu', 'max',
    '-smp', String(m.config.cpus), '-m', String(m.config.memoryMiB),
    '-display', 'none', '-monitor', 'none', '-serial', `file:${consoleLog}`,
  ];
  if (boot.kernel) args.push('-kernel', boot.kernel);
  if (boot.initrd) args.push('-initrd', boot.initrd);
  if (boot.append) args.push('-append', boot.append);
  for (const d of m.config.disks) {
    args.push('-blockdev', JSON.stringify({
      driver: 'raw', 'node-name': `disk${d.slot}`, discard: 'unmap', 'detect-zeroes': 'unmap',
      file: { driver: 'nbd', server: { type: 'unix', path: socket }, export: `disk${d.slot}`, discard: 'unmap' },
    }));
    args.push('-device', `virtio-blk-pci,drive=disk${d.slot},serial=tidemark${d.slot}${d.slot === 0 && !boot.kernel ? ',bootindex=0' : ''}`);
  }
  m.config.network.forEach((n, i) => {
    if (n.mode === 'none') return;
    args.push('-netdev', `user,id=net${i}`, '-device', `virtio-net-pci,netdev=net${i},mac=${n.mac}`);
  });
  // The guest agent channel: a virtio-serial port named org.qemu.guest_agent.0 (where qemu-ga looks)
  // behind a unix socket QEMU listens on without waiting for a client (src/vm/GuestAgent.ts).
  const qga = guestAgentSocket(m.dir).replace(/,/g, ',,');
  args.push('-chardev', `socket,id=qga0,path=${qga},server=on,wait=off`,
    '-device', 'virtio-serial-pci,id=vserial0', '-device', 'virtserialport,bus=vserial0.0,chardev=qga0,name=org.qemu.guest_agent.0');
  args.push(...(boot.qemuArgs ?? []));
  return args;
}

/**
 * The runner's body (`tidemark vm run`): serve, boot, wait, clean up. Resolves with QEMU's exit code
 * once everything is released. Throws VmBusyError (already running or held), UsageError (no disks).
 */
export async function runMachine(home: string, ref: string, boot: BootOptions): Promise<number | null> {
  const m0 = await Inventory.transact(home, async (state) => {
    const m = findMachine(state, ref);
    await recoverMachine(m);
    const h = liveHolder(m) ?? runnerHolder(m);
    if (h) throw new VmBusyError(m.name, `${h.command} (PID ${h.pid}) since ${h.since}`);
    if (!m.config.disks.length) throw new UsageError(`machine ${m.name} has no disks`);
    m.runtime = { pid: process.pid, since: new Date().toISOString(), socket: join(m.dir, 'nbd.sock'), console: join(m.dir, 'console.log') };
    // With checkpoints the guest writes the newest children; the frozen images under them are held shared.
    const ancestors = m.config.disks.map((d) => ({ slot: d.slot, path: d.path, ancestors: m.checkpoints.map((c) => c.disks.find((x) => x.slot === d.slot)?.parent).filter((p): p is string => !!p) }));
    return { view: await view(m), ancestors };
  });
  const id = m0.view.id;
  const socket = join(m0.view.dir, 'nbd.sock');
  const consoleLog = join(m0.view.dir, 'console.log');
  let disks: RunnerDisks | undefined;
  let qemu: ChildProcess | undefined;
  let markReady!: (d: RunnerDisks | undefined) => void;
  const ready = new Promise<RunnerDisks | undefined>((r) => (markReady = r));
  const control = await startRunnerControl(m0.view.dir, async (req, conn) => runnerOp(await ready, req, conn));
  const clear = () => Inventory.transact(home, async (state) => {
    const m = state.machines.find((x) => x.id === id);
    if (m?.runtime?.pid !== process.pid) return;
    delete m.runtime;
    // Our disks are closed: reconcile the journal with the inventory (a CLI that died after a fork or a
    // merge left them apart) and drop it when they agree.
    await reconcileRunner(m, finishRemoval).catch((err) => process.stderr.write(`tidemark: reconciling ${m.name}: ${(err as Error).message}\n`));
  });
  let stopping = false;
  const onSignal = () => {
    stopping = true;
    qemu?.kill('SIGTERM');
    if (!qemu) void clear().finally(() => process.exit(143));
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  try {
    await rm(socket, { force: true });
    await (await open(consoleLog, 'w')).close();
    try {
      disks = await RunnerDisks.serve(m0.view.dir, m0.ancestors, socket);
    } finally {
      markReady(disks);
    }
    const q = spawn('qemu-system-x86_64', qemuCommandLine(m0.view, socket, consoleLog, boot), { stdio: ['ignore', 'ignore', 'pipe'] });
    qemu = q;
    let qerr = '';
    q.stderr!.setEncoding('utf8').on('data', (s: string) => (qerr = (qerr + s).slice(-4000)));
    const exited = new Promise<number | null>((resolve, reject) => {
      q.on('error', (err) => reject(new TidemarkError('E_VM_START', `cannot run qemu-system-x86_64: ${err.message} (is QEMU installed?)`, {})));
      q.on('exit', (code) => resolve(code));
    });
    await new Promise((r) => setTimeout(r, 0));
    if (q.pid !== undefined && !stopping) {
      await Inventory.transact(home, (state) => {
        const m = state.machines.find((x) => x.id === id);
        if (m?.runtime?.pid === process.pid) m.runtime.qemuPid = q.pid;
      });
    }
    const code = await exited;
    if (code !== 0 && !stopping) process.stderr.write(`tidemark: qemu-system-x86_64 exited ${code}: ${qerr.trim()}\n`);
    return code;
  } finally {
    await disks?.close().catch((err) => process.stderr.write(`tidemark: closing the disks: ${(err as Error).message}\n`));
    await rm(socket, { force: true });
    await clear();
    await control.close();
    process.off('SIGTERM', onSignal);
    process.off('SIGINT', onSignal);
  }
}

/** One request on the runner's control socket (see runnerControl.ts). */
async function runnerOp(disks: RunnerDisks | undefined, req: Record<string, unknown>, conn: RunnerConnection & { pauses?: Array<() => void> }): Promise<unknown> {
  if (!disks) throw new TidemarkError('E_RUNNER_STOPPED', 'the machine has stopped (its disks could not be served)', {});
  const slotsOf = (v: unknown): Array<Record<string, unknown>> => {
    if (!Array.isArray(v) || !v.every((x) => x && typeof x === 'object' && Number.isSafeInteger((x as { slot: unknown }).slot))) throw new UsageError('runner request: "slots" must be an array of {slot, ...}');
    return v as Array<Record<string, unknown>>;
  };
  switch (req.op) {
    case 'state':
      return disks.state();
    case 'pause': {
      const resume = await disks.pauseAll();
      (conn.pauses ??= []).push(resume);
      conn.onClose(resume);
      return {};
    }
    case 'resume':
      for (const r of (conn.pauses ?? []).splice(0)) r();
      return {};
    case 'fork':
      slotsOf(req.slots);
      return disks.fork(req as unknown as ForkRequest);
    case 'merge':
      slotsOf(req.slots);
      if (typeof req.checkpointId !== 'string') throw new UsageError('runner request: "checkpointId" must be a string');
      await disks.merge(req as unknown as MergeRequest);
      return {};
    default:
      throw new UsageError(`runner request: unknown op ${JSON.stringify(req.op)}`);
  }
}

/**
 * Start a machine: spawn its runner detached (output in `<machine dir>/runner.log`) and wait until QEMU
 * is up. Throws VmBusyError, or TidemarkError('E_VM_START') with the runner's output when it fails.
 */
export async function startMachine(home: string, ref: string, boot: BootOptions, timeoutMs = 30_000): Promise<MachineView> {
  const m = await Inventory.transact(home, async (state) => {
    const x = findMachine(state, ref);
    await recoverMachine(x);
    const h = liveHolder(x) ?? runnerHolder(x);
    if (h) throw new VmBusyError(x.name, `${h.command} (PID ${h.pid}) since ${h.since}`);
    return { id: x.id, dir: x.dir, name: x.name };
  });
  const logPath = join(m.dir, 'runner.log');
  const log = await open(logPath, 'w');
  const args = [MAIN, 'vm', 'run', m.id, '--home', home];
  if (boot.kernel) args.push('--kernel', boot.kernel);
  if (boot.initrd) args.push('--initrd', boot.initrd);
  if (boot.append) args.push('--append', boot.append);
  if (boot.kvm) args.push('--kvm');
  for (const a of boot.qemuArgs ?? []) args.push(`--qemu-arg=${a}`);
  const child = spawn(process.execPath, args, { detached: true, stdio: ['ignore', log.fd, log.fd] });
  await log.close();
  let exited = false;
  child.on('exit', () => (exited = true));
  child.unref();
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await Inventory.transact(home, (state) => {
      const x = state.machines.find((y) => y.id === m.id);
      return x?.runtime && x.runtime.pid === child.pid ? x.runtime : undefined;
    });
    if (v?.qemuPid) return showRunning(home, m.id);
    // Also done when the guest already powered off (a quick script): the runner exited cleanly.
    if (exited || (!v && child.pid !== undefined && !pidAlive(child.pid))) {
      const out = await readTail(logPath);
      if (child.exitCode === 0) return showRunning(home, m.id);
      throw new TidemarkError('E_VM_START', `machine ${m.name} failed to start: ${out || `runner exited ${child.exitCode}`}`, { log: logPath });
    }
    if (Date.now() > deadline) throw new TidemarkError('E_VM_START', `machine ${m.name} did not start within ${timeoutMs} ms (see ${logPath})`, { log: logPath });
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function showRunning(home: string, id: string): Promise<MachineView> {
  return Inventory.transact(home, (state) => view(findMachine(state, id)));
}

async function readTail(path: string): Promise<string> {
  const { readFile } = await import('node:fs/promises');
  return (await readFile(path, 'utf8').catch(() => '')).trim().split('\n').slice(-10).join('\n');
}

/**
 * Stop a running machine: SIGTERM to its runner (QEMU quits, disks are flushed and released), wait until
 * it has cleaned up; `force` (or a timeout) SIGKILLs QEMU and the runner, and the runtime is cleared.
 * Stopping a machine that is not running is a no-op.
 */
export async function stopMachine(home: string, ref: string, opts: { force?: boolean; timeoutMs?: number } = {}): Promise<MachineView> {
  const rt = await Inventory.transact(home, async (state) => {
    const m = findMachine(state, ref);
    await recoverMachine(m);
    return { id: m.id, runtime: m.runtime };
  });
  if (rt.runtime) {
    const { pid, qemuPid } = rt.runtime;
    if (opts.force) {
      if (qemuPid && pidAlive(qemuPid)) process.kill(qemuPid, 'SIGKILL');
      if (pidAlive(pid)) process.kill(pid, 'SIGKILL');
    } else if (pidAlive(pid)) process.kill(pid, 'SIGTERM');
    const deadline = Date.now() + (opts.timeoutMs ?? 30_000);
    while (pidAlive(pid)) {
      if (Date.now() > deadline) {
        if (qemuPid && pidAlive(qemuPid)) process.kill(qemuPid, 'SIGKILL');
        process.kill(pid, 'SIGKILL');
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  return Inventory.transact(home, async (state) => {
    const m = findMachine(state, rt.id);
    await recoverMachine(m);
    return view(m);
  });
}
