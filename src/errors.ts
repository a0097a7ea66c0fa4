/**
 * Tidemark's error model: one class per failure, each with a stable `code`, structured `data`, a
 * process exit code for the CLI, and a message that says what the user can do next.
 * Domain-specific errors live beside their domain (src/vhdx/errors.ts, src/rct/errors.ts, ...) and
 * extend TidemarkError.
 */

/** CLI exit codes. Stable: scripts rely on them. */
export const ExitCode = {
  OK: 0,
  /** A comparison or check found a difference/problem (not an operational failure). */
  DIFFERENT: 1,
  USAGE: 2,
  NOT_FOUND: 3,
  CORRUPT: 4,
  IN_USE: 5,
  TRACKING_INVALID: 6,
  UNSUPPORTED: 7,
  IO: 8,
  INTERNAL: 70,
} as const;

export class TidemarkError extends Error {
  readonly code: string;
  readonly data: Record<string, unknown>;
  readonly exitCode: number;
  constructor(code: string, message: string, data: Record<string, unknown> = {}, exitCode: number = ExitCode.INTERNAL, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
    this.data = data;
    this.exitCode = exitCode;
  }
}

export class UsageError extends TidemarkError {
  constructor(message: string, data: Record<string, unknown> = {}) {
    super('E_USAGE', message, data, ExitCode.USAGE);
  }
}

export class OutOfRangeError extends TidemarkError {
  constructor(offset: number, length: number, size: number) {
    super('E_RANGE', `request [${offset}, +${length}) is outside the device (size ${size})`, { offset, length, size }, ExitCode.USAGE);
  }
}

export class ReadOnlyError extends TidemarkError {
  constructor(what = 'device') {
    super('E_READ_ONLY', `${what} is open read-only`, { what }, ExitCode.USAGE);
  }
}

export class ClosedError extends TidemarkError {
  constructor(what = 'device') {
    super('E_CLOSED', `${what} is closed`, { what }, ExitCode.INTERNAL);
  }
}

export class NotSupportedError extends TidemarkError {
  constructor(what: string) {
    super('E_NOT_SUPPORTED', `${what} is not supported`, { what }, ExitCode.UNSUPPORTED);
  }
}

export class NotFoundError extends TidemarkError {
  constructor(what: string, hint = '') {
    super('E_NOT_FOUND', `${what} not found${hint ? `: ${hint}` : ''}`, { what }, ExitCode.NOT_FOUND);
  }
}

/** A structure on disk failed validation (bad checksum, bad signature, impossible value). */
export class CorruptError extends TidemarkError {
  constructor(file: string, structure: string, detail: string, data: Record<string, unknown> = {}) {
    super('E_CORRUPT', `${file}: ${structure}: ${detail}`, { file, structure, ...data }, ExitCode.CORRUPT);
  }
}

/** Another process holds the file. */
export class InUseError extends TidemarkError {
  constructor(file: string, holder: string) {
    super('E_IN_USE', `${file} is in use by ${holder}; stop it or talk to it through its control socket`, { file, holder }, ExitCode.IN_USE);
  }
}

/** Wrap an error with the operation that failed: `open disk.vhdx: BAT entry 17 points past end of file`. */
export function withContext<T>(op: string, p: Promise<T>): Promise<T> {
  return p.catch((err: unknown) => {
    if (err instanceof Error && !err.message.startsWith(op)) err.message = `${op}: ${err.message}`;
    throw err;
  });
}
