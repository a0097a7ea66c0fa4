/**
 * The control socket of a served disk: while a process (the NBD server) has a disk open with tracking,
 * it owns the tracker, and other processes (the CLI) seal, query and drop through `<disk>.ctl`.
 *
 * Protocol: JSON lines over a unix stream socket. Request `{"id":n,"op":"status"|"seal"|"changes"|
 * "changedIn"|"drop", ...args}`; response `{"id":n,"ok":true,"result":...}` or
 * `{"id":n,"ok":false,"error":{"code","message","data","exitCode"}}`. Errors are rebuilt as the same
 * typed errors on the client.
 */
import { createHash } from 'node:crypto';
import { chmod, unlink } from 'node:fs/promises';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { resolve } from 'node:path';
import { ExitCode, InUseError, TidemarkError, UsageError } from '../errors.js';
import type { RctStatus } from './ChangeTracker.js';
import { TrackingInvalidError, TrackingNotEnabledError, UnknownRctIdError } from './errors.js';
import type { Range } from './Range.js';
import type { TrackedDevice } from './trackingLayer.js';

/** Longest unix socket path Linux accepts (sun_path is 108 bytes with the NUL). */
const MAX_SUN_PATH = 107;

/** `<disk>.ctl`, or (for paths too long for a unix socket) a Linux abstract socket named by the path's hash. */
export function controlSocketPath(diskPath: string): string {
  const p = `${resolve(diskPath)}.ctl`;
  if (Buffer.byteLength(p) <= MAX_SUN_PATH) return p;
  return `\0tidemark-ctl-${createHash('sha256').update(resolve(diskPath)).digest('hex').slice(0, 40)}`;
}

export interface ControlServer {
  readonly path: string;
  /** Stop listening, end connections, remove the socket file. Idempotent. */
  close(): Promise<void>;
}

/**
 * Serve `tracked` on the disk's control socket. Throws InUseError when another process already serves
 * it; a stale socket file (its server died) is replaced.
 */
export async function startControlServer(diskPath: string, tracked: TrackedDevice): Promise<ControlServer> {
  const path = controlSocketPath(diskPath);
  const abstract = path.startsWith('\0');
  if (!abstract) {
    const other = await controlClient(diskPath);
    if (other) {
      other.close();
      throw new InUseError(diskPath, `another process serving ${path}`);
    }
    await unlink(path).catch(() => undefined);
  }
  const sockets = new Set<Socket>();
  const server: Server = createServer((sock) => {
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
    sock.on('error', () => sock.destroy());
    let buf = '';
    sock.setEncoding('utf8');
    sock.on('data', (chunk: string) => {
      buf += chunk;
      if (buf.length > 1 << 20) return sock.destroy();
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (line.trim()) void handle(line).then((resp) => sock.writable && sock.write(JSON.stringify(resp) + '\n'));
      }
    });
  });
  const handle = async (line: string): Promise<unknown> => {
    let id: unknown = null;
    try {
      const req = JSON.parse(line) as Record<string, unknown>;
      id = req.id ?? null;
      return { id, ok: true, result: await dispatch(tracked, req) };
    } catch (err) {
      const e = err instanceof TidemarkError ? err : err instanceof SyntaxError ? new UsageError(`control request is not JSON: ${err.message}`) : new TidemarkError('E_INTERNAL', (err as Error)?.message ?? String(err));
      return { id, ok: false, error: { code: e.code, message: e.message, data: e.data, exitCode: e.exitCode } };
    }
  };
  await new Promise<void>((res, rej) => {
    server.once('error', rej);
    server.listen(path, () => {
      server.off('error', rej);
      res();
    });
  });
  if (!abstract) await chmod(path, 0o600);
  let closing: Promise<void> | null = null;
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

const str = (v: unknown, what: string): string => {
  if (typeof v !== 'string') throw new UsageError(`control request: "${what}" must be a string`);
  return v;
};
const num = (v: unknown, what: string): number => {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw new UsageError(`control request: "${what}" must be a non-negative integer`);
  return v;
};

async function dispatch(t: TrackedDevice, req: Record<string, unknown>): Promise<unknown> {
  switch (req.op) {
    case 'status':
      return t.status();
    case 'seal':
      return { id: await t.seal() };
    case 'changes':
      return t.changes(str(req.since, 'since'), req.until === undefined || req.until === null ? undefined : str(req.until, 'until'));
    case 'changedIn':
      return t.changedIn(str(req.since, 'since'), num(req.offset, 'offset'), num(req.length, 'length'));
    case 'drop':
      await t.drop(str(req.rctId, 'rctId'));
      return {};
    default:
      throw new UsageError(`control request: unknown op ${JSON.stringify(req.op)}`);
  }
}

/** The tracker operations, answered by the process that serves the disk. */
export interface ControlClient {
  status(): Promise<RctStatus>;
  seal(): Promise<string>;
  changes(since: string, until?: string): Promise<Range[]>;
  changedIn(since: string, offset: number, length: number): Promise<Range[]>;
  drop(id: string): Promise<void>;
  close(): void;
}

/** Rebuild a typed error sent by the server. */
function rebuild(e: { code: string; message: string; data: Record<string, unknown>; exitCode: number }): TidemarkError {
  const d = e.data ?? {};
  if (e.code === 'E_RCT_INVALID') return new TrackingInvalidError(String(d.diskPath), String(d.reason), d);
  if (e.code === 'E_RCT_UNKNOWN_ID') return new UnknownRctIdError(String(d.diskPath), String(d.id), String(d.why));
  if (e.code === 'E_RCT_NOT_ENABLED') return new TrackingNotEnabledError(String(d.diskPath));
  if (e.code === 'E_USAGE') return new UsageError(e.message, d);
  return new TidemarkError(e.code, e.message, d, e.exitCode ?? ExitCode.INTERNAL);
}

/**
 * Connect to the disk's control socket. Resolves null when nobody serves the disk (no socket, or a
 * stale one). Each call rejects with the server's typed error, or a TidemarkError E_RCT_CONTROL when
 * the connection fails or the server does not answer within `timeoutMs`.
 */
export async function controlClient(diskPath: string, timeoutMs = 60_000): Promise<ControlClient | null> {
  const path = controlSocketPath(diskPath);
  const sock = await new Promise<Socket | null>((res) => {
    const s = connect(path);
    s.once('connect', () => res(s));
    s.once('error', () => res(null));
  });
  if (!sock) return null;
  sock.setEncoding('utf8');
  let nextId = 1;
  let buf = '';
  const pending = new Map<number, { res: (v: unknown) => void; rej: (e: unknown) => void; timer: NodeJS.Timeout }>();
  const failAll = (why: string) => {
    for (const [, p] of pending) {
      clearTimeout(p.timer);
      p.rej(new TidemarkError('E_RCT_CONTROL', `${diskPath}: control socket ${path}: ${why}`, { diskPath }, ExitCode.IO));
    }
    pending.clear();
  };
  sock.on('data', (chunk: string) => {
    buf += chunk;
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      let msg: { id: number; ok: boolean; result?: unknown; error?: { code: string; message: string; data: Record<string, unknown>; exitCode: number } };
      try {
        msg = JSON.parse(line);
      } catch {
        failAll('the server sent a line that is not JSON');
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
  sock.on('close', () => failAll('the server closed the connection'));
  const call = (op: string, args: Record<string, unknown> = {}) =>
    new Promise<unknown>((res, rej) => {
      if (sock.destroyed) return rej(new TidemarkError('E_RCT_CONTROL', `${diskPath}: control connection is closed`, { diskPath }, ExitCode.IO));
      const id = nextId++;
      const timer = setTimeout(() => {
        pending.delete(id);
        rej(new TidemarkError('E_RCT_CONTROL', `${diskPath}: the serving process did not answer "${op}" within ${timeoutMs} ms`, { diskPath }, ExitCode.IO));
      }, timeoutMs);
      pending.set(id, { res, rej, timer });
      sock.write(JSON.stringify({ id, op, ...args }) + '\n');
    });
  return {
    status: () => call('status') as Promise<RctStatus>,
    seal: async () => ((await call('seal')) as { id: string }).id,
    changes: (since, until) => call('changes', { since, until: until ?? null }) as Promise<Range[]>,
    changedIn: (since, offset, length) => call('changedIn', { since, offset, length }) as Promise<Range[]>,
    drop: async (id) => {
      await call('drop', { rctId: id });
    },
    close: () => sock.end(),
  };
}
