/**
 * Incremental, pure parser of the transmission-phase byte stream: push socket chunks in, take requests
 * out. Many requests per chunk and requests split across chunks are both handled.
 *
 * A WRITE payload that sits inside one pushed chunk is returned as a view of it (no copy) unless
 * `reuseChunks()` was called; one spanning chunks is assembled once into its own buffer, and while it is
 * being assembled `payloadWindow()` offers the rest of that buffer so the next socket read can land in it
 * directly (no copy at all). A WRITE whose length exceeds `maxPayload` is not buffered:
 * up to `maxSkip` bytes are discarded as they arrive and a 'skipped' item lets the session answer with an
 * error; anything larger cannot be skipped sanely and is 'fatal' (the session disconnects).
 */
import { decodeRequestHeader, type RequestHeader } from './transmissionCodec.js';
import { CMD_WRITE, MAX_PAYLOAD, REQUEST_HEADER_SIZE } from './protocol.js';

export type ParsedItem =
  /** `pooled`: the buffer from `allocate` that `payload` views, to be given back once the request is done. */
  | { kind: 'request'; header: RequestHeader; payload: Buffer | null; pooled?: Buffer }
  | { kind: 'skipped'; header: RequestHeader }
  | { kind: 'fatal'; reason: string };

export interface RequestParserOptions {
  maxPayload?: number;
  maxSkip?: number;
  /** Where to assemble payloads that span chunks (a buffer of at least n bytes; default: a fresh one). */
  allocate?: (n: number) => Buffer;
}

export class RequestParser {
  private chunks: Buffer[] = [];
  private head = 0; // read position inside chunks[0]
  private avail = 0;
  private state: 'header' | 'payload' | 'skip' | 'dead' = 'header';
  private pending: RequestHeader | null = null;
  private payload: Buffer | null = null;
  private pooled: Buffer | undefined;
  private payloadPos = 0;
  private skipRemaining = 0;
  private readonly maxPayload: number;
  private readonly maxSkip: number;
  private readonly allocate: ((n: number) => Buffer) | undefined;
  private copyPayloads = false;

  constructor(opts: RequestParserOptions = {}) {
    this.maxPayload = opts.maxPayload ?? MAX_PAYLOAD;
    this.maxSkip = opts.maxSkip ?? 2 * this.maxPayload;
    this.allocate = opts.allocate;
  }

  /** Bytes received but not yet consumed. */
  get buffered(): number {
    return this.avail;
  }

  push(chunk: Buffer): void {
    if (chunk.length === 0 || this.state === 'dead') return;
    this.chunks.push(chunk);
    this.avail += chunk.length;
  }

  /** The next complete item, or null when more bytes are needed. After 'fatal' it always returns null. */
  next(): ParsedItem | null {
    for (;;) {
      switch (this.state) {
        case 'dead':
          return null;
        case 'header': {
          if (this.avail < REQUEST_HEADER_SIZE) return null;
          const first = this.chunks[0]!;
          let h: RequestHeader;
          if (first.length - this.head >= REQUEST_HEADER_SIZE) {
            h = decodeRequestHeader(first, this.head);
            this.consume(REQUEST_HEADER_SIZE);
          } else {
            const tmp = Buffer.allocUnsafe(REQUEST_HEADER_SIZE);
            this.copyOut(tmp, 0, REQUEST_HEADER_SIZE);
            h = decodeRequestHeader(tmp, 0);
          }
          if (!h.magicOk) return this.die('request does not start with NBD_REQUEST_MAGIC');
          if (h.type !== CMD_WRITE || h.length === 0) return { kind: 'request', header: h, payload: h.type === CMD_WRITE ? Buffer.alloc(0) : null };
          if (h.length > this.maxPayload) {
            if (h.length > this.maxSkip) return this.die(`WRITE payload of ${h.length} bytes is too large to skip`);
            this.pending = h;
            this.skipRemaining = h.length;
            this.state = 'skip';
            continue;
          }
          const c = this.chunks[0];
          if (!this.copyPayloads && c && c.length - this.head >= h.length) {
            const payload = c.subarray(this.head, this.head + h.length);
            this.consume(h.length);
            return { kind: 'request', header: h, payload };
          }
          this.pending = h;
          if (this.allocate) {
            this.pooled = this.allocate(h.length);
            this.payload = this.pooled.subarray(0, h.length);
          } else {
            this.pooled = undefined;
            this.payload = Buffer.allocUnsafe(h.length);
          }
          this.payloadPos = 0;
          this.state = 'payload';
          continue;
        }
        case 'payload': {
          const p = this.payload!;
          const n = Math.min(this.avail, p.length - this.payloadPos);
          this.copyOut(p, this.payloadPos, n);
          this.payloadPos += n;
          if (this.payloadPos < p.length) return null;
          const header = this.pending!;
          const pooled = this.pooled;
          this.pending = null;
          this.payload = null;
          this.pooled = undefined;
          this.state = 'header';
          return pooled ? { kind: 'request', header, payload: p, pooled } : { kind: 'request', header, payload: p };
        }
        case 'skip': {
          const n = Math.min(this.avail, this.skipRemaining);
          this.consume(n);
          this.skipRemaining -= n;
          if (this.skipRemaining > 0) return null;
          const header = this.pending!;
          this.pending = null;
          this.state = 'header';
          return { kind: 'skipped', header };
        }
      }
    }
  }

  /**
   * From now on the caller may overwrite a pushed chunk once `next()` has returned null and `detach()` has
   * been called: payloads are then always copied into buffers of their own, never views of chunks.
   */
  reuseChunks(): void {
    this.copyPayloads = true;
  }

  /**
   * While a payload is being assembled and no unparsed bytes are buffered: the rest of its buffer. The
   * caller may read socket bytes straight into it (they are the payload's next bytes) and must then call
   * `filled(n)`. Null otherwise.
   */
  payloadWindow(): Buffer | null {
    if (this.state !== 'payload' || this.avail > 0) return null;
    return this.payload!.subarray(this.payloadPos);
  }

  /** `n` bytes were written at the start of the last `payloadWindow()`. */
  filled(n: number): void {
    if (this.state !== 'payload' || this.avail > 0 || n > this.payload!.length - this.payloadPos) throw new RangeError('filled() without a matching payloadWindow()');
    this.payloadPos += n;
  }

  /** Copy the buffered, unparsed bytes (normally a partial header) into a buffer of their own, so that no pushed chunk is referenced any more. */
  detach(): void {
    if (this.avail === 0) {
      this.chunks = [];
      this.head = 0;
      return;
    }
    const b = Buffer.allocUnsafe(this.avail);
    let p = 0;
    for (let i = 0; i < this.chunks.length; i++) {
      const c = this.chunks[i]!;
      p += c.copy(b, p, i === 0 ? this.head : 0);
    }
    this.chunks = [b];
    this.head = 0;
  }

  private die(reason: string): ParsedItem {
    this.state = 'dead';
    this.chunks = [];
    this.avail = 0;
    this.head = 0;
    return { kind: 'fatal', reason };
  }

  /** Drop n bytes from the front. */
  private consume(n: number): void {
    this.avail -= n;
    while (n > 0) {
      const c = this.chunks[0]!;
      const left = c.length - this.head;
      if (n < left) {
        this.head += n;
        return;
      }
      n -= left;
      this.chunks.shift();
      this.head = 0;
    }
    if (this.chunks.length > 0 && this.head === this.chunks[0]!.length) {
      this.chunks.shift();
      this.head = 0;
    }
  }

  /** Copy n bytes from the front into dst at pos, consuming them. */
  private copyOut(dst: Buffer, pos: number, n: number): void {
    let done = 0;
    while (done < n) {
      const c = this.chunks[0]!;
      const take = Math.min(c.length - this.head, n - done);
      c.copy(dst, pos + done, this.head, this.head + take);
      done += take;
      this.avail -= take;
      this.head += take;
      if (this.head === c.length) {
        this.chunks.shift();
        this.head = 0;
      }
    }
  }
}
