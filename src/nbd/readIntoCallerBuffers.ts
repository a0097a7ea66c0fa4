/**
 * Switch an accepted plain `net.Socket` to Node's `onread` mode: each read lands in a buffer the caller
 * supplies (`next()`, asked again after every read) and is reported to `onRead(n, buffer)` instead of
 * being emitted as a freshly allocated 'data' chunk.
 *
 * Why: in the default mode Node allocates a new 64 KiB buffer for every socket read and pushes it
 * through the stream machinery; for an NBD server receiving WRITE payloads that is one allocation (and
 * external-memory GC pressure), one 'data' event and, for payloads spanning reads, one copy per 64 KiB.
 * Reading straight into the payload's own buffer removes all three, as qemu-nbd does.
 *
 * How: Node offers `onread` only as a constructor option, not for sockets a `net.Server` accepts. The
 * constructor merely stores the option under three internal symbols and calls `useUserBuffer` on the
 * handle; we do the same on the accepted socket. The symbols are found on a probe socket built with the
 * public option, so nothing is guessed: when this Node does not have them (or the handle lacks
 * `useUserBuffer`), this returns false and the caller keeps using 'data' events. `pause()`/`resume()`
 * keep working (Node's net.Socket handles `onread` sockets there); end of stream and errors are
 * reported as usual ('end', 'close', 'error').
 *
 * Contract: the buffer returned by `next()` must stay untouched by the caller until the next `onRead`
 * (or the socket closes): the kernel writes into it. `onRead` gets the number of bytes written at its
 * start.
 */
import * as net from 'node:net';

interface OnreadSymbols {
  buffer: symbol;
  callback: symbol;
  generator: symbol;
}

let symbols: OnreadSymbols | null | undefined;

function onreadSymbols(): OnreadSymbols | null {
  if (symbols !== undefined) return symbols;
  // `onread` is a documented net.Socket option that @types/node 20 only declares for connect().
  const opts = { onread: { buffer: () => Buffer.alloc(1), callback: () => true } } as net.SocketConstructorOpts;
  const probe = new net.Socket(opts);
  const own = Object.getOwnPropertySymbols(probe);
  const find = (name: string): symbol | undefined => own.find((s) => s.description === name);
  const buffer = find('kBuffer');
  const callback = find('kBufferCb');
  const generator = find('kBufferGen');
  const p = probe as unknown as Record<symbol, unknown>;
  // Only when the probe holds exactly what the public option stored: the mechanism is the one described.
  const ok = buffer && callback && generator && p[buffer] === true && typeof p[callback] === 'function' && typeof p[generator] === 'function';
  probe.destroy();
  symbols = ok ? { buffer: buffer!, callback: callback!, generator: generator! } : null;
  return symbols;
}

/** Returns false (and changes nothing) when the socket or this Node cannot do it. */
export function readIntoCallerBuffers(socket: net.Socket, next: () => Buffer, onRead: (n: number, buffer: Buffer) => void): boolean {
  const handle = (socket as unknown as { _handle?: { useUserBuffer?: (b: Uint8Array) => void } })._handle;
  const syms = onreadSymbols();
  if (!syms || !handle || typeof handle.useUserBuffer !== 'function' || socket.destroyed) return false;
  const first = next();
  const s = socket as unknown as Record<symbol, unknown>;
  s[syms.buffer] = first;
  s[syms.generator] = next;
  s[syms.callback] = (n: number, buffer: Buffer): void => onRead(n, buffer);
  handle.useUserBuffer(first);
  return true;
}
