/**
 * The machine control socket `<machine dir>/runner.ctl`: how CLI processes ask a running machine's
 * runner (`tidemark vm run`) to fork or merge its disks while the guest runs.
 *
 * Protocol: JSON lines over a unix stream socket (mode 0600; a hashed abstract socket when the path is
 * too long), like the RCT control socket (framing, id matching, error rebuild: src/util/jsonLineRpc.ts).
 * Request `{"id":n,"op":"state"|"pause"|"resume"|"fork"|"merge", ...args}`; response `{"id":n,"ok":true,"result":...}` or `{"id":n,"ok":false,"error":{"code","message",
 * "data","exitCode"}}`, rebuilt as a TidemarkError on the client. Requests of one connection are answered
 * in order. A connection's pauses end when it closes: a dead CLI never leaves a guest's I/O paused.
 */
import { createHash } from 'node:crypto';
import type { Socket } from 'node:net';
import { join, resolve } from 'node:path';
import { ExitCode, TidemarkError } from '../errors.js';
import { connectUnix, jsonLineClient, serveJsonLines, type JsonLineConnection } from '../util/jsonLineRpc.js';

const MAX_SUN_PATH = 107;

export function runnerSocketPath(machineDir: string): string {
  const p = join(resolve(machineDir), 'runner.ctl');
  if (Buffer.byteLength(p) <= MAX_SUN_PATH) return p;
  return `\0tidemark-runner-${createHash('sha256').update(resolve(machineDir)).digest('hex').slice(0, 40)}`;
}

/** One client connection, as the handler sees it: `onClose` callbacks run when it goes away. */
export type RunnerConnection = JsonLineConnection;

export type RunnerHandler = (req: Record<string, unknown>, conn: RunnerConnection) => Promise<unknown>;

export interface RunnerControlServer {
  readonly path: string;
  close(): Promise<void>;
}

/** Listen on the machine's control socket (a stale socket file is replaced). */
export async function startRunnerControl(machineDir: string, handler: RunnerHandler): Promise<RunnerControlServer> {
  return serveJsonLines(runnerSocketPath(machineDir), async (req, conn) => (await handler(req, conn)) ?? {}, { what: 'runner', inOrder: true });
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
    sock = await connectUnix(path);
    if (sock) break;
    if (Date.now() > deadline) {
      throw new TidemarkError('E_RUNNER_CONTROL', `the runner of ${machineDir} is alive but does not answer on ${path}; see ${join(machineDir, 'runner.log')}`, { machineDir }, ExitCode.IN_USE);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  const control = (why: string) => new TidemarkError('E_RUNNER_CONTROL', why, { machineDir }, ExitCode.IO);
  const rpc = jsonLineClient(sock, {
    timeoutMs: opts.timeoutMs ?? 600_000,
    failed: (why) => control(`runner control socket ${path}: ${why}`),
    notJsonWhy: 'the runner sent a line that is not JSON',
    closedWhy: 'the runner closed the connection (did it die?)',
    closed: () => control(`runner control connection ${path} is closed`),
    timedOut: (op, ms) => control(`the runner did not answer "${op}" within ${ms} ms`),
  });
  return {
    call: <T>(op: string, args: Record<string, unknown> = {}, callTimeoutMs?: number) => rpc.call(op, args, callTimeoutMs) as Promise<T>,
    close: () => rpc.close(),
  };
}
