import { ExitCode, NotFoundError, TidemarkError } from '../errors.js';

/** `get`/`stat` of an object that is not in the backend. */
export class ObjectNotFoundError extends NotFoundError {
  constructor(readonly location: string, readonly type: string, readonly objectName: string) {
    super(`${location}: object ${type}/${objectName}`, 'the repository is missing an object; run `verify` to see which restore points are affected');
    Object.assign(this.data, { location, type, name: objectName });
  }
}

/** The backend ran out of space while storing an object. Nothing partial was left behind. */
export class NoSpaceError extends TidemarkError {
  constructor(location: string, type: string, name: string, options?: { cause?: unknown }) {
    super(
      'E_NO_SPACE',
      `repository ${location} is out of space; free space or prune (while storing ${type}/${name}; nothing partial was kept, no restore point was created)`,
      { location, type, name },
      ExitCode.IO,
      options,
    );
  }
}

/** Any other I/O failure of the backend (permissions, EIO, a dropped network share...). */
export class BackendIOError extends TidemarkError {
  constructor(location: string, op: string, what: string, cause: unknown) {
    const c = cause as NodeJS.ErrnoException;
    super(
      'E_BACKEND_IO',
      `${location}: ${op} ${what} failed: ${c?.message ?? String(cause)}; check the repository's storage and retry`,
      { location, op, what, errno: c?.code },
      ExitCode.IO,
      { cause },
    );
  }
}

/** An object name or type that the backend refuses (path traversal, empty, unknown type). */
export class InvalidObjectNameError extends TidemarkError {
  constructor(type: string, name: string) {
    super('E_INVALID_NAME', `invalid object ${type}/${name}: names are 2-128 characters of [0-9a-zA-Z._-] and types are config, keys, chunks, index, snapshots, locks, packs, packindex`, { type, name }, ExitCode.INTERNAL);
  }
}
