/**
 * A minimal NBD client for tests: raw socket, fixed-newstyle handshake, pipelined requests, replies
 * collected by handle. It trusts nothing from the server: every reply is decoded strictly.
 */
import * as net from 'node:net';
import {
  decodeOptionReply,
  encodeInfoRequest,
  encodeMetaContextRequest,
  encodeOptionRequest,
  type OptionReply,
} from '../../../src/nbd/optionCodec.js';
import { decodeReplyHeader, encodeRequestHeader } from '../../../src/nbd/transmissionCodec.js';
import {
  CMD_READ,
  FLAG_C_FIXED_NEWSTYLE,
  FLAG_C_NO_ZEROES,
  INFO_BLOCK_SIZE,
  INFO_EXPORT,
  OPT_GO,
  OPT_SET_META_CONTEXT,
  OPT_STRUCTURED_REPLY,
  REP_ACK,
  REP_INFO,
  REP_META_CONTEXT,
  REPLY_FLAG_DONE,
  REPLY_TYPE_BLOCK_STATUS,
  REPLY_TYPE_ERROR,
  REPLY_TYPE_OFFSET_DATA,
  REPLY_TYPE_OFFSET_HOLE,
} from '../../../src/nbd/protocol.js';

export interface Reply {
  handle: bigint;
  error: number;
  /** READ: the reassembled data (holes as zeros). */
  data?: Buffer;
  /** BLOCK_STATUS: descriptors per context id. */
  status?: Map<number, Array<{ length: number; flags: number }>>;
  chunks: number;
  errorMessage?: string;
}

export class RawClient {
  private buf: Buffer = Buffer.alloc(0);
  private waiters: Array<() => void> = [];
  private pending = new Map<bigint, { resolve: (r: Reply) => void; reply: Reply; offset: number; length: number; simpleRead: boolean }>();
  private nextHandle = 1n;
  private mode: 'raw' | 'transmission' = 'raw';
  closed = false;
  size = 0;
  flags = 0;
  structured = false;
  contexts = new Map<string, number>();

  private constructor(readonly sock: net.Socket) {
    sock.on('data', (c: Buffer) => {
      this.buf = this.buf.length ? Buffer.concat([this.buf, c]) : c;
      if (this.mode === 'transmission') this.drainReplies();
      for (const w of this.waiters.splice(0)) w();
    });
    sock.on('close', () => {
      this.closed = true;
      for (const w of this.waiters.splice(0)) w();
    });
    sock.on('error', () => {});
  }

  static connect(target: { port: number } | { path: string }): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const s = 'path' in target ? net.connect(target.path) : net.connect(target.port, '127.0.0.1');
      s.once('connect', () => resolve(new RawClient(s)));
      s.once('error', reject);
    });
  }

  /** Wait until `n` bytes are buffered (or the socket closes: then resolves false). */
  async need(n: number, timeoutMs = 5000): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (this.buf.length < n) {
      if (this.closed) return false;
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${n} bytes (have ${this.buf.length})`);
      await new Promise<void>((r) => {
        this.waiters.push(r);
        setTimeout(r, 50);
      });
    }
    return true;
  }

  take(n: number): Buffer {
    const b = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return b;
  }

  write(b: Buffer): void {
    this.sock.write(b);
  }

  /** Resolves when the server closes the connection. */
  async waitClosed(timeoutMs = 5000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!this.closed) {
      if (Date.now() > deadline) throw new Error('server did not close the connection');
      await new Promise<void>((r) => {
        this.waiters.push(r);
        setTimeout(r, 50);
      });
    }
  }

  /** Read the greeting and send client flags. */
  async greet(clientFlags = FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES): Promise<Buffer> {
    await this.need(18);
    const g = this.take(18);
    const f = Buffer.alloc(4);
    f.writeUInt32BE(clientFlags, 0);
    this.write(f);
    return g;
  }

  /** Send one option and collect replies up to the final one (ACK or error). */
  async option(option: number, data?: Buffer): Promise<OptionReply[]> {
    this.write(encodeOptionRequest(option, data));
    const out: OptionReply[] = [];
    for (;;) {
      let d = decodeOptionReply(this.buf);
      while (!d) {
        if (!(await this.need(this.buf.length + 1))) throw new Error('connection closed during option');
        d = decodeOptionReply(this.buf);
      }
      this.take(d.size);
      out.push(d.reply);
      if (d.reply.type === REP_ACK || d.reply.type >= 0x80000000) return out;
    }
  }

  /** Full handshake: structured replies, optional meta contexts, GO. */
  static async open(
    target: { port: number } | { path: string },
    opts: { name?: string; structured?: boolean; contexts?: string[] } = {},
  ): Promise<RawClient> {
    const c = await RawClient.connect(target);
    await c.greet();
    const name = opts.name ?? '';
    if (opts.structured ?? true) {
      const r = await c.option(OPT_STRUCTURED_REPLY);
      c.structured = r[0]!.type === REP_ACK;
    }
    if (opts.contexts) {
      const r = await c.option(OPT_SET_META_CONTEXT, encodeMetaContextRequest(name, opts.contexts));
      for (const rep of r) if (rep.type === REP_META_CONTEXT) c.contexts.set(rep.data.subarray(4).toString('utf8'), rep.data.readUInt32BE(0));
    }
    const r = await c.option(OPT_GO, encodeInfoRequest(name, [INFO_BLOCK_SIZE]));
    const last = r[r.length - 1]!;
    if (last.type !== REP_ACK) throw new Error(`GO failed: 0x${last.type.toString(16)} ${last.data.toString()}`);
    for (const rep of r) {
      if (rep.type === REP_INFO && rep.data.readUInt16BE(0) === INFO_EXPORT) {
        c.size = Number(rep.data.readBigUInt64BE(2));
        c.flags = rep.data.readUInt16BE(10);
      }
    }
    c.mode = 'transmission';
    c.drainReplies();
    return c;
  }

  /** Send a request; the promise resolves with its (reassembled) reply. */
  request(type: number, opts: { flags?: number; offset?: number; length?: number; data?: Buffer; handle?: bigint } = {}): Promise<Reply> {
    const handle = opts.handle ?? this.nextHandle++;
    const offset = opts.offset ?? 0;
    const length = opts.length ?? opts.data?.length ?? 0;
    const p = new Promise<Reply>((resolve) => {
      this.pending.set(handle, {
        resolve,
        reply: { handle, error: 0, chunks: 0, data: type === CMD_READ ? Buffer.alloc(Math.min(length, 64 << 20)) : undefined },
        offset,
        length,
        simpleRead: type === CMD_READ && !this.structured,
      });
    });
    this.write(encodeRequestHeader(type, opts.flags ?? 0, handle, offset, length));
    if (opts.data) this.write(opts.data);
    return p;
  }

  /** Pending replies that have not arrived. */
  get outstanding(): number {
    return this.pending.size;
  }

  private drainReplies(): void {
    for (;;) {
      const h = decodeReplyHeader(this.buf);
      if (!h) return;
      const p = this.pending.get(h.handle);
      if (!p) throw new Error(`reply for unknown handle ${h.handle}`);
      if (h.kind === 'simple') {
        const dataLen = p.simpleRead && h.error === 0 ? p.length : 0;
        if (this.buf.length < 16 + dataLen) return;
        this.take(16);
        if (dataLen) this.take(dataLen).copy(p.reply.data!);
        p.reply.error = h.error;
        p.reply.chunks++;
        this.pending.delete(h.handle);
        p.resolve(p.reply);
        continue;
      }
      if (this.buf.length < 20 + h.length) return;
      this.take(20);
      const payload = this.take(h.length);
      p.reply.chunks++;
      if (h.type === REPLY_TYPE_OFFSET_DATA) {
        const off = Number(payload.readBigUInt64BE(0));
        payload.subarray(8).copy(p.reply.data!, off - p.offset);
      } else if (h.type === REPLY_TYPE_OFFSET_HOLE) {
        const off = Number(payload.readBigUInt64BE(0));
        p.reply.data!.fill(0, off - p.offset, off - p.offset + payload.readUInt32BE(8));
      } else if (h.type === REPLY_TYPE_BLOCK_STATUS) {
        const id = payload.readUInt32BE(0);
        const list: Array<{ length: number; flags: number }> = [];
        for (let i = 4; i < payload.length; i += 8) list.push({ length: payload.readUInt32BE(i), flags: payload.readUInt32BE(i + 4) });
        (p.reply.status ??= new Map()).set(id, list);
      } else if (h.type & 0x8000) {
        p.reply.error = payload.readUInt32BE(0);
        const ml = payload.readUInt16BE(4);
        p.reply.errorMessage = payload.subarray(6, 6 + ml).toString('utf8');
        void REPLY_TYPE_ERROR;
      }
      if (h.flags & REPLY_FLAG_DONE) {
        this.pending.delete(h.handle);
        p.resolve(p.reply);
      }
    }
  }

  close(): void {
    this.sock.destroy();
  }
}
