/**
 * A client of the QEMU guest agent (qemu-ga) over the unix socket QEMU exposes for the machine's
 * virtio-serial port `org.qemu.guest_agent.0` (see `guestAgentSocket`, wired in `qemuCommandLine`).
 *
 * How this works: `connect` opens the socket and synchronises: it sends a 0xFF byte (the agent drops
 * any partial JSON a previous client left) and `guest-sync-delimited` with a random id; the agent
 * answers with 0xFF then `{"return": id}`; every answer before that is stale and ignored (an agent so
 * old that it lacks `guest-sync-delimited` gets `guest-sync`). Then commands run one at a time, each
 * with a timeout. A timed-out command leaves the stream out of step (its answer may still come), so
 * the next command re-synchronises first. QEMU's socket chardev serves one client at a time: while a
 * GuestAgent is connected, another process's `connect` times out (GuestAgentNotRespondingError).
 */
import { randomInt } from 'node:crypto';
import { createConnection, type Socket } from 'node:net';
import { join } from 'node:path';
import { GuestAgentAbsentError, GuestAgentCommandError, GuestAgentNotRespondingError } from './guestAgentErrors.js';
import { QgaDecoder, encodeQgaCommand, interpretQgaMessage, type QgaAnswer, type QgaEvent } from './QgaDecoder.js';

/** The guest agent socket of a machine: `<machine dir>/qga.sock` (QEMU listens there while it runs). */
export function guestAgentSocket(machineDir: string): string {
  return join(machineDir, 'qga.sock');
}

export type FsfreezeStatus = 'thawed' | 'frozen';

export interface GuestAgentOptions {
  /** Timeout of the connection and the synchronisation handshake (default 5000 ms). */
  timeoutMs?: number;
}

/** Default timeout of a command (freeze syncs the guest's filesystems first, which can take a while). */
const COMMAND_TIMEOUT_MS = 60_000;

export class GuestAgent {
  private readonly decoder = new QgaDecoder();
  /** The consumer of decoded events while a command or handshake waits; events without one are stale. */
  private waiter: ((ev: QgaEvent) => void) | undefined;
  private closedReason: string | undefined;
  private onClosed: ((reason: string) => void) | undefined;
  private needsSync = true;
  private queue: Promise<unknown> = Promise.resolve();

  private constructor(private readonly sock: Socket, readonly socketPath: string) {
    sock.on('data', (chunk: Buffer) => {
      for (const ev of this.decoder.push(chunk)) this.waiter?.(ev);
    });
    const closed = (reason: string) => {
      if (this.closedReason !== undefined) return;
      this.closedReason = reason;
      this.onClosed?.(reason);
    };
    sock.on('error', (err) => closed(err.message));
    sock.on('close', () => closed('connection closed'));
  }

  /**
   * Connect to the agent behind `socketPath` and synchronise. Throws GuestAgentAbsentError (no socket,
   * nobody listening) or GuestAgentNotRespondingError (QEMU listens but no agent answers in time).
   */
  static async connect(socketPath: string, opts: GuestAgentOptions = {}): Promise<GuestAgent> {
    const timeoutMs = opts.timeoutMs ?? 5000;
    const agent = await new Promise<GuestAgent>((resolve, reject) => {
      const s = createConnection({ path: socketPath });
      const timer = setTimeout(() => {
        s.destroy();
        reject(new GuestAgentNotRespondingError(socketPath, 'connect', `no connection within ${timeoutMs} ms`));
      }, timeoutMs);
      s.once('connect', () => {
        clearTimeout(timer);
        s.removeAllListeners('error');
        resolve(new GuestAgent(s, socketPath)); // its listeners attach now: no error goes unheard
      });
      s.once('error', (err: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        reject(err.code === 'ENOENT' || err.code === 'ECONNREFUSED' || err.code === 'ENOTSOCK'
          ? new GuestAgentAbsentError(socketPath, err.code === 'ENOENT' ? 'no such socket' : err.code === 'ENOTSOCK' ? 'not a socket' : 'nobody listens')
          : new GuestAgentNotRespondingError(socketPath, 'connect', err.message));
      });
    });
    try {
      await agent.serial(() => agent.sync(timeoutMs));
      return agent;
    } catch (err) {
      await agent.close();
      throw err;
    }
  }

  /** Run `command` with `args`; resolves with its return value. Throws GuestAgentCommandError / GuestAgentNotRespondingError. */
  execute<T = unknown>(command: string, args?: Record<string, unknown>, timeoutMs = COMMAND_TIMEOUT_MS): Promise<T> {
    return this.serial(async () => {
      if (this.needsSync) await this.sync(Math.min(timeoutMs, 10_000));
      const answer = await this.request(command, args, timeoutMs, (a) => a);
      if (!answer.ok) throw new GuestAgentCommandError(this.socketPath, command, answer.errorClass, answer.desc);
      return answer.value as T;
    });
  }

  /** `guest-ping`: resolves when the agent answers. */
  async ping(timeoutMs?: number): Promise<void> {
    await this.execute('guest-ping', undefined, timeoutMs);
  }

  /** `guest-fsfreeze-status`: as the agent knows it (a freeze made by another guest process is not seen). */
  async fsfreezeStatus(timeoutMs?: number): Promise<FsfreezeStatus> {
    const v = await this.execute<unknown>('guest-fsfreeze-status', undefined, timeoutMs);
    if (v !== 'thawed' && v !== 'frozen') throw new GuestAgentCommandError(this.socketPath, 'guest-fsfreeze-status', 'BadAnswer', `unexpected status ${JSON.stringify(v)}`);
    return v;
  }

  /**
   * `guest-fsfreeze-freeze`: sync and freeze every freezable local filesystem of the guest; resolves
   * with how many were frozen. On failure the agent thaws what it froze. The freeze has no timeout in
   * the guest: call `fsfreezeThaw` (always, once this resolved).
   */
  async fsfreezeFreeze(timeoutMs?: number): Promise<number> {
    return count(await this.execute<unknown>('guest-fsfreeze-freeze', undefined, timeoutMs), this.socketPath, 'guest-fsfreeze-freeze');
  }

  /** `guest-fsfreeze-thaw`: resolves with how many filesystems were thawed (0 when none was frozen). */
  async fsfreezeThaw(timeoutMs?: number): Promise<number> {
    return count(await this.execute<unknown>('guest-fsfreeze-thaw', undefined, timeoutMs), this.socketPath, 'guest-fsfreeze-thaw');
  }

  /** Close the connection (idempotent). */
  async close(): Promise<void> {
    if (this.closedReason !== undefined) return;
    await new Promise<void>((resolve) => {
      this.sock.once('close', () => resolve());
      this.sock.end();
      setTimeout(() => {
        this.sock.destroy();
        resolve();
      }, 1000).unref();
    });
  }

  /** Commands never overlap: the agent answers in order and a waiter consumes the next answer. */
  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.queue.then(fn, fn);
    this.queue = p.catch(() => undefined);
    return p;
  }

  /** Handshake: 0xFF, guest-sync-delimited {id}; ignore everything until {"return": id}. */
  private async sync(timeoutMs: number): Promise<void> {
    const id = randomInt(1, 2 ** 47);
    this.needsSync = true;
    let fallbackSent = false;
    await this.wait('guest-sync-delimited', timeoutMs, (ev, done) => {
      if (ev.type !== 'message') return;
      const a = interpretQgaMessage(ev.value);
      if (a?.ok && a.value === id) done(undefined);
      else if (a && !a.ok && a.errorClass === 'CommandNotFound' && !fallbackSent) {
        fallbackSent = true; // an agent older than guest-sync-delimited (QEMU < 1.1)
        this.sock.write(encodeQgaCommand('guest-sync', { id }));
      }
    }, () => {
      this.sock.write(Buffer.from([0xff]));
      this.sock.write(encodeQgaCommand('guest-sync-delimited', { id }));
    });
    this.needsSync = false;
  }

  private async request<R>(command: string, args: Record<string, unknown> | undefined, timeoutMs: number, map: (a: QgaAnswer) => R): Promise<R> {
    return this.wait<R>(command, timeoutMs, (ev, done) => {
      if (ev.type !== 'message') return;
      const a = interpretQgaMessage(ev.value);
      if (a) done(map(a));
    }, () => this.sock.write(encodeQgaCommand(command, args)));
  }

  /** Send with `send`, feed events to `onEvent` until it calls done; time out or fail on close. */
  private wait<R>(command: string, timeoutMs: number, onEvent: (ev: QgaEvent, done: (v: R) => void) => void, send: () => void): Promise<R> {
    return new Promise<R>((resolve, reject) => {
      const finish = (err: Error | undefined, v?: R) => {
        clearTimeout(timer);
        this.waiter = undefined;
        this.onClosed = undefined;
        if (err) reject(err);
        else resolve(v as R);
      };
      if (this.closedReason !== undefined) {
        reject(new GuestAgentNotRespondingError(this.socketPath, command, this.closedReason));
        return;
      }
      const timer = setTimeout(() => {
        this.needsSync = true; // the answer may still arrive: re-synchronise before the next command
        finish(new GuestAgentNotRespondingError(this.socketPath, command, `no answer within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiter = (ev) => onEvent(ev, (v) => finish(undefined, v));
      this.onClosed = (reason) => finish(new GuestAgentNotRespondingError(this.socketPath, command, reason));
      send();
    });
  }
}

function count(v: unknown, socket: string, command: string): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) throw new GuestAgentCommandError(socket, command, 'BadAnswer', `expected a count, got ${JSON.stringify(v)}`);
  return v;
}
