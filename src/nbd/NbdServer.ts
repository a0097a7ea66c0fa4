/**
 * Tidemark's NBD server: serves BlockDevices as named exports over TCP or a unix socket, optionally with
 * TLS (STARTTLS). Each accepted socket becomes an NbdConnection; all connections to an export share its one
 * BlockDevice, which is what makes CAN_MULTI_CONN and cross-connection flush semantics hold.
 *
 * The server does not own the devices: close() flushes them, the caller closes them.
 */
import { unlink } from 'node:fs/promises';
import * as net from 'node:net';
import * as tls from 'node:tls';
import type { BlockDevice } from '../blockdev/BlockDevice.js';
import type { ChangeSource } from './ChangeSource.js';
import { BufferPool } from './BufferPool.js';
import { DataWindowCache } from './DataWindowCache.js';
import { NbdConfigError } from './errors.js';
import type { HandshakeExport, TlsMode } from './Handshake.js';
import { NbdConnection, type ServedExport } from './NbdConnection.js';
import {
  MAX_PAYLOAD,
  MAX_STRING,
  TFLAG_CAN_MULTI_CONN,
  TFLAG_HAS_FLAGS,
  TFLAG_READ_ONLY,
  TFLAG_SEND_FAST_ZERO,
  TFLAG_SEND_FLUSH,
  TFLAG_SEND_FUA,
  TFLAG_SEND_TRIM,
  TFLAG_SEND_WRITE_ZEROES,
} from './protocol.js';

export interface ExportSpec {
  /** Export name clients ask for ('' is allowed; an empty request selects the first export). */
  name: string;
  description?: string;
  device: BlockDevice;
  readOnly?: boolean;
  /** Answers `tidemark:changes:<ID>` block-status queries. */
  changes?: ChangeSource;
}

export interface NbdTlsOptions {
  /** PEM certificate chain and private key. */
  cert: string | Buffer;
  key: string | Buffer;
  /** 'allowed': clients may upgrade; 'required': every option but STARTTLS/ABORT is refused until they do. */
  mode: Exclude<TlsMode, 'off'>;
}

export interface NbdServerOptions {
  exports: ExportSpec[];
  tls?: NbdTlsOptions;
  /** Default 30 s. */
  handshakeTimeoutMs?: number;
  /** Per-connection cap on in-flight request bytes plus queued reply bytes. Default 64 MiB. */
  maxInflightBytes?: number;
  /** Diagnostics (client violations, device errors). Default: discarded. */
  log?: (line: string) => void;
}

export type ListenTarget = { host?: string; port: number } | { path: string };

export class NbdServer {
  private readonly served = new Map<string, ServedExport>();
  private readonly hsExports: HandshakeExport[] = [];
  private readonly secureContext: tls.SecureContext | undefined;
  private readonly tlsMode: TlsMode;
  private readonly connections = new Set<NbdConnection>();
  private readonly pool = new BufferPool();
  private server: net.Server | null = null;
  private closing: Promise<void> | null = null;

  constructor(private readonly opts: NbdServerOptions) {
    if (opts.exports.length === 0) throw new NbdConfigError('no exports given');
    for (const e of opts.exports) {
      if (this.served.has(e.name)) throw new NbdConfigError(`export name "${e.name}" is used twice; give each disk its own name`, { name: e.name });
      if (Buffer.byteLength(e.name) > MAX_STRING || e.name.includes('\0')) throw new NbdConfigError(`export name "${e.name.slice(0, 64)}..." is not a valid NBD string`);
      const readOnly = !!e.readOnly || e.device.capabilities.readOnly;
      this.served.set(e.name, { name: e.name, device: e.device, readOnly, changes: e.changes, dataCache: new DataWindowCache() });
      this.hsExports.push({
        name: e.name,
        description: e.description,
        size: e.device.size,
        flags: transmissionFlags(readOnly),
        blockSizes: { minimum: 1, preferred: Math.max(4096, e.device.physicalSectorSize), maximum: MAX_PAYLOAD },
      });
    }
    if (opts.tls) {
      try {
        this.secureContext = tls.createSecureContext({ cert: opts.tls.cert, key: opts.tls.key, minVersion: 'TLSv1.2' });
      } catch (err) {
        throw new NbdConfigError(`TLS certificate/key rejected: ${(err as Error).message}; check the PEM files`);
      }
      this.tlsMode = opts.tls.mode;
    } else {
      this.tlsMode = 'off';
    }
  }

  /**
   * Start listening; resolves with the bound address (port 0 picks a free port). A unix socket path left
   * behind by a server that died (nothing accepts on it) is replaced; a live one is InUse.
   * Throws NbdConfigError (address in use, permission, bad host).
   */
  async listen(target: ListenTarget): Promise<net.AddressInfo | string> {
    if (this.server) throw new NbdConfigError('listen() called twice');
    const server = net.createServer({ noDelay: true }, (s) => this.accept(s));
    this.server = server;
    const where = 'path' in target ? target.path : `${target.host ?? '127.0.0.1'}:${target.port}`;
    const attempt = (): Promise<void> =>
      new Promise<void>((resolve, reject) => {
        const onErr = (err: NodeJS.ErrnoException): void => reject(err);
        server.once('error', onErr);
        const done = (): void => {
          server.removeListener('error', onErr);
          resolve();
        };
        if ('path' in target) server.listen(target.path, done);
        else server.listen(target.port, target.host ?? '127.0.0.1', done);
      });
    try {
      await attempt().catch(async (err: NodeJS.ErrnoException) => {
        if (err.code !== 'EADDRINUSE' || !('path' in target) || (await isLiveSocket(target.path))) throw err;
        await unlink(target.path);
        await attempt();
      });
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      throw err.code === 'EADDRINUSE'
        ? new NbdConfigError(`${where} is already in use; pick another address or stop the other server`, { where })
        : new NbdConfigError(`cannot listen on ${where}: ${err.message}`, { where });
    }
    server.on('error', (err) => this.log(`nbd: server error: ${err.message}`));
    return this.address()!;
  }

  /** The bound address (TCP) or socket path; null before listen(). */
  address(): net.AddressInfo | string | null {
    return this.server?.address() ?? null;
  }

  /** Number of open client connections. */
  get connectionCount(): number {
    return this.connections.size;
  }

  private accept(socket: net.Socket): void {
    if (this.closing) {
      socket.destroy();
      return;
    }
    const conn = new NbdConnection(socket, {
      handshake: { exports: this.hsExports, tls: this.tlsMode },
      exports: this.served,
      secureContext: this.secureContext,
      handshakeTimeoutMs: this.opts.handshakeTimeoutMs ?? 30_000,
      maxInflightBytes: this.opts.maxInflightBytes ?? 64 * 1024 * 1024,
      pool: this.pool,
      log: (l) => this.log(l),
    });
    this.connections.add(conn);
    void conn.closed.then(() => this.connections.delete(conn));
  }

  private log(line: string): void {
    this.opts.log?.(line);
  }

  /**
   * Stop accepting, let in-flight requests finish and be answered, close every connection, then flush every
   * export's device. Idempotent. Devices stay open (the caller owns them).
   */
  close(): Promise<void> {
    if (!this.closing) this.closing = this.doClose();
    return this.closing;
  }

  private async doClose(): Promise<void> {
    const server = this.server;
    const stopped = server ? new Promise<void>((r) => server.close(() => r())) : Promise.resolve();
    for (const c of this.connections) c.shutdown();
    await Promise.all([...this.connections].map((c) => c.closed));
    await stopped;
    const errors: unknown[] = [];
    for (const e of this.served.values()) {
      if (e.readOnly) continue;
      await e.device.flush().catch((err: unknown) => errors.push(err));
    }
    if (errors.length > 0) throw errors[0];
  }
}

/** Whether something accepts connections on a unix socket path. */
function isLiveSocket(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(path);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', (err: NodeJS.ErrnoException) => resolve(err.code !== 'ECONNREFUSED' && err.code !== 'ENOENT'));
  });
}

/** Transmission flags for an export (SEND_DF is added by the handshake when structured replies are on). */
export function transmissionFlags(readOnly: boolean): number {
  const base = TFLAG_HAS_FLAGS | TFLAG_SEND_FLUSH | TFLAG_SEND_FUA | TFLAG_CAN_MULTI_CONN;
  return readOnly ? base | TFLAG_READ_ONLY : base | TFLAG_SEND_TRIM | TFLAG_SEND_WRITE_ZEROES | TFLAG_SEND_FAST_ZERO;
}
