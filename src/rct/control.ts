/**
 * The control socket of a served disk: while a process (the NBD server) has a disk open with tracking,
 * it owns the tracker, and other processes (the CLI) seal, query and drop through `<disk>.ctl`.
 *
 * Protocol: JSON lines over a unix stream socket. Request `{"id":n,"op":"status"|"seal"|"changes"|
 * "changedIn"|"drop", ...args}`; response `{"id":n,"ok":true,"result":...}` or
 * `{"id":n,"ok":false,"error":{"code","message","data","exitCode"}}`. Errors are rebuilt as the same
 * typed errors on the client. Framing, id matching and error rebuild: src/util/jsonLineRpc.ts.
 */
import { createHash } from 'node:crypto';
import { resolve } from 'node:path';
import { ExitCode, InUseError, TidemarkError, UsageError } from '../errors.js';
import type { RctStatus } from './ChangeTracker.js';
import { TrackingInvalidError, TrackingNotEnabledError, UnknownRctIdError } from './errors.js';
import type { Range } from './Range.js';
import type { TrackedDevice } from './trackingLayer.js';
import { connectUnix, jsonLineClient, rebuildWireError, serveJsonLines, type WireError } from '../util/jsonLineRpc.js';

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
  }
  return serveJsonLines(path, (req) => dispatch(tracked, req), { what: 'control' });
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

/** Rebuild a typed error sent by the server (the RCT errors by code, others as rebuildWireError). */
function rebuild(e: WireError): TidemarkError {
  const d = e.data ?? {};
  if (e.code === 'E_RCT_INVALID') return new TrackingInvalidError(String(d.diskPath), String(d.reason), d);
  if (e.code === 'E_RCT_UNKNOWN_ID') return new UnknownRctIdError(String(d.diskPath), String(d.id), String(d.why));
  if (e.code === 'E_RCT_NOT_ENABLED') return new TrackingNotEnabledError(String(d.diskPath));
  return rebuildWireError(e);
}

/**
 * Connect to the disk's control socket. Resolves null when nobody serves the disk (no socket, or a
 * stale one). Each call rejects with the server's typed error, or a TidemarkError E_RCT_CONTROL when
 * the connection fails or the server does not answer within `timeoutMs`.
 */
export async function controlClient(diskPath: string, timeoutMs = 60_000): Promise<ControlClient | null> {
  const path = controlSocketPath(diskPath);
  const sock = await connectUnix(path);
  if (!sock) return null;
  const control = (why: string) => new TidemarkError('E_RCT_CONTROL', why, { diskPath }, ExitCode.IO);
  const rpc = jsonLineClient(sock, {
    timeoutMs,
    failed: (why) => control(`${diskPath}: control socket ${path}: ${why}`),
    notJsonWhy: 'the server sent a line that is not JSON',
    closedWhy: 'the server closed the connection',
    closed: () => control(`${diskPath}: control connection is closed`),
    timedOut: (op, ms) => control(`${diskPath}: the serving process did not answer "${op}" within ${ms} ms`),
    rebuild,
  });
  const call = (op: string, args: Record<string, unknown> = {}) => rpc.call(op, args);
  return {
    status: () => call('status') as Promise<RctStatus>,
    seal: async () => ((await call('seal')) as { id: string }).id,
    changes: (since, until) => call('changes', { since, until: until ?? null }) as Promise<Range[]>,
    changedIn: (since, offset, length) => call('changedIn', { since, offset, length }) as Promise<Range[]>,
    drop: async (id) => {
      await call('drop', { rctId: id });
    },
    close: () => rpc.close(),
  };
}
