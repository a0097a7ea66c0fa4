/**
 * The host inventory: every machine, group, checkpoint and reference point of one data directory
 * (`--home`, TIDEMARK_HOME, default ~/.local/share/tidemark), in one JSON file `<home>/inventory.json`.
 *
 * How this works: every command runs `Inventory.transact(home, fn)`: take an exclusive flock on
 * `<home>/inventory.lock` (waiting: concurrent CLI processes queue; the kernel drops the lock when a
 * holder dies, so it is never stale), read and validate inventory.json, run `fn` on the state, and if
 * `fn` changed it write the file atomically (`inventory.json.tmp`, fsync, rename, fsync dir). Long jobs
 * (exports) do not hold the lock while copying: they record a checkpoint with a `holder` and commit.
 * Transactions must not nest (the second would wait forever on the first).
 */
import { mkdir, open, readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { flock } from '../native/native.js';
import { atomicWriteFile } from '../util/atomicWriteFile.js';
import { CorruptError } from '../errors.js';
import { validateConfig, type MachineConfig } from './MachineConfig.js';
import { ConfigInvalidError } from './errors.js';

export const INVENTORY_FORMAT = 'tidemark-inventory';
export const INVENTORY_VERSION = 1;

export type CheckpointType = 'standard' | 'production' | 'backup';

/** Who holds a backup checkpoint while an export reads it. */
export interface Holder {
  pid: number;
  command: string;
  /** ISO time the hold started. */
  since: string;
}

export interface CheckpointDisk {
  slot: number;
  /** The frozen image (the disk the machine used before the checkpoint). */
  parent: string;
  /** The differencing disk (.avhdx) created over it; the machine writes here after the checkpoint. */
  child: string;
}

export interface RefpointDisk {
  slot: number;
  /** The RCT ID sealed on the base disk just before the fork. */
  rctId: string;
  /** The base (tracked) disk. */
  path: string;
  /** Virtual size at the reference point. */
  size: number;
  /** The exported file of this disk (absolute), parent of the next differential. */
  exportFile: string;
}

/** What remains of a backup checkpoint after an export read it: dateless, ordered by `seq`. */
export interface RefpointRecord {
  id: string;
  seq: number;
  machineId: string;
  configHash: string;
  exportDir: string;
  disks: RefpointDisk[];
  /**
   * Set when a repository backup (`tidemark backup <vm> --repo R`) made this reference point instead of
   * an export: the repository (its config id names the chain; location for people) and the snapshot
   * holding the disks at these RCT IDs. `exportDir` is then the repository location and each disk's
   * `exportFile` is empty (no export file: an export `--since` it falls back to full).
   */
  repo?: { id: string; location: string; snapshot: string };
}

export interface CheckpointRecord {
  id: string;
  name: string;
  type: CheckpointType;
  createdAt: string;
  /** The configuration at the checkpoint (disk paths = the frozen images). */
  config: MachineConfig;
  disks: CheckpointDisk[];
  /** Backup checkpoints: the process reading it. */
  holder?: Holder;
  /** Backup checkpoints: RCT IDs sealed before the fork, per slot. */
  rctIds?: Array<{ slot: number; rctId: string }>;
  /** Backup checkpoints: set once the export is complete; becomes a reference point on merge. */
  refpoint?: RefpointRecord;
  /**
   * How consistent the frozen disks are (src/checkpoint/quiesce.ts): `application` (guest quiesced, or
   * the machine was off), `crash` (running, not quiesced). Absent on records made before it existed.
   */
  consistency?: 'application' | 'crash';
  /** How the guest was quiesced: `guest-agent`, `hooks`, `none`. */
  quiesce?: 'guest-agent' | 'hooks' | 'none';
}

/** A running machine: the `tidemark vm run` process serving its disks and supervising QEMU. */
export interface Runtime {
  /** The runner (supervisor) process. */
  pid: number;
  /** QEMU, once started (the machine is `running` from then on). */
  qemuPid?: number;
  since: string;
  /** NBD unix socket serving the disks, and the serial console log. */
  socket: string;
  console: string;
}

export interface MachineRecord {
  id: string;
  name: string;
  /** The machine's folder (disks created by Tidemark live here). */
  dir: string;
  config: MachineConfig;
  /** Oldest first; each one's disks' children are the next one's parents. */
  checkpoints: CheckpointRecord[];
  /** Oldest first. */
  refpoints: RefpointRecord[];
  nextRefSeq: number;
  runtime?: Runtime;
}

export interface GroupRecord {
  name: string;
  /** Machine IDs. */
  members: string[];
}

export interface InventoryState {
  format: typeof INVENTORY_FORMAT;
  version: typeof INVENTORY_VERSION;
  machines: MachineRecord[];
  groups: GroupRecord[];
}

/** The data directory: explicit, else TIDEMARK_HOME, else ~/.local/share/tidemark. */
export function resolveHome(home?: string): string {
  return resolve(home ?? process.env.TIDEMARK_HOME ?? join(homedir(), '.local', 'share', 'tidemark'));
}

export const inventoryPath = (home: string) => join(home, 'inventory.json');

function emptyState(): InventoryState {
  return { format: INVENTORY_FORMAT, version: INVENTORY_VERSION, machines: [], groups: [] };
}

function parseState(text: string, file: string): InventoryState {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (err) {
    throw new CorruptError(file, 'inventory', `not valid JSON (${(err as Error).message}); restore it from a copy or move it away to start empty`);
  }
  const s = v as InventoryState;
  if (!s || s.format !== INVENTORY_FORMAT || s.version !== INVENTORY_VERSION || !Array.isArray(s.machines) || !Array.isArray(s.groups)) {
    throw new CorruptError(file, 'inventory', `not a version ${INVENTORY_VERSION} Tidemark inventory`);
  }
  for (const m of s.machines) {
    if (typeof m.id !== 'string' || typeof m.name !== 'string' || !Array.isArray(m.checkpoints) || !Array.isArray(m.refpoints)) {
      throw new CorruptError(file, 'inventory', `machine entry ${JSON.stringify(m.id)} is malformed`);
    }
    try {
      m.config = validateConfig(m.config, `${file}: machine ${m.name}`);
    } catch (err) {
      if (err instanceof ConfigInvalidError) throw err;
      throw err;
    }
  }
  return s;
}

export class Inventory {
  /**
   * Run `fn` on the inventory under the exclusive inventory lock; write it back atomically when `fn`
   * returns with `state` changed. Throws CorruptError for an unreadable inventory.
   */
  static async transact<T>(homeDir: string, fn: (state: InventoryState) => Promise<T> | T): Promise<T> {
    const home = resolveHome(homeDir);
    await mkdir(home, { recursive: true });
    const lock = await open(join(home, 'inventory.lock'), 'a+', 0o644);
    try {
      await flock(lock.fd, 'exclusive', true);
      const file = inventoryPath(home);
      let before = '';
      let state: InventoryState;
      try {
        before = await readFile(file, 'utf8');
        state = parseState(before, file);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
        state = emptyState();
        before = '';
      }
      const result = await fn(state);
      const after = JSON.stringify(state, null, 2) + '\n';
      if (after !== before && !(before === '' && state.machines.length === 0 && state.groups.length === 0)) {
        await atomicWriteFile(file, after);
      }
      return result;
    } finally {
      await lock.close(); // closing the file drops the flock
    }
  }
}
