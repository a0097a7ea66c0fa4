/**
 * The NBD fixed-newstyle handshake as a pure state machine: events in, actions out. No sockets, no
 * timers, no device calls; NbdConnection drives it and performs the actions.
 *
 * How this works:
 *   start()             -> send greeting (NBDMAGIC, IHAVEOPT, FIXED_NEWSTYLE|NO_ZEROES)
 *   data(bytes)         -> 4 bytes of client flags, then options (IHAVEOPT, option, length, data).
 *                          Options are answered with sends; the machine buffers partial input itself.
 *   STARTTLS accepted   -> 'startTls' action; the machine waits for tlsEstablished() and drops all
 *                          negotiated state (spec: nothing from before TLS survives).
 *   *_META_CONTEXT      -> 'resolveMeta' action (resolution may need the export's change source, which is
 *                          asynchronous); the machine waits for metaResolved(names) and then replies.
 *   GO / EXPORT_NAME    -> 'transmission' action carrying the export, flags, selected contexts and any
 *                          bytes received beyond the handshake (pipelined first requests).
 *   protocol violations -> 'close' action (hard disconnect); malformed but skippable options get
 *                          NBD_REP_ERR_INVALID and the session continues.
 */
import {
  decodeInfoRequest,
  decodeMetaContextRequest,
  decodeOptionHeader,
  encodeExportNameReply,
  encodeGreeting,
  encodeInfoBlockSize,
  encodeInfoExport,
  encodeInfoString,
  encodeMetaContextReply,
  encodeOptionReply,
  encodeServerReply,
  type BlockSizes,
} from './optionCodec.js';
import { NbdOptionFormatError } from './errors.js';
import {
  FLAG_C_FIXED_NEWSTYLE,
  FLAG_C_NO_ZEROES,
  INFO_DESCRIPTION,
  INFO_NAME,
  OPTION_HEADER_SIZE,
  OPT_ABORT,
  OPT_EXPORT_NAME,
  OPT_GO,
  OPT_INFO,
  OPT_LIST,
  OPT_LIST_META_CONTEXT,
  OPT_SET_META_CONTEXT,
  OPT_STARTTLS,
  OPT_STRUCTURED_REPLY,
  REP_ACK,
  REP_ERR_INVALID,
  REP_ERR_POLICY,
  REP_ERR_SHUTDOWN,
  REP_ERR_TLS_REQD,
  REP_ERR_TOO_BIG,
  REP_ERR_UNKNOWN,
  REP_ERR_UNSUP,
  TFLAG_SEND_DF,
} from './protocol.js';

/** What the handshake needs to know about an export. */
export interface HandshakeExport {
  name: string;
  description?: string;
  size: number;
  /** Transmission flags without SEND_DF (added when structured replies are negotiated). */
  flags: number;
  blockSizes: BlockSizes;
}

export type TlsMode = 'off' | 'allowed' | 'required';

export interface HandshakeConfig {
  exports: HandshakeExport[];
  tls: TlsMode;
  /** Option data larger than this is skipped and answered NBD_REP_ERR_TOO_BIG (default 64 KiB). */
  maxOptionData?: number;
  /** Option data larger than this is a denial of service: hard disconnect (default 16 MiB). */
  maxSkippableOptionData?: number;
  /** Most meta contexts one SET_META_CONTEXT may select (default 16). */
  maxContexts?: number;
}

export interface SelectedContext {
  id: number;
  name: string;
}

export type HandshakeEvent =
  | { type: 'data'; bytes: Buffer }
  | { type: 'tlsEstablished' }
  | { type: 'metaResolved'; names: string[] }
  | { type: 'shutdown' };

export type HandshakeAction =
  | { type: 'send'; bytes: Buffer }
  /** Upgrade the connection to TLS now (after sending what precedes this action). */
  | { type: 'startTls' }
  /** Resolve meta-context queries for an export, then feed back `metaResolved`. */
  | { type: 'resolveMeta'; mode: 'list' | 'set'; exportName: string; queries: string[] }
  /** Hard disconnect. `violation` is false for orderly ends (NBD_OPT_ABORT). */
  | { type: 'close'; reason: string; violation: boolean }
  /** Enter the transmission phase. */
  | {
      type: 'transmission';
      export: HandshakeExport;
      flags: number;
      structured: boolean;
      contexts: SelectedContext[];
      /** Bytes already received after the final option: the first requests. */
      rest: Buffer;
    };

type State = 'new' | 'clientFlags' | 'options' | 'skipping' | 'awaitMeta' | 'awaitTls' | 'done';

export class Handshake {
  private state: State = 'new';
  private buf: Buffer = Buffer.alloc(0);
  private noZeroes = false;
  private tlsActive = false;
  private structured = false;
  private shuttingDown = false;
  /** Contexts from the last SET_META_CONTEXT and the export it named. */
  private selected: { exportName: string; contexts: SelectedContext[] } | null = null;
  private pendingMeta: { option: number; mode: 'list' | 'set'; exportName: string } | null = null;
  private skip = { remaining: 0, option: 0 };
  private readonly maxOptionData: number;
  private readonly maxSkippable: number;
  private readonly maxContexts: number;

  constructor(private readonly config: HandshakeConfig) {
    this.maxOptionData = config.maxOptionData ?? 64 * 1024;
    this.maxSkippable = config.maxSkippableOptionData ?? 16 * 1024 * 1024;
    this.maxContexts = config.maxContexts ?? 16;
  }

  /** True once the machine has produced 'transmission' or 'close'. */
  get finished(): boolean {
    return this.state === 'done';
  }

  /** Whether TLS is in force on this connection. */
  get tls(): boolean {
    return this.tlsActive;
  }

  start(): HandshakeAction[] {
    if (this.state !== 'new') throw new Error('Handshake.start called twice');
    this.state = 'clientFlags';
    return [{ type: 'send', bytes: encodeGreeting() }];
  }

  handle(ev: HandshakeEvent): HandshakeAction[] {
    if (this.state === 'done') return [];
    const out: HandshakeAction[] = [];
    switch (ev.type) {
      case 'data':
        if (this.state === 'awaitTls') return this.fail(out, 'client sent plaintext after STARTTLS was accepted');
        this.buf = this.buf.length === 0 ? ev.bytes : Buffer.concat([this.buf, ev.bytes]);
        break;
      case 'tlsEstablished':
        if (this.state !== 'awaitTls') throw new Error('tlsEstablished outside STARTTLS');
        this.tlsActive = true;
        this.state = 'options';
        break;
      case 'metaResolved':
        if (this.state !== 'awaitMeta' || !this.pendingMeta) throw new Error('metaResolved without a pending query');
        this.finishMeta(out, ev.names);
        break;
      case 'shutdown':
        this.shuttingDown = true;
        break;
    }
    this.pump(out);
    return out;
  }

  private pump(out: HandshakeAction[]): void {
    for (;;) {
      if (this.state === 'clientFlags') {
        if (this.buf.length < 4) return;
        const flags = this.buf.readUInt32BE(0);
        this.buf = this.buf.subarray(4);
        if ((flags & ~(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES)) !== 0) return void this.fail(out, `unknown client flags 0x${flags.toString(16)}`);
        if (!(flags & FLAG_C_FIXED_NEWSTYLE)) return void this.fail(out, 'client does not speak fixed newstyle (the only handshake Tidemark offers)');
        this.noZeroes = (flags & FLAG_C_NO_ZEROES) !== 0;
        this.state = 'options';
      } else if (this.state === 'skipping') {
        const n = Math.min(this.skip.remaining, this.buf.length);
        this.buf = this.buf.subarray(n);
        this.skip.remaining -= n;
        if (this.skip.remaining > 0) return;
        this.state = 'options';
        this.reply(out, this.skip.option, REP_ERR_TOO_BIG, 'option data too large');
      } else if (this.state === 'options') {
        if (this.buf.length < OPTION_HEADER_SIZE) return;
        const h = decodeOptionHeader(this.buf);
        if (!h.magicOk) return void this.fail(out, 'option does not start with IHAVEOPT');
        if (h.length > this.maxOptionData) {
          if (h.length > this.maxSkippable) return void this.fail(out, `option ${h.option} carries ${h.length} bytes of data`);
          this.buf = this.buf.subarray(OPTION_HEADER_SIZE);
          this.skip = { remaining: h.length, option: h.option };
          this.state = 'skipping';
          continue;
        }
        if (this.buf.length < OPTION_HEADER_SIZE + h.length) return;
        const data = this.buf.subarray(OPTION_HEADER_SIZE, OPTION_HEADER_SIZE + h.length);
        this.buf = this.buf.subarray(OPTION_HEADER_SIZE + h.length);
        this.option(out, h.option, data);
        if ((this.state as State) !== 'options') return;
      } else {
        return; // awaitMeta / awaitTls / done: input stays buffered
      }
    }
  }

  private option(out: HandshakeAction[], option: number, data: Buffer): void {
    if (option === OPT_ABORT) {
      this.reply(out, option, REP_ACK);
      this.state = 'done';
      out.push({ type: 'close', reason: 'client aborted the handshake', violation: false });
      return;
    }
    if (this.config.tls === 'required' && !this.tlsActive && option !== OPT_STARTTLS) {
      if (option === OPT_EXPORT_NAME) return void this.fail(out, 'NBD_OPT_EXPORT_NAME before STARTTLS on a server that requires TLS');
      return this.reply(out, option, REP_ERR_TLS_REQD, 'this server requires TLS: use STARTTLS');
    }
    if (this.shuttingDown) {
      if (option === OPT_EXPORT_NAME) return void this.fail(out, 'server is shutting down');
      return this.reply(out, option, REP_ERR_SHUTDOWN, 'server is shutting down');
    }
    try {
      switch (option) {
        case OPT_EXPORT_NAME:
          return this.exportName(out, data);
        case OPT_LIST:
          if (data.length !== 0) return this.reply(out, option, REP_ERR_INVALID, 'NBD_OPT_LIST takes no data');
          for (const e of this.config.exports) out.push({ type: 'send', bytes: encodeServerReply(option, e.name, e.description ?? '') });
          return this.reply(out, option, REP_ACK);
        case OPT_STARTTLS:
          if (data.length !== 0) return this.reply(out, option, REP_ERR_INVALID, 'NBD_OPT_STARTTLS takes no data');
          if (this.config.tls === 'off') return this.reply(out, option, REP_ERR_POLICY, 'TLS is not configured on this server');
          if (this.tlsActive) return this.reply(out, option, REP_ERR_INVALID, 'TLS is already active');
          if (this.buf.length !== 0) return void this.fail(out, 'client sent data after STARTTLS before the reply');
          this.reply(out, option, REP_ACK);
          this.structured = false;
          this.selected = null;
          this.state = 'awaitTls';
          out.push({ type: 'startTls' });
          return;
        case OPT_INFO:
        case OPT_GO:
          return this.infoOrGo(out, option, data);
        case OPT_STRUCTURED_REPLY:
          if (data.length !== 0) return this.reply(out, option, REP_ERR_INVALID, 'NBD_OPT_STRUCTURED_REPLY takes no data');
          this.structured = true;
          return this.reply(out, option, REP_ACK);
        case OPT_LIST_META_CONTEXT:
        case OPT_SET_META_CONTEXT:
          return this.metaContext(out, option, data);
        default:
          return this.reply(out, option, REP_ERR_UNSUP, `option ${option} is not supported`);
      }
    } catch (err) {
      if (err instanceof NbdOptionFormatError) {
        if (option === OPT_SET_META_CONTEXT) this.selected = null;
        return this.reply(out, option, REP_ERR_INVALID, err.message);
      }
      throw err;
    }
  }

  private findExport(name: string): HandshakeExport | undefined {
    if (name === '') return this.config.exports.find((e) => e.name === '') ?? this.config.exports[0];
    return this.config.exports.find((e) => e.name === name);
  }

  private flagsFor(e: HandshakeExport): number {
    return this.structured ? e.flags | TFLAG_SEND_DF : e.flags;
  }

  private exportName(out: HandshakeAction[], data: Buffer): void {
    let name: string;
    try {
      name = new TextDecoder('utf-8', { fatal: true }).decode(data);
    } catch {
      return void this.fail(out, 'NBD_OPT_EXPORT_NAME name is not valid UTF-8');
    }
    const e = this.findExport(name);
    if (!e) return void this.fail(out, `NBD_OPT_EXPORT_NAME names unknown export "${name.slice(0, 256)}"`);
    const flags = this.flagsFor(e);
    out.push({ type: 'send', bytes: encodeExportNameReply(e.size, flags, this.noZeroes) });
    this.enter(out, e, flags);
  }

  private infoOrGo(out: HandshakeAction[], option: number, data: Buffer): void {
    const req = decodeInfoRequest(option, data);
    const e = this.findExport(req.name);
    if (!e) return this.reply(out, option, REP_ERR_UNKNOWN, `no export named "${req.name.slice(0, 256)}"`);
    const flags = this.flagsFor(e);
    out.push({ type: 'send', bytes: encodeInfoExport(option, e.size, flags) });
    if (req.infos.includes(INFO_NAME) || req.name !== e.name) out.push({ type: 'send', bytes: encodeInfoString(option, INFO_NAME, e.name) });
    if (req.infos.includes(INFO_DESCRIPTION) && e.description) out.push({ type: 'send', bytes: encodeInfoString(option, INFO_DESCRIPTION, e.description) });
    // Block sizes are always sent: our constraints are the defaults, so clients that did not ask lose nothing.
    out.push({ type: 'send', bytes: encodeInfoBlockSize(option, e.blockSizes) });
    this.reply(out, option, REP_ACK);
    if (option === OPT_GO) this.enter(out, e, flags);
  }

  private enter(out: HandshakeAction[], e: HandshakeExport, flags: number): void {
    const contexts = this.structured && this.selected && this.selected.exportName === e.name ? this.selected.contexts : [];
    this.state = 'done';
    out.push({ type: 'transmission', export: e, flags, structured: this.structured, contexts, rest: this.buf });
    this.buf = Buffer.alloc(0);
  }

  private metaContext(out: HandshakeAction[], option: number, data: Buffer): void {
    const mode = option === OPT_SET_META_CONTEXT ? 'set' : 'list';
    if (mode === 'set') this.selected = null;
    if (!this.structured) return this.reply(out, option, REP_ERR_INVALID, 'negotiate NBD_OPT_STRUCTURED_REPLY before meta contexts');
    const req = decodeMetaContextRequest(option, data);
    const e = this.findExport(req.exportName);
    if (!e) return this.reply(out, option, REP_ERR_UNKNOWN, `no export named "${req.exportName.slice(0, 256)}"`);
    for (const q of req.queries) {
      if (!/^[^:\s]+:/u.test(q)) return this.reply(out, option, REP_ERR_INVALID, `query "${q.slice(0, 256)}" does not start with a namespace and a colon`);
    }
    if (mode === 'set' && req.queries.length === 0) {
      this.selected = { exportName: e.name, contexts: [] };
      return this.reply(out, option, REP_ACK);
    }
    this.pendingMeta = { option, mode, exportName: e.name };
    this.state = 'awaitMeta';
    out.push({ type: 'resolveMeta', mode, exportName: e.name, queries: req.queries });
  }

  private finishMeta(out: HandshakeAction[], names: string[]): void {
    const p = this.pendingMeta!;
    this.pendingMeta = null;
    this.state = 'options';
    const unique = [...new Set(names)];
    if (p.mode === 'list') {
      for (const n of unique) out.push({ type: 'send', bytes: encodeMetaContextReply(p.option, 0, n) });
      return this.reply(out, p.option, REP_ACK);
    }
    if (unique.length > this.maxContexts) return this.reply(out, p.option, REP_ERR_TOO_BIG, `at most ${this.maxContexts} meta contexts can be selected`);
    const contexts = unique.map((name, i) => ({ id: i + 1, name }));
    for (const c of contexts) out.push({ type: 'send', bytes: encodeMetaContextReply(p.option, c.id, c.name) });
    this.selected = { exportName: p.exportName, contexts };
    this.reply(out, p.option, REP_ACK);
  }

  private reply(out: HandshakeAction[], option: number, type: number, message?: string): void {
    out.push({ type: 'send', bytes: encodeOptionReply(option, type, message ? Buffer.from(message, 'utf8') : undefined) });
  }

  private fail(out: HandshakeAction[], reason: string): HandshakeAction[] {
    this.state = 'done';
    this.buf = Buffer.alloc(0);
    out.push({ type: 'close', reason, violation: true });
    return out;
  }
}
