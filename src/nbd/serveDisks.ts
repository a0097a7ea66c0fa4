/**
 * Serve disk files over NBD: lock each disk (one writer per file), open it through change tracking when
 * tracking is enabled, start its RCT control socket so `tidemark rct seal|changes|status` reach this
 * process, and run one NbdServer with a named export per disk. What `tidemark serve` (and anything else
 * that wants to serve disks) calls.
 */
import type { AddressInfo } from 'node:net';
import { basename } from 'node:path';
import type { BlockDevice } from '../blockdev/BlockDevice.js';
import { DiskLock } from '../blockdev/DiskLock.js';
import { SwitchableDevice } from '../blockdev/SwitchableDevice.js';
import { openDisk } from '../disk/openDisk.js';
import { UsageError } from '../errors.js';
import { TrackingNotEnabledError } from '../rct/errors.js';
import { startControlServer, type ControlServer } from '../rct/control.js';
import { isTrackingEnabled, openTrackedDisk } from '../rct/openTrackedDisk.js';
import { isTracked, openTracked } from '../rct/trackingLayer.js';
import type { ChangeSource } from './ChangeSource.js';
import { NbdServer, type ExportSpec, type ListenTarget, type NbdTlsOptions } from './NbdServer.js';

export interface ServeDisksOptions {
  disks: string[];
  /** Export names, one per disk (default: each file's basename). */
  names?: string[];
  readOnly?: boolean;
  listen: ListenTarget;
  tls?: NbdTlsOptions;
  log?: (line: string) => void;
  /** What other processes' InUseError calls this process (default 'tidemark serve'). */
  holder?: string;
}

export interface ServedDisk {
  path: string;
  name: string;
  size: number;
  readOnly: boolean;
  /** Change tracking is on: `tidemark:changes:<ID>` is offered and (writable) the control socket runs. */
  tracked: boolean;
  /** NBD URI a client can use. */
  uri: string;
}

export interface DiskServer {
  readonly server: NbdServer;
  readonly address: AddressInfo | string;
  readonly disks: ServedDisk[];
  /** The disk file each export serves now (export name -> file); changes with `switchFile`. */
  file(name: string): ServedFile;
  /**
   * Replace the file behind export `name` while clients keep going (SwitchableDevice.switch): requests
   * are paused and drained, the current device flushed, then `fn(current)` returns the next file, which
   * the server owns from then on (closed with it). `fn` owns the current file: it closes it (and releases
   * or keeps its lock) as it sees fit. When `fn` throws, the current file stays (fn must leave it usable
   * or reopen it and return it). Throws UsageError for an unknown export.
   */
  switchFile(name: string, fn: (current: ServedFile) => Promise<ServedFile>): Promise<void>;
  /** Pause (queue) the requests of export `name` until `resume(name)`; nests (SwitchableDevice.pause). */
  pause(name: string): Promise<void>;
  resume(name: string): void;
  /** Stop accepting, drain and flush (NbdServer.close), stop control sockets, close disks, release locks. */
  close(): Promise<void>;
}

/** One disk file as served: its DiskLock, its device (tracked when enabled), its RCT control socket. */
export interface ServedFile {
  path: string;
  lock: DiskLock;
  device: BlockDevice;
  control?: ControlServer;
}

type Opened = ServedFile;

/**
 * Lock `path` (exclusive unless read-only; or use the caller's `lock`, which is then never released
 * here on failure), open it as `serveDisks` does (tracked when tracking is enabled) and, when writable
 * and tracked and `control` is not false, start its RCT control socket.
 * Throws InUseError, open errors; nothing this call took stays locked or open on failure.
 */
export async function openServedFile(path: string, opts: { readOnly?: boolean; holder?: string; control?: boolean; lock?: DiskLock } = {}): Promise<ServedFile> {
  const lock = opts.lock ?? (await DiskLock.acquire(path, { exclusive: !opts.readOnly, holder: opts.holder ?? 'tidemark serve' }));
  let device: BlockDevice;
  try {
    device = await openServed(path, !!opts.readOnly);
  } catch (err) {
    if (!opts.lock) await lock.release();
    throw err;
  }
  const f: ServedFile = { path, lock, device };
  if (opts.control !== false && isTracked(device) && !opts.readOnly) {
    try {
      f.control = await startControlServer(path, device);
    } catch (err) {
      await device.close().catch(() => undefined);
      if (!opts.lock) await lock.release();
      throw err;
    }
  }
  return f;
}

/** Stop the control socket, close the device (flushes), release the lock unless `keepLock`. */
export async function closeServedFile(f: ServedFile, opts: { keepLock?: boolean } = {}): Promise<void> {
  try {
    await f.control?.close().catch(() => undefined);
    await f.device.close();
  } finally {
    if (!opts.keepLock) await f.lock.release();
  }
}

/** The export's ChangeSource: the tracker of whatever file is served now (none after a switch to an untracked one). */
function currentChanges(get: () => ServedFile): ChangeSource {
  const tracked = () => {
    const d = get().device;
    return isTracked(d) ? d : undefined;
  };
  return {
    changesSince: (id, offset, length) => {
      const t = tracked();
      return t ? t.changesSince(id, offset, length) : Promise.reject(new TrackingNotEnabledError(get().path));
    },
    hasId: async (id) => (await tracked()?.hasId(id)) ?? false,
    listIds: async () => (await tracked()?.listIds()) ?? [],
  };
}

/** Throws UsageError (bad names), InUseError (disk locked or served elsewhere), open errors, NbdConfigError. */
export async function serveDisks(opts: ServeDisksOptions): Promise<DiskServer> {
  if (opts.disks.length === 0) throw new UsageError('give at least one disk to serve');
  const names = opts.names ?? opts.disks.map((d) => basename(d));
  if (names.length !== opts.disks.length) throw new UsageError(`${names.length} export names for ${opts.disks.length} disks`);
  const dup = names.find((n, i) => names.indexOf(n) !== i);
  if (dup !== undefined) throw new UsageError(`two disks would both be exported as "${dup}"; give disks distinct file names or serve them separately`);

  const opened: Opened[] = [];
  const switches: SwitchableDevice[] = [];
  const cleanup = async (): Promise<void> => {
    for (let i = opened.length - 1; i >= 0; i--) {
      const o = opened[i]!;
      await o.control?.close().catch(() => undefined);
      await (switches[i] ?? o.device).close().catch(() => undefined); // closes the current device
      await o.lock.release().catch(() => undefined);
    }
  };
  let server: NbdServer | undefined;
  try {
    const exports: ExportSpec[] = [];
    for (let i = 0; i < opts.disks.length; i++) {
      const path = opts.disks[i]!;
      const o = await openServedFile(path, { readOnly: opts.readOnly, holder: opts.holder });
      opened.push(o);
      const device = new SwitchableDevice(o.device, `export ${names[i]}`);
      switches.push(device);
      const changes = isTracked(o.device) ? currentChanges(() => opened[i]!) : undefined;
      exports.push({ name: names[i]!, description: path, device, readOnly: opts.readOnly, changes });
    }
    server = new NbdServer({ exports, tls: opts.tls, log: opts.log });
    const address = await server.listen(opts.listen);
    const disks = exports.map((e, i) => ({
      path: opts.disks[i]!,
      name: e.name,
      size: e.device.size,
      readOnly: !!opts.readOnly || opened[i]!.device.capabilities.readOnly,
      tracked: !!e.changes,
      uri: nbdUri(address, e.name, !!opts.tls),
    }));
    let closing: Promise<void> | undefined;
    const srv = server;
    const index = (name: string): number => {
      const i = names.indexOf(name);
      if (i < 0) throw new UsageError(`no export named "${name}" (exports: ${names.join(', ')})`);
      return i;
    };
    return {
      server: srv,
      address,
      disks,
      file: (name) => opened[index(name)]!,
      switchFile(name, fn) {
        const i = index(name);
        return switches[i]!.switch(async () => {
          const next = await fn(opened[i]!);
          opened[i] = next;
          return next.device;
        });
      },
      pause: (name) => switches[index(name)]!.pause(),
      resume: (name) => switches[index(name)]!.resume(),
      close() {
        closing ??= (async () => {
          try {
            await srv.close();
          } finally {
            await cleanup();
          }
        })();
        return closing;
      },
    };
  } catch (err) {
    await server?.close().catch(() => undefined);
    await cleanup();
    throw err;
  }
}

/** Writable: every write tracked when tracking is on. Read-only: the tracker only answers queries. */
async function openServed(path: string, readOnly: boolean): Promise<BlockDevice> {
  if (!readOnly) return openTrackedDisk(path);
  const dev = await openDisk(path, { readOnly: true });
  if (!(await isTrackingEnabled(path))) return dev;
  try {
    return await openTracked(dev, path);
  } catch (err) {
    await dev.close().catch(() => undefined);
    throw err;
  }
}

/** nbd://host:port/name, nbds:// with TLS, nbd+unix:///name?socket=path for unix sockets. */
export function nbdUri(address: AddressInfo | string, name: string, tls = false): string {
  const scheme = tls ? 'nbds' : 'nbd';
  const n = encodeURIComponent(name);
  if (typeof address === 'string') return `${scheme}+unix:///${n}?socket=${encodeURIComponent(address).replace(/%2F/g, '/')}`;
  const host = address.family === 'IPv6' || address.address.includes(':') ? `[${address.address}]` : address.address;
  return `${scheme}://${host}:${address.port}/${n}`;
}
