/**
 * JSON-lines request/response over a unix stream socket, shared by the control sockets (RCT
 * `<disk>.ctl`, the runner's `runner.ctl`); each protocol keeps its own ops.
 *
 * Framing: one JSON object per `\n`-terminated line, UTF-8. Request `{"id":n,"op":...,...args}`; response
 * `{"id":n,"ok":true,"result":...}` or `{"id":n,"ok":false,"error":{"code","message","data","exitCode"}}`
 * (`id` null when the request was not JSON). A server drops a connection whose unterminated line
 * exceeds 1 MiB. Responses are matched to calls by `id`; a typed error is rebuilt on the client.
 */
import { chmod, unlink } from 'node:fs/promises';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { ExitCode, TidemarkError, UsageError } from '../errors.js';

/** A TidemarkError as sent on the wire. */
export interface WireError {
  code: string;
  message: string;
  data: Record<string, unknown>;
  exitCode: number;
}

/** One client connection, as a handler sees it: `onClose` callbacks run when it goes away. */
export interface JsonLineConnection {
  onClose(fn: () => void): void;
}

export type JsonLineHandler = (req: Record<string, unknown>, conn: JsonLineConnection) => Promise<unknown>;

export interface JsonLineServer {
  readonly path: string;
  /** Stop listening, end connections, remove the socket file. Idempotent. */
  close(): Promise<void>;
}

export interface JsonLineServerOptions {
  /** Names the protocol in the error answering a line that is not JSON (`<what> request is not JSON: ...`). */
  what: string;
  /** Answer a connection's requests one after another, in order (default: each as soon as it is handled). */
  inOrder?: boolean;
}

/**
 * Listen on `path` (a file socket, mode 0600, replacing a stale socket file; or a Linux abstract socket
 * when it starts with NUL) and answer each request line with `handler`'s result, or its error as a
 * WireError (a TidemarkError as is, a non-JSON line as UsageError, anything else as E_INTERNAL).
 */
export async function serveJsonLines(path: string, handler: JsonLineHandler, opts: JsonLineServerOptions): Promise<JsonLineServer> {
  const abstract = path.startsWith('\0');
  if (!abstract) await unlink(path).catch(() => undefined);
  const sockets = new Set<Socket>();
  const server: Server = createServer((sock) => {
    sockets.add(sock);
    const closers: Array<() => void> = [];
    const conn: JsonLineConnection = { onClose: (fn) => closers.push(fn) };
    sock.on('close', () => {
      sockets.delete(sock);
      for (const f of closers.splice(0)) f();
    });
    sock.on('error', () => sock.destroy());
    let buf = '';
    let chain: Promise<unknown> = Promise.resolve();
    const reply = async (line: string) => {
      const resp = await answer(line, handler, conn, opts.what);
      if (sock.writable) sock.write(JSON.stringify(resp) + '\n');
    };
    sock.setEncoding('utf8');
    sock.on('data', (chunk: string) => {
      buf += chunk;
      if (buf.length > 1 << 20) return sock.destroy();
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (!line.trim()) continue;
        if (opts.inOrder) chain = chain.then(() => reply(line));
        else void reply(line);
      }
    });
  });
  await new Promise<void>((res, rej) => {
    server.once('error', rej);
    server.listen(path, () => {
      server.off('error', rej);
      res();
    });
  });
  if (!abstract) await chmod(path, 0o600);
  let closing: Promise<void> | undefined;
  return {
    path,
    close() {
      closing ??= (async () => {
        for (const s of sockets) s.destroy();
        await new Promise<void>((r) => server.close(() => r()));
        if (!abstract) await unlink(path).catch(() => undefined);
      })();
      return closing;
    },
  };
}

async function answer(line: string, handler: JsonLineHandler, conn: JsonLineConnection, what: string): Promise<unknown> {
  let id: unknown = null;
  try {
    const req = JSON.parse(line) as Record<string, unknown>;
    id = req.id ?? null;
    return { id, ok: true, result: await handler(req, conn) };
  } catch (err) {
    const e = err instanceof TidemarkError ? err : err instanceof SyntaxError ? new UsageError(`${what} request is not JSON: ${err.message}`) : new TidemarkError('E_INTERNAL', (err as Error)?.message ?? String(err));
    return { id, ok: false, error: { code: e.code, message: e.message, data: e.data, exitCode: e.exitCode } };
  }
}

/** Connect to the socket at `path`; null when nobody listens (no socket, or a stale one). */
export function connectUnix(path: string): Promise<Socket | null> {
  return new Promise<Socket | null>((res) => {
    const s = connect(path);
    s.once('connect', () => res(s));
    s.once('error', () => res(null));
  });
}

/** The generic rebuild of a WireError: E_USAGE as UsageError, any other code as a TidemarkError with it. */
export function rebuildWireError(e: WireError): TidemarkError {
  const d = e.data ?? {};
  if (e.code === 'E_USAGE') return new UsageError(e.message, d);
  return new TidemarkError(e.code, e.message, d, e.exitCode ?? ExitCode.INTERNAL);
}

export interface JsonLineClientOptions {
  /** Default time a call waits for its answer. */
  timeoutMs: number;
  /** The error every pending call rejects with when the connection fails; `why` says what happened. */
  failed(why: string): TidemarkError;
  /** `why` texts: the peer sent a line that is not JSON / closed the connection. */
  notJsonWhy: string;
  closedWhy: string;
  /** The error of a call made once the connection is closed. */
  closed(): TidemarkError;
  /** The error of a call not answered within `ms`. */
  timedOut(op: string, ms: number): TidemarkError;
  /** Rebuild the peer's error (default rebuildWireError). */
  rebuild?(e: WireError): TidemarkError;
}

export interface JsonLineClient {
  /** Send `{id, op, ...args}`; resolves the result, or rejects with the rebuilt error or an `opts` error. */
  call(op: string, args?: Record<string, unknown>, timeoutMs?: number): Promise<unknown>;
  /** End the connection (pending calls then fail with `failed(closedWhy)`). */
  close(): void;
}

/** Make `sock` (connected) a client. A line that is not JSON fails every pending call and destroys it. */
export function jsonLineClient(sock: Socket, opts: JsonLineClientOptions): JsonLineClient {
  const rebuild = opts.rebuild ?? rebuildWireError;
  sock.setEncoding('utf8');
  let nextId = 1;
  let buf = '';
  const pending = new Map<number, { res: (v: unknown) => void; rej: (e: unknown) => void; timer: NodeJS.Timeout }>();
  const failAll = (why: string) => {
    for (const [, p] of pending) {
      clearTimeout(p.timer);
      p.rej(opts.failed(why));
    }
    pending.clear();
  };
  sock.on('data', (chunk: string) => {
    buf += chunk;
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      let msg: { id: number; ok: boolean; result?: unknown; error?: WireError };
      try {
        msg = JSON.parse(line);
      } catch {
        failAll(opts.notJsonWhy);
        sock.destroy();
        return;
      }
      const p = pending.get(msg.id);
      if (!p) continue;
      pending.delete(msg.id);
      clearTimeout(p.timer);
      if (msg.ok) p.res(msg.result);
      else p.rej(rebuild(msg.error!));
    }
  });
  sock.on('error', () => failAll('connection failed'));
  sock.on('close', () => failAll(opts.closedWhy));
  return {
    call: (op, args = {}, timeoutMs = opts.timeoutMs) =>
      new Promise<unknown>((res, rej) => {
        if (sock.destroyed) return rej(opts.closed());
        const id = nextId++;
        const timer = setTimeout(() => {
          pending.delete(id);
          rej(opts.timedOut(op, timeoutMs));
        }, timeoutMs);
        pending.set(id, { res, rej, timer });
        sock.write(JSON.stringify({ id, op, ...args }) + '\n');
      }),
    close: () => sock.end(),
  };
}
