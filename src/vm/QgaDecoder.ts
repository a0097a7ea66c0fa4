/**
 * Framing of the QEMU guest agent wire protocol (pure: bytes in, events out, no I/O).
 *
 * The agent answers each command with one JSON object (`{"return": …}` or `{"error": {"class",
 * "desc"}}`), normally followed by a newline, but nothing guarantees line boundaries, so objects are
 * delimited by brace depth (outside strings). A 0xFF byte, which never occurs in UTF-8 JSON, is the
 * sentinel `guest-sync-delimited` puts before its answer: it resets the decoder (a partial object from
 * a previous client is dropped) and is reported as a `delimiter` event. Bytes outside an object are
 * skipped. The guest is not trusted: an object longer than `maxObjectBytes` is dropped (reported as
 * `garbage`), so a hostile guest cannot make the host buffer without bound.
 */

export type QgaEvent =
  | { type: 'delimiter' }
  | { type: 'message'; value: unknown }
  | { type: 'garbage'; reason: string };

const LBRACE = 0x7b;
const RBRACE = 0x7d;
const LBRACKET = 0x5b;
const RBRACKET = 0x5d;
const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const SENTINEL = 0xff;

export class QgaDecoder {
  private parts: Buffer[] = [];
  private size = 0;
  private depth = 0;
  private inString = false;
  private escape = false;
  /** True while the bytes of an oversized object are being skipped. */
  private skipping = false;

  constructor(private readonly maxObjectBytes = 1024 * 1024) {}

  /** Feed bytes; returns the events they complete, in order. */
  push(chunk: Buffer): QgaEvent[] {
    const events: QgaEvent[] = [];
    let start = -1; // start of the current object's bytes within this chunk
    for (let i = 0; i < chunk.length; i++) {
      const b = chunk[i]!;
      if (b === SENTINEL) {
        this.reset();
        start = -1;
        events.push({ type: 'delimiter' });
        continue;
      }
      if (this.depth === 0) {
        if (b !== LBRACE) continue; // whitespace or stray bytes between objects
        this.depth = 1;
        start = i;
        continue;
      }
      if (start < 0 && !this.skipping) start = i;
      if (this.inString) {
        if (this.escape) this.escape = false;
        else if (b === BACKSLASH) this.escape = true;
        else if (b === QUOTE) this.inString = false;
        continue;
      }
      if (b === QUOTE) this.inString = true;
      else if (b === LBRACE || b === LBRACKET) this.depth++;
      else if (b === RBRACE || b === RBRACKET) {
        this.depth--;
        if (this.depth === 0) {
          if (!this.skipping) this.append(chunk.subarray(start, i + 1));
          events.push(this.finish());
          start = -1;
        }
      }
    }
    if (this.depth > 0 && start >= 0 && !this.skipping) this.append(chunk.subarray(start));
    return events;
  }

  private append(b: Buffer): void {
    if (this.skipping) return;
    if (this.size + b.length > this.maxObjectBytes) {
      this.skipping = true;
      this.parts = [];
      this.size = 0;
      return;
    }
    this.parts.push(b);
    this.size += b.length;
  }

  private finish(): QgaEvent {
    const skipped = this.skipping;
    const text = Buffer.concat(this.parts).toString('utf8');
    this.reset();
    if (skipped) return { type: 'garbage', reason: `object longer than ${this.maxObjectBytes} bytes dropped` };
    try {
      return { type: 'message', value: JSON.parse(text) as unknown };
    } catch (err) {
      return { type: 'garbage', reason: `not JSON (${(err as Error).message}): ${text.slice(0, 80)}` };
    }
  }

  private reset(): void {
    this.parts = [];
    this.size = 0;
    this.depth = 0;
    this.inString = false;
    this.escape = false;
    this.skipping = false;
  }
}

/** One command as the agent reads it: `{"execute": …, "arguments": …}` and a newline. */
export function encodeQgaCommand(execute: string, args?: Record<string, unknown>): Buffer {
  return Buffer.from(`${JSON.stringify(args === undefined ? { execute } : { execute, arguments: args })}\n`, 'utf8');
}

/** A decoded answer: the command's return value, or the agent's error. Anything else is not an answer. */
export type QgaAnswer = { ok: true; value: unknown } | { ok: false; errorClass: string; desc: string };

export function interpretQgaMessage(v: unknown): QgaAnswer | undefined {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return undefined;
  const o = v as Record<string, unknown>;
  if ('return' in o) return { ok: true, value: o.return };
  if (typeof o.error === 'object' && o.error !== null) {
    const e = o.error as Record<string, unknown>;
    return { ok: false, errorClass: typeof e.class === 'string' ? e.class : 'GenericError', desc: typeof e.desc === 'string' ? e.desc : JSON.stringify(e) };
  }
  return undefined;
}
