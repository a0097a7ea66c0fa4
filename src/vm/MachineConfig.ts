/**
 * A machine's configuration (schema version 1) and its hand-written validator.
 *
 * Contract: `validateConfig` accepts exactly the documented shape (docs/design.md (machines section)) and returns
 * a normalised copy; anything else throws ConfigInvalidError listing every problem.
 */
import { createHash } from 'node:crypto';
import { ConfigInvalidError } from './errors.js';

export const CONFIG_SCHEMA = 1;

export interface DiskSlot {
  /** Slot number (0 = first virtio disk); unique within the machine. */
  slot: number;
  /** Absolute path of the disk file the machine uses now (the leaf of its checkpoint chain). */
  path: string;
}

export interface NetworkAdapter {
  /** 'user' (QEMU user networking) or 'none'. */
  mode: 'user' | 'none';
  /** MAC address, xx:xx:xx:xx:xx:xx. */
  mac: string;
}

/**
 * Host executables run around a production checkpoint when the guest agent does not answer
 * (src/checkpoint/quiesce.ts): `freeze` before the fork, `thaw` after it (always, once `freeze`
 * succeeded). Absolute paths; `thaw` requires `freeze`.
 */
export interface MachineHooks {
  freeze?: string;
  thaw?: string;
}

export interface MachineConfig {
  schema: typeof CONFIG_SCHEMA;
  cpus: number;
  /** Memory in MiB. */
  memoryMiB: number;
  disks: DiskSlot[];
  network: NetworkAdapter[];
  notes: string;
  /** Optional (absent when none is configured). */
  hooks?: MachineHooks;
}

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Validate `v` as a MachineConfig; `where` names the source in errors. */
export function validateConfig(v: unknown, where: string): MachineConfig {
  const p: string[] = [];
  if (!isObj(v)) throw new ConfigInvalidError(where, ['not a JSON object']);
  if (v.schema !== CONFIG_SCHEMA) p.push(`schema must be ${CONFIG_SCHEMA} (got ${JSON.stringify(v.schema)}); this Tidemark reads schema ${CONFIG_SCHEMA} only`);
  if (!Number.isInteger(v.cpus) || (v.cpus as number) < 1 || (v.cpus as number) > 256) p.push('cpus must be an integer from 1 to 256');
  if (!Number.isInteger(v.memoryMiB) || (v.memoryMiB as number) < 16 || (v.memoryMiB as number) > 4 * 1024 * 1024) p.push('memoryMiB must be an integer from 16 to 4194304');
  const disks: DiskSlot[] = [];
  if (!Array.isArray(v.disks)) p.push('disks must be an array');
  else {
    const seen = new Set<number>();
    v.disks.forEach((d, i) => {
      if (!isObj(d) || !Number.isInteger(d.slot) || (d.slot as number) < 0 || (d.slot as number) > 63 || typeof d.path !== 'string' || !d.path.startsWith('/')) {
        p.push(`disks[${i}] must be {slot: 0..63, path: absolute path}`);
        return;
      }
      if (seen.has(d.slot as number)) p.push(`disks[${i}]: slot ${d.slot} used twice`);
      seen.add(d.slot as number);
      disks.push({ slot: d.slot as number, path: d.path });
    });
  }
  const network: NetworkAdapter[] = [];
  if (!Array.isArray(v.network)) p.push('network must be an array');
  else {
    v.network.forEach((n, i) => {
      if (!isObj(n) || (n.mode !== 'user' && n.mode !== 'none') || typeof n.mac !== 'string' || !/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/.test(n.mac)) {
        p.push(`network[${i}] must be {mode: "user"|"none", mac: "xx:xx:xx:xx:xx:xx" (lower-case hex)}`);
        return;
      }
      network.push({ mode: n.mode, mac: n.mac });
    });
  }
  if (typeof v.notes !== 'string' || v.notes.length > 64 * 1024) p.push('notes must be a string of at most 65536 characters');
  let hooks: MachineHooks | undefined;
  if (v.hooks !== undefined) {
    const h = v.hooks;
    if (!isObj(h)) p.push('hooks must be an object {freeze?: path, thaw?: path}');
    else {
      hooks = {};
      for (const k of ['freeze', 'thaw'] as const) {
        const path = h[k];
        if (path === undefined) continue;
        if (typeof path !== 'string' || !path.startsWith('/') || path.length > 4096 || path.includes('\0')) p.push(`hooks.${k} must be an absolute path of at most 4096 characters`);
        else hooks[k] = path;
      }
      const unknown = Object.keys(h).filter((k) => k !== 'freeze' && k !== 'thaw');
      if (unknown.length) p.push(`hooks: unknown field(s): ${unknown.join(', ')}`);
      if (h.thaw !== undefined && h.freeze === undefined) p.push('hooks.thaw needs hooks.freeze (a thaw hook alone would never run)');
    }
  }
  const extra = Object.keys(v).filter((k) => !['schema', 'cpus', 'memoryMiB', 'disks', 'network', 'notes', 'hooks'].includes(k));
  if (extra.length) p.push(`unknown field(s): ${extra.join(', ')}`);
  if (p.length) throw new ConfigInvalidError(where, p);
  return {
    schema: CONFIG_SCHEMA, cpus: v.cpus as number, memoryMiB: v.memoryMiB as number, disks: disks.sort((a, b) => a.slot - b.slot), network, notes: v.notes as string,
    ...(hooks && (hooks.freeze !== undefined || hooks.thaw !== undefined) ? { hooks } : {}),
  };
}

/**
 * SHA-256 of the configuration with disk paths replaced by slot numbers (paths change with every
 * checkpoint; the hash names what the guest sees: CPUs, memory, disk slots, network, notes; not the
 * host-side hooks).
 */
export function configHash(c: MachineConfig): string {
  const canon = { schema: c.schema, cpus: c.cpus, memoryMiB: c.memoryMiB, disks: c.disks.map((d) => d.slot), network: c.network, notes: c.notes };
  return createHash('sha256').update(JSON.stringify(canon)).digest('hex');
}
