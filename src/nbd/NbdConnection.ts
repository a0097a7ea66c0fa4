/**
 * One client connection: drives the pure Handshake machine over a socket, upgrades to TLS on STARTTLS, then
 * serves transmission-phase requests against the chosen export's BlockDevice.
 *
 * How this works:
 * - Requests are parsed by RequestParser as bytes arrive and dispatched at once: many run concurrently and
 *   replies go out in completion order (each carries the client's handle).
 * - Memory is bounded per connection: when the bytes of in-flight requests plus unsent replies exceed
 *   `maxInflightBytes`, the socket is paused (TCP back-pressure) until replies drain.
 * - Replies completing in the same tick are batched with cork/uncork (one writev); READ data buffers are
 *   written as they came from the device, never copied.
 * - Client mistakes are answered with NBD errors; only an unsynchronisable stream (bad magic, unskippable
 *   payload) ends the connection. Device errors are never allowed to escape to the process.
 */
import type { Socket } from 'node:net';
import * as tls from 'node:tls';
import type { Duplex } from 'node:stream';
import type { BlockDevice } from '../blockdev/BlockDevice.js';
import { allocationDescriptors, changeDescriptors } from './blockStatus.js';
import type { BufferPool } from './BufferPool.js';
import type { DataWindowCache } from './DataWindowCache.js';
import type { ChangeSource } from './ChangeSource.js';
import { Handshake, type HandshakeAction, type HandshakeConfig, type SelectedContext } from './Handshake.js';
import { resolveMetaContexts } from './metaContexts.js';
import { nbdErrorCode } from './nbdErrorCode.js';
import {
  BASE_ALLOCATION,
  CHANGES_PREFIX,
  CMD_BLOCK_STATUS,
  CMD_DISC,
  CMD_FLAG_DF,
  CMD_FLAG_FAST_ZERO,
  CMD_FLAG_FUA,
  CMD_FLAG_NO_HOLE,
  CMD_FLAG_REQ_ONE,
  CMD_FLUSH,
  CMD_READ,
  CMD_TRIM,
  CMD_WRITE,
  CMD_WRITE_ZEROES,
  MAX_PAYLOAD,
  NBD_EINVAL,
  NBD_EIO,
  NBD_ENOSPC,
  NBD_ENOTSUP,
  NBD_EOVERFLOW,
  NBD_EPERM,
  NBD_ESHUTDOWN,
  REQUEST_HEADER_SIZE,
} from './protocol.js';
import { readIntoCallerBuffers } from './readIntoCallerBuffers.js';
import { RequestParser } from './RequestParser.js';
import {
  encodeBlockStatus,
  encodeErrorChunk,
  encodeNoneChunk,
  encodeOffsetHole,
  encodeSimpleReply,
  OFFSET_DATA_HEADER_SIZE,
  SIMPLE_REPLY_SIZE,
  writeOffsetDataHeader,
  writeSimpleReply,
  type RequestHeader,
} from './transmissionCodec.js';

/** What a connection needs from the server about one export. */
export interface ServedExport {
  name: string;
  device: BlockDevice;
  readOnly: boolean;
  changes?: ChangeSource;
  /** Shared by every connection to the export: all zero/trim go through it. */
  dataCache: DataWindowCache;
}

export interface ConnectionOptions {
  handshake: HandshakeConfig;
  exports: Map<string, ServedExport>;
  secureContext?: tls.SecureContext;
  /** Drop clients that have not finished the handshake in this time (default 30 s). */
  handshakeTimeoutMs: number;
  /** Pause reading when in-flight request bytes plus queued reply bytes exceed this (default 64 MiB). */
  maxInflightBytes: number;
  /** Recycled buffers: READ replies (devices offering `readInto`) and WRITE payloads. */
  pool: BufferPool;
  /** Read plain sockets straight into caller buffers (see readIntoCallerBuffers); default true. */
  directReads?: boolean;
  log: (line: string) => void;
}

/** A device offering BlockDevice.readInto (fills every byte of the target window, zeros included). */
type ReadIntoDevice = BlockDevice & Required<Pick<BlockDevice, 'readInto'>>;
function canReadInto(d: BlockDevice): d is ReadIntoDevice {
  return typeof d.readInto === 'function';
}

/** Only these flags are valid per command (FUA is valid on every command once SEND_FUA is advertised). */
const ALLOWED_FLAGS: Record<number, number> = {
  [CMD_READ]: CMD_FLAG_FUA | CMD_FLAG_DF,
  [CMD_WRITE]: CMD_FLAG_FUA,
  [CMD_DISC]: CMD_FLAG_FUA,
  [CMD_FLUSH]: CMD_FLAG_FUA,
  [CMD_TRIM]: CMD_FLAG_FUA,
  [CMD_WRITE_ZEROES]: CMD_FLAG_FUA | CMD_FLAG_NO_HOLE | CMD_FLAG_FAST_ZERO,
  [CMD_BLOCK_STATUS]: CMD_FLAG_FUA | CMD_FLAG_REQ_ONE,
};

/** A request failed with an NBD error value; `message` goes to the client in structured mode. */
class RequestError {
  constructor(readonly code: number, readonly message: string) {}
}

/** Read replies with more extents than this are sent as one data chunk rather than many small ones. */
const MAX_READ_CHUNKS = 64;

/** One dispatched request: what it costs against the in-flight cap and the pooled buffers it holds. */
interface InFlight {
  readonly h: RequestHeader;
  readonly cost: number;
  /** The pooled buffer a WRITE payload was assembled in: given back once the device write has settled. */
  readonly payloadBase: Buffer | undefined;
  /** Pooled buffers the reply views: given back once the socket has written them (or the reply is dropped). */
  pooled: Buffer[] | null;
}

/** Writes a reply header into b[at, +size). */
type HeaderWriter = (b: Buffer, at: number) => void;

/** Socket reads outside WRITE payloads land here (with direct reads on): requests and small payloads. */
const SCRATCH_SIZE = 256 * 1024;
/** WRITEs at least this large are read header first, payload straight into its buffer (direct reads). */
const LARGE_WRITE = 64 * 1024;

export class NbdConnection {
  private sock: Duplex;
  private readonly hs: Handshake;
  private phase: 'handshake' | 'transmission' | 'closing' | 'closed' = 'handshake';
  private timer: NodeJS.Timeout | undefined;
  private onData = (chunk: Buffer): void => this.receive(chunk);
  // transmission state
  private exp: ServedExport | null = null;
  private structured = false;
  private contexts: SelectedContext[] = [];
  private readonly parser: RequestParser;
  private inflight = 0;
  private inflightBytes = 0;
  private paused = false;
  private stopReading = false;
  private corked = false;
  private idleWaiters: Array<() => void> = [];
  /** Direct reads (see readIntoCallerBuffers): the reused buffer for bytes that are not a payload's. */
  private scratch: Buffer | null = null;
  /** Payload length of the last request parsed if it was a WRITE, else 0. */
  private lastWriteLength = 0;
  private closedResolve!: () => void;
  /** Resolves when the socket is closed and no request is still running on the device. */
  readonly closed: Promise<void>;

  constructor(socket: Socket, private readonly opts: ConnectionOptions) {
    this.sock = socket;
    this.hs = new Handshake(opts.handshake);
    // WRITE payloads spanning socket chunks are assembled in recycled buffers, given back after the write.
    this.parser = new RequestParser({ allocate: (n) => opts.pool.take(n) });
    this.closed = new Promise((r) => (this.closedResolve = r));
    socket.setNoDelay(true);
    this.attach(socket);
    this.timer = setTimeout(() => this.abort('handshake timed out'), opts.handshakeTimeoutMs);
    this.perform(this.hs.start());
  }

  /** Export name once in transmission, for logs and tests. */
  get exportName(): string | undefined {
    return this.exp?.name;
  }

  private attach(s: Duplex): void {
    s.on('data', this.onData);
    s.on('error', (err: Error) => {
      this.opts.log(`nbd: connection error: ${err.message}`);
      s.destroy();
    });
    s.on('close', () => this.onClose());
    s.on('drain', () => this.maybeResume());
  }

  private onClose(): void {
    if (this.phase === 'closed') return;
    this.phase = 'closed';
    if (this.timer) clearTimeout(this.timer);
    this.stopReading = true;
    void this.whenIdle().then(() => this.closedResolve());
  }

  /** Hard disconnect. */
  private abort(reason: string): void {
    if (this.phase === 'closed') return;
    this.opts.log(`nbd: disconnecting client: ${reason}`);
    this.stopReading = true;
    this.sock.destroy();
  }

  /**
   * Server shutdown: a client still negotiating is dropped; one in transmission gets no new requests served,
   * its in-flight requests finish and are answered, then the connection is closed.
   */
  shutdown(): void {
    if (this.phase === 'handshake') {
      this.perform(this.hs.handle({ type: 'shutdown' }));
      this.abort('server shutting down');
      return;
    }
    if (this.phase !== 'transmission') return;
    this.phase = 'closing';
    this.stopReading = true;
    void this.whenIdle().then(() => this.endGracefully());
  }

  private endGracefully(): void {
    if (this.phase === 'closed') return;
    this.uncork();
    this.sock.end();
    // A client that never reads would keep the socket open forever: give it a bounded time.
    setTimeout(() => this.sock.destroy(), 5000).unref();
  }

  private whenIdle(): Promise<void> {
    if (this.inflight === 0) return Promise.resolve();
    return new Promise((r) => this.idleWaiters.push(r));
  }

  private receive(chunk: Buffer): void {
    if (this.phase === 'handshake') {
      this.perform(this.hs.handle({ type: 'data', bytes: chunk }));
    } else if (this.phase === 'transmission') {
      this.parser.push(chunk);
      this.pump();
    }
  }

  // ---------------------------------------------------------------- handshake

  private perform(actions: HandshakeAction[]): void {
    for (const a of actions) {
      if (this.phase !== 'handshake') return;
      switch (a.type) {
        case 'send':
          this.send([a.bytes]);
          break;
        case 'close':
          if (a.violation) this.opts.log(`nbd: handshake: ${a.reason}`);
          this.uncork();
          this.sock.end();
          this.stopReading = true;
          setTimeout(() => this.sock.destroy(), 1000).unref();
          return;
        case 'startTls':
          this.startTls();
          break;
        case 'resolveMeta': {
          const exp = this.opts.exports.get(a.exportName);
          void resolveMetaContexts(a.mode, a.queries, exp?.changes).then((names) => {
            if (this.phase === 'handshake') this.perform(this.hs.handle({ type: 'metaResolved', names }));
          });
          break;
        }
        case 'transmission':
          this.enterTransmission(a.export.name, a.structured, a.contexts, a.rest);
          break;
      }
    }
  }

  private startTls(): void {
    const ctx = this.opts.secureContext;
    if (!ctx) return this.abort('STARTTLS accepted without a TLS context');
    this.uncork(); // the ACK must reach the socket before the TLS layer takes it over
    const raw = this.sock;
    raw.removeListener('data', this.onData);
    raw.removeAllListeners('drain');
    const t = new tls.TLSSocket(raw as Socket, { isServer: true, secureContext: ctx, requestCert: false });
    this.sock = t;
    t.on('secure', () => {
      if (this.phase === 'handshake') this.perform(this.hs.handle({ type: 'tlsEstablished' }));
    });
    t.on('data', this.onData);
    t.on('error', (err: Error) => {
      this.opts.log(`nbd: TLS error: ${err.message}`);
      t.destroy();
      raw.destroy();
    });
    t.on('close', () => this.onClose());
    t.on('drain', () => this.maybeResume());
  }

  private enterTransmission(name: string, structured: boolean, contexts: SelectedContext[], rest: Buffer): void {
    const exp = this.opts.exports.get(name);
    if (!exp) return this.abort(`export ${name} vanished`);
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.exp = exp;
    this.structured = structured;
    this.contexts = contexts;
    this.phase = 'transmission';
    if (rest.length > 0) this.parser.push(rest);
    this.startDirectReads();
    this.pump();
  }

  /**
   * Plain sockets: from now on the kernel writes WRITE payloads straight into their (pooled) buffers, and
   * everything else into one reused scratch buffer; no per-read allocation, no copy of large payloads.
   * TLS sockets (and a Node without the mechanism) keep 'data' events.
   */
  private startDirectReads(): void {
    if (this.sock instanceof tls.TLSSocket || this.opts.directReads === false) return;
    this.parser.reuseChunks(); // before any scratch byte is pushed: payloads must never view the scratch
    const scratch = Buffer.allocUnsafe(SCRATCH_SIZE);
    // After a large WRITE another one most likely follows: read just its header, so that its payload goes
    // straight into the payload buffer instead of being read here and copied.
    const headerOnly = scratch.subarray(0, REQUEST_HEADER_SIZE);
    const next = (): Buffer => {
      const window = this.parser.payloadWindow();
      if (window) return window;
      this.parser.detach(); // leftover bytes (a partial header) move out of the scratch buffer
      return this.lastWriteLength >= LARGE_WRITE ? headerOnly : scratch;
    };
    const onRead = (n: number, buf: Buffer): void => {
      if (this.phase !== 'transmission') return;
      if (buf === scratch || buf === headerOnly) this.parser.push(buf.subarray(0, n));
      else {
        try {
          this.parser.filled(n);
        } catch (err) {
          return this.abort(`internal error: ${(err as Error).message}`); // never expected; never crash the server
        }
      }
      this.pump();
    };
    if (readIntoCallerBuffers(this.sock as Socket, next, onRead)) this.scratch = scratch;
  }

  /** Whether socket reads go to caller buffers (for tests). */
  get directReads(): boolean {
    return this.scratch !== null;
  }

  // ---------------------------------------------------------------- transmission

  private pump(): void {
    while (!this.stopReading) {
      if (this.inflightBytes + this.sock.writableLength >= this.opts.maxInflightBytes) {
        if (!this.paused) {
          this.paused = true;
          this.sock.pause();
        }
        return;
      }
      const item = this.parser.next();
      if (!item) return;
      if (item.kind === 'fatal') return this.abort(item.reason);
      if (item.kind === 'skipped') {
        this.replyError(item.header, new RequestError(NBD_EINVAL, `WRITE of ${item.header.length} bytes exceeds the maximum payload of ${MAX_PAYLOAD}`));
        continue;
      }
      const h = item.header;
      this.lastWriteLength = h.type === CMD_WRITE ? h.length : 0;
      if (h.type === CMD_DISC) {
        this.stopReading = true;
        this.phase = 'closing';
        void this.whenIdle().then(() => this.endGracefully());
        return;
      }
      this.dispatch(h, item.payload, item.pooled);
    }
  }

  private maybeResume(): void {
    if (!this.paused || this.stopReading) return;
    if (this.inflightBytes + this.sock.writableLength >= this.opts.maxInflightBytes) return;
    this.paused = false;
    this.sock.resume();
    this.pump();
  }

  private dispatch(h: RequestHeader, payload: Buffer | null, payloadBase?: Buffer): void {
    const cost = h.type === CMD_READ ? Math.min(h.length, MAX_PAYLOAD) : payload ? payload.length : 0;
    this.inflight++;
    this.inflightBytes += cost;
    const req: InFlight = { h, cost, payloadBase, pooled: null };
    let p: Promise<Buffer[]>;
    try {
      p = this.execute(h, payload, req);
    } catch (err) {
      p = Promise.reject(err);
    }
    p.then(
      (bufs) => this.settle(req, bufs, null),
      (err: unknown) => this.settle(req, null, err),
    );
  }

  /** A request's device work is over: reply (success or error), release its resources, maybe resume reading. */
  private settle(req: InFlight, bufs: Buffer[] | null, err: unknown): void {
    const pool = this.opts.pool;
    if (req.payloadBase) pool.give(req.payloadBase);
    if (bufs) this.send(bufs, req.pooled);
    else {
      // Only buffers whose reads have settled are listed: none is still being written into.
      if (req.pooled) for (const b of req.pooled) pool.give(b);
      this.replyError(req.h, err instanceof RequestError ? err : this.deviceError(req.h, err));
    }
    this.inflight--;
    this.inflightBytes -= req.cost;
    if (this.inflight === 0 && this.idleWaiters.length > 0) for (const w of this.idleWaiters.splice(0)) w();
    this.maybeResume();
  }

  private deviceError(h: RequestHeader, err: unknown): RequestError {
    const writing = h.type === CMD_WRITE || h.type === CMD_WRITE_ZEROES;
    const code = nbdErrorCode(err, { writing, fastZero: h.type === CMD_WRITE_ZEROES && (h.flags & CMD_FLAG_FAST_ZERO) !== 0 });
    if (code === NBD_EIO) this.opts.log(`nbd: ${this.exp?.name}: command ${h.type} at ${h.offset}+${h.length} failed: ${(err as Error)?.message ?? err}`);
    return new RequestError(code, (err as Error)?.message ?? String(err));
  }

  private ok(h: RequestHeader): Buffer[] {
    return [encodeSimpleReply(0, h.handle)];
  }

  /** Validate and run one request; resolves to the reply buffers. Throws RequestError for client mistakes. */
  private execute(h: RequestHeader, payload: Buffer | null, req: InFlight): Promise<Buffer[]> {
    const exp = this.exp!;
    const dev = exp.device;
    const allowed = ALLOWED_FLAGS[h.type];
    if (allowed === undefined) throw new RequestError(NBD_EINVAL, `command ${h.type} is not supported`);
    if ((h.flags & ~allowed) !== 0) throw new RequestError(NBD_EINVAL, `flags 0x${h.flags.toString(16)} are not valid for command ${h.type}`);
    if (this.phase !== 'transmission') throw new RequestError(NBD_ESHUTDOWN, 'server is shutting down');
    const fua = (h.flags & CMD_FLAG_FUA) !== 0;
    const inRange = h.offset + h.length <= dev.size && Number.isSafeInteger(h.offset);
    switch (h.type) {
      case CMD_READ:
        if ((h.flags & CMD_FLAG_DF) && !this.structured) throw new RequestError(NBD_EINVAL, 'DF requires structured replies');
        if (h.length > MAX_PAYLOAD) throw new RequestError(this.structured ? NBD_EOVERFLOW : NBD_EINVAL, `READ of ${h.length} bytes exceeds the maximum payload of ${MAX_PAYLOAD}`);
        if (!inRange) throw new RequestError(NBD_EINVAL, `READ [${h.offset}, +${h.length}) is beyond the export size ${dev.size}`);
        return this.structured ? this.readStructured(h, req) : this.readSimple(h, req);
      case CMD_WRITE:
        if (exp.readOnly) throw new RequestError(NBD_EPERM, 'export is read-only');
        if (!inRange) throw new RequestError(NBD_ENOSPC, `WRITE [${h.offset}, +${h.length}) is beyond the export size ${dev.size}`);
        if (h.length === 0) return Promise.resolve(this.ok(h));
        return dev.write(h.offset, payload!, { fua }).then(() => {
          exp.dataCache.writeDone();
          return this.ok(h);
        });
      case CMD_FLUSH:
        return dev.flush().then(() => this.ok(h));
      case CMD_TRIM:
        if (exp.readOnly) throw new RequestError(NBD_EPERM, 'export is read-only');
        if (!inRange) throw new RequestError(NBD_EINVAL, `TRIM [${h.offset}, +${h.length}) is beyond the export size ${dev.size}`);
        if (h.length === 0) return Promise.resolve(this.ok(h));
        return this.unmapping(h, () => dev.trim(h.offset, h.length, { fua }));
      case CMD_WRITE_ZEROES: {
        if (exp.readOnly) throw new RequestError(NBD_EPERM, 'export is read-only');
        if (!inRange) throw new RequestError(NBD_ENOSPC, `WRITE_ZEROES [${h.offset}, +${h.length}) is beyond the export size ${dev.size}`);
        const fast = (h.flags & CMD_FLAG_FAST_ZERO) !== 0;
        if (fast && !dev.capabilities.fastZero) throw new RequestError(NBD_ENOTSUP, 'this device cannot zero faster than writing');
        if (h.length === 0) return Promise.resolve(this.ok(h));
        return this.unmapping(h, () => dev.zero(h.offset, h.length, { fua, fast, noHole: (h.flags & CMD_FLAG_NO_HOLE) !== 0 }));
      }
      case CMD_BLOCK_STATUS:
        if (!this.structured || this.contexts.length === 0) throw new RequestError(NBD_EINVAL, 'no meta context was negotiated');
        if (h.length === 0) throw new RequestError(NBD_EINVAL, 'BLOCK_STATUS of length 0');
        if (!inRange) throw new RequestError(NBD_EINVAL, `BLOCK_STATUS [${h.offset}, +${h.length}) is beyond the export size ${dev.size}`);
        return this.blockStatus(h);
    }
    throw new RequestError(NBD_EINVAL, `command ${h.type} is not supported`);
  }

  private readSimple(h: RequestHeader, req: InFlight): Promise<Buffer[]> {
    if (h.length === 0) return Promise.resolve([encodeSimpleReply(0, h.handle)]);
    return this.readChunk(h.offset, h.length, SIMPLE_REPLY_SIZE, (b, at) => writeSimpleReply(b, at, 0, h.handle), req);
  }

  /** Run a zero/trim with the export's data-window cache invalidated before and after it. */
  private async unmapping(h: RequestHeader, op: () => Promise<void>): Promise<Buffer[]> {
    const cache = this.exp!.dataCache;
    cache.invalidate(h.offset, h.length);
    try {
      await op();
    } finally {
      cache.invalidate(h.offset, h.length);
    }
    return this.ok(h);
  }

  /**
   * Structured READ: holes and zero runs (from the device's extents) go out as OFFSET_HOLE chunks, data as
   * OFFSET_DATA chunks. Windows known to be all data skip the extents lookup (the common, fast path).
   */
  private readStructured(h: RequestHeader, req: InFlight): Promise<Buffer[]> {
    const exp = this.exp!;
    const dev = exp.device;
    if (h.length === 0) return Promise.resolve([encodeNoneChunk(h.handle)]);
    if ((h.flags & CMD_FLAG_DF) || !dev.capabilities.extents || exp.dataCache.isAllData(h.offset, h.length)) return this.readWhole(h, req);
    return this.readSparse(h, req);
  }

  /** The whole range as one final OFFSET_DATA chunk. */
  private readWhole(h: RequestHeader, req: InFlight): Promise<Buffer[]> {
    return this.readChunk(h.offset, h.length, OFFSET_DATA_HEADER_SIZE, (b, at) => writeOffsetDataHeader(b, at, true, h.handle, h.offset, h.length), req);
  }

  private async readSparse(h: RequestHeader, req: InFlight): Promise<Buffer[]> {
    const exp = this.exp!;
    const dev = exp.device;
    const spanExtents = await exp.dataCache.spanExtents(h.offset, h.length, dev.size, (o, l) => dev.extents(o, l));
    if (spanExtents.length === 1 && spanExtents[0]!.type === 'data') return this.readWhole(h, req);
    const end = h.offset + h.length;
    const extents = spanExtents
      .filter((e) => e.offset < end && e.offset + e.length > h.offset)
      .map((e) => ({ type: e.type, offset: Math.max(e.offset, h.offset), length: Math.min(e.offset + e.length, end) - Math.max(e.offset, h.offset) }));
    if (extents.length > MAX_READ_CHUNKS || (extents.length === 1 && extents[0]!.type === 'data')) return this.readWhole(h, req);
    const last = extents.length - 1;
    // allSettled: on failure no read may still be filling a buffer that goes back to the pool.
    const parts = await Promise.allSettled(
      extents.map((e, i) =>
        e.type === 'data'
          ? this.readChunk(e.offset, e.length, OFFSET_DATA_HEADER_SIZE, (b, at) => writeOffsetDataHeader(b, at, i === last, h.handle, e.offset, e.length), req)
          : Promise.resolve([encodeOffsetHole(i === last, h.handle, e.offset, e.length)]),
      ),
    );
    const out: Buffer[] = [];
    for (const p of parts) {
      if (p.status === 'rejected') throw p.reason;
      out.push(...p.value);
    }
    return out;
  }

  /**
   * Read [offset, +length) as one reply piece: a `headerSize`-byte header (filled by `writeHeader`) followed
   * by the data. Devices with `readInto` read straight into a recycled buffer behind the header, and the
   * piece is that one buffer (listed in `req.pooled`, given back once written); others give a fresh buffer
   * sent after a separate header.
   */
  private readChunk(offset: number, length: number, headerSize: number, writeHeader: HeaderWriter, req: InFlight): Promise<Buffer[]> {
    const dev = this.exp!.device;
    if (!canReadInto(dev)) {
      return dev.read(offset, length).then((data) => {
        const header = Buffer.allocUnsafe(headerSize);
        writeHeader(header, 0);
        return [header, data];
      });
    }
    const pool = this.opts.pool;
    // A recycled buffer holds old data; readInto overwrites every byte of the window (BlockDevice contract)
    // and the header covers the rest of what is sent.
    const base = pool.take(headerSize + length);
    let p: Promise<void>;
    try {
      p = dev.readInto(base, headerSize, offset, length);
    } catch (err) {
      p = Promise.reject(err);
    }
    return p.then(
      () => {
        (req.pooled ??= []).push(base);
        writeHeader(base, 0);
        return [base.subarray(0, headerSize + length)];
      },
      (err: unknown) => {
        pool.give(base);
        throw err;
      },
    );
  }

  private async blockStatus(h: RequestHeader): Promise<Buffer[]> {
    const exp = this.exp!;
    const reqOne = (h.flags & CMD_FLAG_REQ_ONE) !== 0;
    const chunks = await Promise.all(
      this.contexts.map(async (c) => {
        if (c.name === BASE_ALLOCATION) {
          const extents = await exp.device.extents(h.offset, h.length);
          return { c, d: allocationDescriptors(extents, h.offset, h.length, reqOne) };
        }
        const id = c.name.slice(CHANGES_PREFIX.length);
        let changes;
        try {
          changes = await exp.changes!.changesSince(id, h.offset, h.length);
        } catch (err) {
          // Reporting "unchanged" here could make a backup silently miss data: fail loudly instead.
          throw new RequestError(NBD_EIO, `change ID ${id} cannot be answered: ${(err as Error)?.message ?? err}`);
        }
        return { c, d: changeDescriptors(changes, h.offset, h.length, reqOne) };
      }),
    );
    return chunks.map(({ c, d }, i) => encodeBlockStatus(i === chunks.length - 1, h.handle, c.id, d));
  }

  private replyError(h: RequestHeader, e: RequestError): void {
    if (this.structured) this.send([encodeErrorChunk(h.handle, e.code, e.message)]);
    else this.send([encodeSimpleReply(e.code, h.handle)]);
  }

  // ---------------------------------------------------------------- output

  /** Queue reply buffers; `pooled` (buffers they view) go back to the pool once the socket has written them. */
  private send(bufs: Buffer[], pooled: Buffer[] | null = null): void {
    const s = this.sock;
    if (s.destroyed || !s.writable) {
      if (pooled) for (const b of pooled) this.opts.pool.give(b);
      return;
    }
    if (!this.corked) {
      this.corked = true;
      s.cork();
      process.nextTick(this.uncorkTick);
    }
    const last = bufs.length - 1;
    for (let i = 0; i < last; i++) s.write(bufs[i]);
    // Writes complete in order: once the last one is written, all of them are.
    if (pooled) {
      const pool = this.opts.pool;
      s.write(bufs[last], () => {
        for (const b of pooled) pool.give(b);
      });
    } else s.write(bufs[last]);
  }

  private readonly uncorkTick = (): void => this.uncork();

  private uncork(): void {
    if (!this.corked) return;
    this.corked = false;
    this.sock.uncork();
  }
}
