/**
 * Machine and group operations on the inventory (the library behind `tidemark vm` and `tidemark group`).
 * Every function takes the data directory and runs one inventory transaction; each first recovers
 * leftover backup checkpoints of the machines it touches (see src/checkpoint/recover.ts).
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdir, rm, stat } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';
import { UsageError } from '../errors.js';
import { createDisk } from '../disk/createDisk.js';
import { diskInfo } from '../disk/diskInfo.js';
import { resizeDisk } from '../disk/resizeDisk.js';
import { detectDiskFormat } from '../disk/detectDiskFormat.js';
import { enableTracking } from '../rct/enableTracking.js';
import { Inventory, resolveHome, type GroupRecord, type Holder, type InventoryState, type MachineRecord } from './Inventory.js';
import { CONFIG_SCHEMA, validateConfig, type MachineConfig } from './MachineConfig.js';
import { VmBusyError, VmExistsError, VmNotFoundError } from './errors.js';
import { recoverMachine, liveHolder, runnerHolder } from '../checkpoint/recover.js';

/** `--disk` argument: a size in bytes (create a dynamic VHDX with RCT) or an existing disk path. */
export type DiskSpec = { size: number } | { path: string };

export interface CreateMachineOptions {
  cpus?: number;
  memoryMiB?: number;
  disks?: DiskSpec[];
  notes?: string;
  /** Add one user-mode network adapter with a random MAC (default true). */
  network?: boolean;
}

export interface DiskView {
  slot: number;
  path: string;
  size: number;
  format: string;
}

export interface MachineView {
  id: string;
  name: string;
  dir: string;
  status: { state: 'off' | 'held' | 'starting' | 'running'; holder?: Holder & { checkpoint: string }; runtime?: { pid: number; qemuPid?: number; since: string; console: string } };
  config: MachineConfig;
  disks: DiskView[];
  checkpoints: Array<{ id: string; name: string; type: string; createdAt: string }>;
  refpoints: Array<{ id: string; seq: number }>;
}

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Find a machine by ID, unique ID prefix (>= 8 chars) or name. Throws VmNotFoundError. */
export function findMachine(state: InventoryState, ref: string): MachineRecord {
  const m = state.machines.find((x) => x.id === ref.toLowerCase())
    ?? state.machines.find((x) => x.name === ref)
    ?? (ref.length >= 8 ? onlyOne(state.machines.filter((x) => x.id.startsWith(ref.toLowerCase()))) : undefined);
  if (!m) throw new VmNotFoundError('machine', ref, 'run `tidemark vm list` to see the machines');
  return m;
}

function onlyOne<T>(xs: T[]): T | undefined {
  return xs.length === 1 ? xs[0] : undefined;
}

export function findGroup(state: InventoryState, name: string): GroupRecord {
  const g = state.groups.find((x) => x.name === name);
  if (!g) throw new VmNotFoundError('group', name, 'run `tidemark group list` to see the groups');
  return g;
}

/** Machines named by `ref`: a machine, else a group's members. */
export function resolveTargets(state: InventoryState, ref: string): MachineRecord[] {
  try {
    return [findMachine(state, ref)];
  } catch (err) {
    const g = state.groups.find((x) => x.name === ref);
    if (!g) throw err;
    return g.members.map((id) => findMachine(state, id));
  }
}

function checkName(name: string): void {
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(name) || UUID_RE.test(name)) {
    throw new UsageError(`invalid name "${name}": use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit (not a UUID)`);
  }
}

function randomMac(): string {
  const b = randomBytes(3);
  return ['52', '54', '00', ...[...b].map((x) => x.toString(16).padStart(2, '0'))].join(':');
}

async function attachDisk(dir: string, slot: number, spec: DiskSpec): Promise<string> {
  if ('size' in spec) {
    let path = join(dir, `disk${slot}.vhdx`);
    if (await stat(path).then(() => true, () => false)) path = join(dir, `disk${slot}-${randomBytes(4).toString('hex')}.vhdx`);
    await createDisk(path, { size: spec.size });
    await enableTracking(path);
    return path;
  }
  const path = resolve(spec.path);
  await stat(path).catch(() => {
    throw new VmNotFoundError('machine', path, 'the disk file does not exist (give a size like 10G to create one)');
  });
  if ((await detectDiskFormat(path)) === 'vhdx') await enableTracking(path);
  return path;
}

/** Create a machine (new UUID) with its folder `<home>/machines/<id>`; disks given by size are created there. */
export async function createMachine(home: string, name: string, opts: CreateMachineOptions = {}): Promise<MachineView> {
  checkName(name);
  const id = randomUUID();
  const dir = join(resolveHome(home), 'machines', id);
  return Inventory.transact(home, async (state) => {
    if (state.machines.some((m) => m.name === name)) throw new VmExistsError('machine', name, 'choose another name');
    await mkdir(dir, { recursive: true });
    try {
      const disks = [];
      for (const [slot, spec] of (opts.disks ?? []).entries()) disks.push({ slot, path: await attachDisk(dir, slot, spec) });
      const config = validateConfig({
        schema: CONFIG_SCHEMA,
        cpus: opts.cpus ?? 1,
        memoryMiB: opts.memoryMiB ?? 512,
        disks,
        network: opts.network === false ? [] : [{ mode: 'user', mac: randomMac() }],
        notes: opts.notes ?? '',
      }, `machine ${name}`);
      const m: MachineRecord = { id, name, dir, config, checkpoints: [], refpoints: [], nextRefSeq: 1 };
      state.machines.push(m);
      return view(m);
    } catch (err) {
      await rm(dir, { recursive: true, force: true });
      throw err;
    }
  });
}

export async function listMachines(home: string): Promise<MachineView[]> {
  return Inventory.transact(home, async (state) => {
    const out = [];
    for (const m of state.machines) {
      await recoverMachine(m);
      out.push(await view(m));
    }
    return out;
  });
}

export async function showMachine(home: string, ref: string): Promise<MachineView> {
  return Inventory.transact(home, async (state) => {
    const m = findMachine(state, ref);
    await recoverMachine(m);
    return view(m);
  });
}

export interface SetMachineOptions {
  name?: string;
  cpus?: number;
  memoryMiB?: number;
  notes?: string;
  addDisks?: DiskSpec[];
  removeSlots?: number[];
  /** Grow/shrink a disk: only without checkpoints. */
  resize?: Array<{ slot: number; size: number }>;
}

/** Change a machine's configuration. Refused while a live export holds it (VmBusyError). */
export async function setMachine(home: string, ref: string, o: SetMachineOptions): Promise<MachineView> {
  return Inventory.transact(home, async (state) => {
    const m = findMachine(state, ref);
    await recoverMachine(m);
    const h = liveHolder(m) ?? runnerHolder(m);
    if (h) throw new VmBusyError(m.name, `${h.command} (PID ${h.pid}) since ${h.since}`);
    const next: MachineConfig = structuredClone(m.config);
    if (o.name !== undefined && o.name !== m.name) {
      checkName(o.name);
      if (state.machines.some((x) => x.name === o.name)) throw new VmExistsError('machine', o.name, 'choose another name');
      m.name = o.name;
    }
    if (o.cpus !== undefined) next.cpus = o.cpus;
    if (o.memoryMiB !== undefined) next.memoryMiB = o.memoryMiB;
    if (o.notes !== undefined) next.notes = o.notes;
    for (const slot of o.removeSlots ?? []) {
      if (!next.disks.some((d) => d.slot === slot)) throw new UsageError(`machine ${m.name} has no disk in slot ${slot}`);
      if (m.checkpoints.length) throw new UsageError(`machine ${m.name} has checkpoints; remove them before removing a disk`);
      next.disks = next.disks.filter((d) => d.slot !== slot);
    }
    for (const r of o.resize ?? []) {
      const d = next.disks.find((x) => x.slot === r.slot);
      if (!d) throw new UsageError(`machine ${m.name} has no disk in slot ${r.slot}`);
      if (m.checkpoints.length) throw new UsageError(`machine ${m.name} has checkpoints; remove them before resizing a disk`);
      await resizeDisk(d.path, r.size);
    }
    for (const spec of o.addDisks ?? []) {
      let slot = 0;
      while (next.disks.some((d) => d.slot === slot)) slot++;
      if (m.checkpoints.length) throw new UsageError(`machine ${m.name} has checkpoints; remove them before adding a disk`);
      next.disks.push({ slot, path: await attachDisk(m.dir, slot, spec) });
    }
    m.config = validateConfig(next, `machine ${m.name}`);
    return view(m);
  });
}

/** Remove a machine from the inventory and delete its folder (disks outside it are left alone). */
export async function removeMachine(home: string, ref: string, opts: { keepFiles?: boolean } = {}): Promise<{ id: string; name: string }> {
  return Inventory.transact(home, async (state) => {
    const m = findMachine(state, ref);
    await recoverMachine(m);
    const h = liveHolder(m) ?? runnerHolder(m);
    if (h) throw new VmBusyError(m.name, `${h.command} (PID ${h.pid}) since ${h.since}`);
    state.machines = state.machines.filter((x) => x !== m);
    for (const g of state.groups) g.members = g.members.filter((id) => id !== m.id);
    if (!opts.keepFiles && basename(resolve(m.dir, '..')) === 'machines') await rm(m.dir, { recursive: true, force: true });
    return { id: m.id, name: m.name };
  });
}

export async function view(m: MachineRecord): Promise<MachineView> {
  const disks: DiskView[] = [];
  for (const d of m.config.disks) {
    const info = await diskInfo(d.path).catch(() => undefined);
    disks.push({ slot: d.slot, path: d.path, size: info?.size ?? -1, format: info ? info.format : 'missing' });
  }
  // Running (the runner lives) and/or held (a live job reads a backup checkpoint, also of a running machine).
  const h = liveHolder(m);
  const holding = m.checkpoints.find((c) => c.holder && c.holder === h);
  const held = h && holding ? { holder: { ...h, checkpoint: holding.id } } : {};
  const rt = runnerHolder(m) && m.runtime;
  return {
    id: m.id,
    name: m.name,
    dir: m.dir,
    status: rt
      ? { state: rt.qemuPid ? 'running' : 'starting', runtime: { pid: rt.pid, ...(rt.qemuPid ? { qemuPid: rt.qemuPid } : {}), since: rt.since, console: rt.console }, ...held }
      : h && holding ? { state: 'held', ...held } : { state: 'off' },
    config: m.config,
    disks,
    checkpoints: m.checkpoints.map((c) => ({ id: c.id, name: c.name, type: c.type, createdAt: c.createdAt })),
    refpoints: m.refpoints.map((r) => ({ id: r.id, seq: r.seq })),
  };
}

// ------------------------------------------------------------------ groups

export async function createGroup(home: string, name: string, members: string[] = []): Promise<GroupRecord> {
  checkName(name);
  return Inventory.transact(home, (state) => {
    if (state.groups.some((g) => g.name === name)) throw new VmExistsError('group', name, 'choose another name');
    if (state.machines.some((m) => m.name === name)) throw new VmExistsError('machine', name, 'a group cannot share a name with a machine');
    const g: GroupRecord = { name, members: [...new Set(members.map((r) => findMachine(state, r).id))] };
    state.groups.push(g);
    return structuredClone(g);
  });
}

export async function groupAdd(home: string, name: string, machines: string[]): Promise<GroupRecord> {
  return Inventory.transact(home, (state) => {
    const g = findGroup(state, name);
    for (const r of machines) {
      const id = findMachine(state, r).id;
      if (!g.members.includes(id)) g.members.push(id);
    }
    return structuredClone(g);
  });
}

export async function groupRemove(home: string, name: string, machines: string[]): Promise<GroupRecord> {
  return Inventory.transact(home, (state) => {
    const g = findGroup(state, name);
    const ids = machines.map((r) => findMachine(state, r).id);
    g.members = g.members.filter((id) => !ids.includes(id));
    return structuredClone(g);
  });
}

/** Delete a group (its machines stay). */
export async function deleteGroup(home: string, name: string): Promise<GroupRecord> {
  return Inventory.transact(home, (state) => {
    const g = findGroup(state, name);
    state.groups = state.groups.filter((x) => x !== g);
    return g;
  });
}

export async function listGroups(home: string): Promise<Array<GroupRecord & { names: string[] }>> {
  return Inventory.transact(home, (state) =>
    state.groups.map((g) => ({ ...structuredClone(g), names: g.members.map((id) => state.machines.find((m) => m.id === id)?.name ?? id) })));
}
