/**
 * The machine control socket `<machine dir>/runner.ctl`: how CLI processes ask a running machine's
 * runner (`tidemark vm run`) to fork or merge its disks while the guest runs.
 *
 * Protocol: JSON lines over a unix stream socket (mode 0600; a hashed abstract socket when the path is
 * too long), like the RCT control socket. Request `{"id":n,"op":"state"|"pause"|"resume"|"fork"|"merge",
 * ...args}`; response `{"id":n,"ok":true,"result":...}` or `{"id":n,"ok":false,"error":{"code","message",
 * "data","exitCode"}}`, rebuilt as a TidemarkError on the client. Requests of one connection are answered
 * in order. A connection's pauses end when it closes: a dead CLI never leaves a guest's I/O paused.
 */
import { createHash } from 'node:crypto';
import { chmod, unlink } from 'node:fs/promises';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { join, resolve } from 'node:path';
import { ExitCode, TidemarkError, UsageError } from '../errors.js';

const MAX_SUN_PATH = 107;

export function runnerSocketPath(machineDir: string): string {
  const p = join(resolve(machineDir), 'runner.ctl');
  if (Buffer.byteLength(p) <= MAX_SUN_PATH) return p;
  return `\0tidemark-runner-${createHash('sha256').update(resolve(machineDir)).digest('hex').slice(0, 40)}`;
}

/** One client connection, as the handler sees it: `onClose` callbacks run when it goes away. */
export interface RunnerConnection {
  onClose(fn: () => void): void;
}

export type RunnerHandler = (req: Record<string, unknown>, conn: RunnerConnection) => Promise<unknown>;

export interface RunnerControlServer {
  readonly path: string;
  close(): Promise<void>;
}

/** Listen on the machine's control socket (a stale socket file is replaced). */
export async function startRunnerControl(machineDir: string, handler: RunnerHandler): Promise<RunnerControlServer> {
  const path = runnerSocketPath(machineDir);
  const abstract = path.startsWith('\0');
  if (!abstract) await unlink(path).catch(() => undefined);
  const sockets = new Set<Socket>();
  const server: Server = createServer((sock) => {
    sockets.add(sock);
    const closers: Array<() => void> = [];
    const conn: RunnerConnection = { onClose: (fn) => closers.push(fn) };
    sock.on('close', () => {
      sockets.delete(sock);
      for (const f of closers.splice(0)) f();
    });
    sock.on('error', () => sock.destroy());
    let buf = '';
    let chain: Promise<unknown> = Promise.resolve();
    sock.setEncoding('utf8');
    sock.on('data', (chunk: string) => {
      buf += chunk;
      if (buf.length > 1 << 20) return sock.destroy();
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (!line.trim()) continue;
        chain = chain.then(async () => {
          const resp = await answer(line, handler, conn);
          if (sock.writable) sock.write(JSON.stringify(resp) + '\n');
        });
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

async function answer(line: string, handler: RunnerHandler, conn: RunnerConnection): Promise<unknown> {
  let id: unknown = null;
  try {
    const req = JSON.parse(line) as Record<string, unknown>;
    id = req.id ?? null;
    return { id, ok: true, result: (await handler(req, conn)) ?? {} };
  } catch (err) {
    const e = err instanceof TidemarkError ? err : err instanceof SyntaxError ? new UsageError(`runner request is not JSON: ${err.message}`) : new TidemarkError('E_INTERNAL', (err as Error)?.message ?? String(err));
    return { id, ok: false, error: { code: e.code, message: e.message, data: e.data, exitCode: e.exitCode } };
  }
}

/** A connection to a runner. `call` rejects with the runner's typed error or E_RUNNER_CONTROL. */
export interface RunnerClient {
  /** `timeoutMs` overrides the client's default for this call. */
  call<T = unknown>(op: string, args?: Record<string, unknown>, timeoutMs?: number): Promise<T>;
  close(): void;
}

/** The runner's reply when it has closed its disks (QEMU exited or it is stopping): treat the machine as off. */
export const E_RUNNER_STOPPED = 'E_RUNNER_STOPPED';

/**
 * Connect to the runner of the machine in `machineDir`. While `alive()` says the runner lives, a refused
 * connection is retried (the runner may still be starting) for up to `waitMs`; resolves null once
 * `alive()` is false. Each call times out after `timeoutMs` (default 10 min: a merge copies the child).
 */
export async function runnerClient(machineDir: string, alive: () => boolean, opts: { waitMs?: number; timeoutMs?: number } = {}): Promise<RunnerClient | null> {
  const path = runnerSocketPath(machineDir);
  const deadline = Date.now() + (opts.waitMs ?? 20_000);
  let sock: Socket | null = null;
  for (;;) {
    if (!alive()) return null;
    sock = await new Promise<Socket | null>((res) => {
      const s = connect(path);
      s.once('connect', () => res(s));
      s.once('error', () => res(null));
    });
    if (sock) break;
    if (Date.now() > deadline) {
      throw new TidemarkError('E_RUNNER_CONTROL', `the runner of ${machineDir} is alive but does not answer on ${path}; see ${join(machineDir, 'runner.log')}`, { machineDir }, ExitCode.IN_USE);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  const s = sock;
  s.setEncoding('utf8');
  let nextId = 1;
  let buf = '';
  const timeoutMs = opts.timeoutMs ?? 600_000;
  const pending = new Map<number, { res: (v: unknown) => void; rej: (e: unknown) => void; timer: NodeJS.Timeout }>();
  const failAll = (why: string) => {
    for (const [, p] of pending) {
      clearTimeout(p.timer);
      p.rej(new TidemarkError('E_RUNNER_CONTROL', `runner control socket ${path}: ${why}`, { machineDir }, ExitCode.IO));
    }
    pending.clear();
  };
  s.on('data', (chunk: string) => {
    buf += chunk;
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      let msg: { id: number; ok: boolean; result?: unknown; error?: { code: string; message: string; data: Record<string, unknown>; exitCode: number } };
      try {
        msg = JSON.parse(line);
      } catch {
        failAll('the runner sent a line that is not JSON');
        s.destroy();
        return;
      }
      const p = pending.get(msg.id);
      if (!p) continue;
      pending.delete(msg.id);
      clearTimeout(p.timer);
      if (msg.ok) p.res(msg.result);
      else {
        const e = msg.error!;
        p.rej(e.code === 'E_USAGE' ? new UsageError(e.message, e.data ?? {}) : new TidemarkError(e.code, e.message, e.data ?? {}, e.exitCode ?? ExitCode.INTERNAL));
      }
    }
  });
  s.on('error', () => failAll('connection failed'));
  s.on('close', () => failAll('the runner closed the connection (did it die?)'));
  return {
    call: <T>(op: string, args: Record<string, unknown> = {}, callTimeoutMs = timeoutMs) =>
      new Promise<T>((res, rej) => {
        if (s.destroyed) return rej(new TidemarkError('E_RUNNER_CONTROL', `runner control connection ${path} is closed`, { machineDir }, ExitCode.IO));
        const id = nextId++;
        const timer = setTimeout(() => {
          pending.delete(id);
          rej(new TidemarkError('E_RUNNER_CONTROL', `the runner did not answer "${op}" within ${callTimeoutMs} ms`, { machineDir }, ExitCode.IO));
        }, callTimeoutMs);
        pending.set(id, { res: res as (v: unknown) => void, rej, timer });
        s.write(JSON.stringify({ id, op, ...args }) + '\n');
      }),
    close: () => s.end(),
  };
}
