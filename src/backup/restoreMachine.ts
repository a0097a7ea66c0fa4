/**
 * restoreMachine: a machine snapshot (`tidemark backup <vm>`) back into the inventory as a registered
 * machine: its configuration, name and ID (or a new ID), every disk restored sparse into its folder.
 *
 * Order: conflicts checked (ID, name; the folder must be new or empty) → each disk restored as a dynamic
 * VHDX `<dir>/disk<slot>.vhdx` (restoreSnapshot: temp name, every chunk verified, fsync, no-clobber link)
 * → change tracking enabled on it → [inventory txn] conflicts checked again and the machine committed.
 * A failure (or Ctrl-C) before the commit removes what was restored; nothing half-registered remains.
 * The disks are restored outside the inventory lock (other commands are not blocked meanwhile).
 */
import { randomUUID } from 'node:crypto';
import { mkdir, readdir, rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { UsageError } from '../errors.js';
import { disableTracking, enableTracking } from '../rct/enableTracking.js';
import { findSnapshot } from '../repo/Manifest.js';
import type { Repository } from '../repo/Repository.js';
import type { RestoreProgress } from '../repo/restoreDevice.js';
import { Inventory, resolveHome, type InventoryState, type MachineRecord } from '../vm/Inventory.js';
import { validateConfig } from '../vm/MachineConfig.js';
import { VmExistsError } from '../vm/errors.js';
import { view, type MachineView } from '../vm/machines.js';
import { restoreSnapshot } from './restoreSnapshot.js';

export interface RestoreMachineOptions {
  /** Register under a new random ID (default: the snapshot's machine ID). */
  newId?: boolean;
  /** Register under this name (default: the snapshot's machine name). */
  name?: string;
  /** The machine's folder (default `<home>/machines/<id>`); must be new or empty. */
  to?: string;
  concurrency?: number;
  /** Bytes written so far of disk `slot` (of `size`). */
  onProgress?: (slot: number, p: RestoreProgress, size: number) => void;
  signal?: AbortSignal;
}

export interface RestoreMachineResult {
  snapshot: string;
  machine: MachineView;
  disks: Array<{ slot: number; path: string; size: number; bytesWritten: number }>;
  durationMs: number;
}

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

function conflicts(state: InventoryState, id: string, name: string): void {
  if (state.machines.some((m) => m.id === id)) throw new VmExistsError('machine', id, 'a machine with this ID is already registered; restore with --new-id to register a copy');
  if (state.machines.some((m) => m.name === name)) throw new VmExistsError('machine', name, 'restore with --name <other name>');
}

/**
 * Restore machine snapshot `snapshotRef` (id or unique prefix) of `repo` into the inventory at `home`.
 * Throws UsageError (not a machine snapshot, bad name, non-empty folder), VmExistsError (ID or name
 * taken), ConfigInvalidError (the snapshot's configuration is invalid), and the repository's errors.
 */
export async function restoreMachine(repo: Repository, home: string, snapshotRef: string, opts: RestoreMachineOptions = {}): Promise<RestoreMachineResult> {
  const t0 = Date.now();
  const snap = await findSnapshot(repo, snapshotRef);
  if (!snap.machine) throw new UsageError(`snapshot ${snap.id.slice(0, 12)} is a disk snapshot (${snap.source.name}), not a machine: restore its disk with --to <path>`);
  const id = opts.newId ? randomUUID() : snap.machine.id;
  const name = opts.name ?? snap.machine.name;
  if (!NAME_RE.test(name) || UUID_RE.test(name)) throw new UsageError(`invalid name "${name}": use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit (not a UUID)`);
  const config = validateConfig(structuredClone(snap.machine.config), `snapshot ${snap.id.slice(0, 12)}: machine ${snap.machine.name}`);
  for (const c of config.disks) {
    if (!snap.disks.some((d) => d.slot === c.slot)) throw new UsageError(`snapshot ${snap.id.slice(0, 12)}: the configuration names disk slot ${c.slot} but the snapshot has no disk in that slot`);
  }
  await Inventory.transact(home, (state) => conflicts(state, id, name));

  const dir = resolve(opts.to ?? join(resolveHome(home), 'machines', id));
  const existed = await readdir(dir).then((names) => {
    if (names.length) throw new UsageError(`folder ${dir} is not empty; give a new or empty folder with --to`);
    return true;
  }, (err: NodeJS.ErrnoException) => {
    if (err.code !== 'ENOENT') throw err;
    return false;
  });
  await mkdir(dir, { recursive: true });
  const made: string[] = [];
  try {
    const disks: RestoreMachineResult['disks'] = [];
    for (const d of [...snap.disks].sort((a, b) => a.slot! - b.slot!)) {
      const path = join(dir, `disk${d.slot}.vhdx`);
      made.push(path);
      const r = await restoreSnapshot(repo, snap.id, {
        to: path,
        format: 'vhdx',
        disk: d.name,
        concurrency: opts.concurrency,
        onProgress: opts.onProgress && ((p, size) => opts.onProgress!(d.slot!, p, size)),
        signal: opts.signal,
      });
      await enableTracking(path);
      disks.push({ slot: d.slot!, path, size: r.size, bytesWritten: r.bytesWritten });
    }
    // A disk in the snapshot but not in the configuration (cannot happen for snapshots Tidemark wrote)
    // is restored but not attached.
    for (const c of config.disks) c.path = disks.find((d) => d.slot === c.slot)!.path;
    const machine = await Inventory.transact(home, async (state) => {
      conflicts(state, id, name);
      const m: MachineRecord = { id, name, dir, config: validateConfig(config, `machine ${name}`), checkpoints: [], refpoints: [], nextRefSeq: 1 };
      state.machines.push(m);
      return view(m);
    });
    return { snapshot: snap.id, machine, disks, durationMs: Date.now() - t0 };
  } catch (err) {
    if (existed) {
      for (const p of made) {
        await disableTracking(p).catch(() => undefined);
        await rm(p, { force: true });
      }
    } else await rm(dir, { recursive: true, force: true });
    throw err;
  }
}
