/**
 * A transparent NBD proxy on a unix socket that watches the traffic: which options the client asked
 * for and what the server answered (structured replies, meta contexts, export flags), and every
 * transmission command the client sent (type, offset, length). Tests put it between a guest and any
 * NBD server to prove what actually went over the wire, independently of the server's own code.
 *
 * How this works: each direction is forwarded unchanged; a copy is fed to a small incremental
 * parser. Client side: 4-byte client flags, then option requests (IHAVEOPT, type, length, data)
 * until the handshake ends, then 28-byte requests (WRITE followed by its payload). Server side: the
 * 18-byte greeting, then option replies until the ACK of NBD_OPT_GO (or NBD_OPT_EXPORT_NAME, which
 * has no reply) ends the handshake; server replies in transmission are not parsed. A client request
 * can only follow the ACK it waits for, and the proxy parses the ACK before forwarding it, so the
 * client parser always knows which phase it is in.
 */
import { createConnection, createServer, type Server, type Socket } from 'node:net';

const OPT_NAMES: Record<number, string> = {
  1: 'EXPORT_NAME', 2: 'ABORT', 3: 'LIST', 5: 'STARTTLS', 6: 'INFO', 7: 'GO', 8: 'STRUCTURED_REPLY',
  9: 'LIST_META_CONTEXT', 10: 'SET_META_CONTEXT', 11: 'EXTENDED_HEADERS',
};
export const CMD_NAMES: Record<number, string> = {
  0: 'READ', 1: 'WRITE', 2: 'DISC', 3: 'FLUSH', 4: 'TRIM', 5: 'CACHE', 6: 'WRITE_ZEROES', 7: 'BLOCK_STATUS', 8: 'RESIZE',
};
const REP_ACK = 1;
const REP_INFO = 3;
const REP_META_CONTEXT = 4;
const REQUEST_MAGIC = 0x25609513;

export interface TapCommand {
  type: string;
  flags: number;
  offset: number;
  length: number;
}

export interface TapStats {
  /** Options the client sent, in order, with the server's reply types (hex; errors have bit 31). */
  options: Array<{ name: string; replies: string[] }>;
  /** The client asked for structured replies and the server acknowledged. */
  structuredReplies: boolean;
  /** Meta contexts the server selected in reply to NBD_OPT_SET_META_CONTEXT. */
  metaContexts: string[];
  /** Transmission flags from NBD_INFO_EXPORT (or the EXPORT_NAME reply), if seen. */
  transmissionFlags?: number;
  /** Count of each transmission command type the client sent. */
  counts: Record<string, number>;
  /** Every transmission command the client sent, in order. */
  commands: TapCommand[];
  /** Connections accepted. */
  connections: number;
  /** Protocol surprises the parser met (never expected; a test should assert this is empty). */
  errors: string[];
}

/** Incremental parser of one connection's two byte streams. */
class ConnectionParser {
  private cbuf: Buffer = Buffer.alloc(0);
  private sbuf: Buffer = Buffer.alloc(0);
  private cstate: 'flags' | 'options' | 'transmission' | 'payload' = 'flags';
  private payloadLeft = 0;
  private sstate: 'greeting' | 'replies' | 'done' = 'greeting';
  private lastOptions: Array<{ type: number; index: number }> = [];
  private structuredAsked = false;

  constructor(private readonly stats: TapStats) {}

  fromClient(chunk: Buffer): void {
    this.cbuf = this.cbuf.length ? Buffer.concat([this.cbuf, chunk]) : chunk;
    for (;;) {
      if (this.cstate === 'payload') {
        const n = Math.min(this.payloadLeft, this.cbuf.length);
        this.payloadLeft -= n;
        this.cbuf = this.cbuf.subarray(n);
        if (this.payloadLeft > 0) return;
        this.cstate = 'transmission';
      } else if (this.cstate === 'flags') {
        if (this.cbuf.length < 4) return;
        this.cbuf = this.cbuf.subarray(4);
        this.cstate = 'options';
      } else if (this.cstate === 'options') {
        if (this.sstate === 'done') {
          this.cstate = 'transmission';
          continue;
        }
        if (this.cbuf.length < 16) return;
        const len = this.cbuf.readUInt32BE(12);
        if (this.cbuf.length < 16 + len) return;
        const type = this.cbuf.readUInt32BE(8);
        this.stats.options.push({ name: OPT_NAMES[type] ?? `OPT_${type}`, replies: [] });
        this.lastOptions.push({ type, index: this.stats.options.length - 1 });
        if (type === 8) this.structuredAsked = true;
        this.cbuf = this.cbuf.subarray(16 + len);
        // EXPORT_NAME has no option reply: the server answers with export data and transmission starts.
        if (type === 1) {
          this.sstate = 'done';
          this.cstate = 'transmission';
        }
      } else {
        if (this.cbuf.length < 28) return;
        const magic = this.cbuf.readUInt32BE(0);
        if (magic !== REQUEST_MAGIC) {
          this.stats.errors.push(`bad request magic 0x${magic.toString(16)}`);
          this.cbuf = Buffer.alloc(0);
          return;
        }
        const flags = this.cbuf.readUInt16BE(4);
        const typeNum = this.cbuf.readUInt16BE(6);
        const offset = Number(this.cbuf.readBigUInt64BE(16));
        const length = this.cbuf.readUInt32BE(24);
        const type = CMD_NAMES[typeNum] ?? `CMD_${typeNum}`;
        this.stats.commands.push({ type, flags, offset, length });
        this.stats.counts[type] = (this.stats.counts[type] ?? 0) + 1;
        this.cbuf = this.cbuf.subarray(28);
        if (typeNum === 1 && length > 0) {
          this.payloadLeft = length;
          this.cstate = 'payload';
        }
      }
    }
  }

  fromServer(chunk: Buffer): void {
    if (this.sstate === 'done') return;
    this.sbuf = this.sbuf.length ? Buffer.concat([this.sbuf, chunk]) : chunk;
    for (;;) {
      if (this.sstate === 'greeting') {
        if (this.sbuf.length < 18) return;
        this.sbuf = this.sbuf.subarray(18);
        this.sstate = 'replies';
      } else if (this.sstate === 'replies') {
        if (this.sbuf.length < 20) return;
        const opt = this.sbuf.readUInt32BE(8);
        const rep = this.sbuf.readUInt32BE(12);
        const len = this.sbuf.readUInt32BE(16);
        if (this.sbuf.length < 20 + len) return;
        const data = this.sbuf.subarray(20, 20 + len);
        const pending = this.lastOptions.find((o) => o.type === opt);
        if (pending) this.stats.options[pending.index]!.replies.push(`0x${rep.toString(16)}`);
        if (rep === REP_META_CONTEXT && len >= 4) this.stats.metaContexts.push(data.subarray(4).toString('utf8'));
        if (rep === REP_INFO && len >= 12 && data.readUInt16BE(0) === 0) this.stats.transmissionFlags = data.readUInt16BE(10);
        if (rep === REP_ACK || rep >= 0x80000000) this.lastOptions = this.lastOptions.filter((o) => o !== pending);
        if (opt === 8 && rep === REP_ACK && this.structuredAsked) this.stats.structuredReplies = true;
        this.sbuf = this.sbuf.subarray(20 + len);
        if (opt === 7 && rep === REP_ACK) {
          this.sstate = 'done';
          this.sbuf = Buffer.alloc(0);
          return;
        }
      } else {
        return;
      }
    }
  }
}

export class NbdTap {
  readonly stats: TapStats = { options: [], structuredReplies: false, metaContexts: [], counts: {}, commands: [], connections: 0, errors: [] };
  private readonly sockets = new Set<Socket>();

  private constructor(private readonly server: Server, readonly socketPath: string) {}

  /** Listen on `listenPath`, forwarding each connection to the NBD server at `upstreamPath`. */
  static async start(upstreamPath: string, listenPath: string): Promise<NbdTap> {
    const server = createServer();
    const tap = new NbdTap(server, listenPath);
    server.on('connection', (client) => tap.accept(client, upstreamPath));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(listenPath, () => resolve());
    });
    return tap;
  }

  /** The URL a guest uses to reach the server through the tap. */
  get url(): string {
    return `nbd+unix:///?socket=${this.socketPath}`;
  }

  private accept(client: Socket, upstreamPath: string): void {
    this.stats.connections++;
    const parser = new ConnectionParser(this.stats);
    const upstream = createConnection(upstreamPath);
    this.sockets.add(client);
    this.sockets.add(upstream);
    // Parse first (listeners run in order), then forward with pipe (backpressure, half-close).
    client.on('data', (d: Buffer) => parser.fromClient(d));
    upstream.on('data', (d: Buffer) => parser.fromServer(d));
    client.pipe(upstream);
    upstream.pipe(client);
    const fail = (): void => {
      client.destroy();
      upstream.destroy();
    };
    client.on('error', fail);
    upstream.on('error', fail);
    client.on('close', () => this.sockets.delete(client));
    upstream.on('close', () => this.sockets.delete(upstream));
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
