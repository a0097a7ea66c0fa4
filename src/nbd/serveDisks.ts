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
import { openDisk } from '../disk/openDisk.js';
import { UsageError } from '../errors.js';
import { startControlServer, type ControlServer } from '../rct/control.js';
import { isTrackingEnabled, openTrackedDisk } from '../rct/openTrackedDisk.js';
import { isTracked, openTracked } from '../rct/trackingLayer.js';
import { NbdServer, type ExportSpec, type ListenTarget, type NbdTlsOptions } from './NbdServer.js';

export interface ServeDisksOptions {
  disks: string[];
  /** Export names, one per disk (default: each file's basename). */
  names?: string[];
  readOnly?: boolean;
  listen: ListenTarget;
  tls?: NbdTlsOptions;
  log?: (line: string) => void;
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
  /** Stop accepting, drain and flush (NbdServer.close), stop control sockets, close disks, release locks. */
  close(): Promise<void>;
}

interface Opened {
  path: string;
  lock: DiskLock;
  device: BlockDevice;
  control?: ControlServer;
}

/** Throws UsageError (bad names), InUseError (disk locked or served elsewhere), open errors, NbdConfigError. */
export async function serveDisks(opts: ServeDisksOptions): Promise<DiskServer> {
  if (opts.disks.length === 0) throw new UsageError('give at least one disk to serve');
  const names = opts.names ?? opts.disks.map((d) => basename(d));
  if (names.length !== opts.disks.length) throw new UsageError(`${names.length} export names for ${opts.disks.length} disks`);
  const dup = names.find((n, i) => names.indexOf(n) !== i);
  if (dup !== undefined) throw new UsageError(`two disks would both be exported as "${dup}"; give disks distinct file names or serve them separately`);

  const opened: Opened[] = [];
  const cleanup = async (): Promise<void> => {
    for (const o of opened.reverse()) {
      await o.control?.close().catch(() => undefined);
      await o.device.close().catch(() => undefined);
      await o.lock.release().catch(() => undefined);
    }
  };
  let server: NbdServer | undefined;
  try {
    const exports: ExportSpec[] = [];
    for (let i = 0; i < opts.disks.length; i++) {
      const path = opts.disks[i]!;
      const lock = await DiskLock.acquire(path, { exclusive: !opts.readOnly, holder: 'tidemark serve' });
      let device: BlockDevice;
      try {
        device = await openServed(path, !!opts.readOnly);
      } catch (err) {
        await lock.release();
        throw err;
      }
      const o: Opened = { path, lock, device };
      opened.push(o);
      if (isTracked(device) && !opts.readOnly) o.control = await startControlServer(path, device);
      exports.push({ name: names[i]!, description: path, device, readOnly: opts.readOnly, changes: isTracked(device) ? device : undefined });
    }
    server = new NbdServer({ exports, tls: opts.tls, log: opts.log });
    const address = await server.listen(opts.listen);
    const disks = exports.map((e, i) => ({
      path: opts.disks[i]!,
      name: e.name,
      size: e.device.size,
      readOnly: !!opts.readOnly || e.device.capabilities.readOnly,
      tracked: !!e.changes,
      uri: nbdUri(address, e.name, !!opts.tls),
    }));
    let closing: Promise<void> | undefined;
    const srv = server;
    return {
      server: srv,
      address,
      disks,
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
