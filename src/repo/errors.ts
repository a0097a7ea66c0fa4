import { CorruptError, ExitCode, InUseError, TidemarkError } from '../errors.js';

/**
 * An object's bytes do not decode to content matching its name (digest mismatch, failed authentication,
 * bad header, truncated). Names the object so `verify` can say which restore points it affects.
 */
export class CorruptObjectError extends CorruptError {
  constructor(readonly location: string, readonly type: string, readonly objectName: string, readonly detail: string) {
    super(location, `${type}/${objectName}`, `${detail}; the object is damaged — run \`verify\` to list the affected restore points, then back up again so new restore points do not depend on it`, { type, name: objectName });
  }
}

/** The passphrase opens none of the repository's key files. */
export class WrongPassphraseError extends TidemarkError {
  constructor(location: string) {
    super('E_WRONG_PASSPHRASE', `${location}: wrong passphrase: it opens none of the repository's keys; check the passphrase and try again`, { location }, ExitCode.USAGE);
  }
}

/** The repository is encrypted and no passphrase was given, or a passphrase was given for an unencrypted one. */
export class PassphraseMismatchError extends TidemarkError {
  constructor(location: string, encrypted: boolean) {
    super(
      'E_PASSPHRASE',
      encrypted ? `${location}: the repository is encrypted; give its passphrase` : `${location}: the repository is not encrypted; do not give a passphrase`,
      { location, encrypted },
      ExitCode.USAGE,
    );
  }
}

export class RepositoryNotFoundError extends TidemarkError {
  constructor(location: string) {
    super('E_NOT_FOUND', `${location}: no repository here (no config object); create one with \`repo init\` or check the path`, { location }, ExitCode.NOT_FOUND);
  }
}

export class RepositoryExistsError extends TidemarkError {
  constructor(location: string) {
    super('E_EXISTS', `${location}: a repository already exists here; open it instead, or choose an empty location`, { location }, ExitCode.USAGE);
  }
}

/** A repository format this build does not understand (newer version, unknown compression...). */
export class UnsupportedRepositoryError extends TidemarkError {
  constructor(location: string, detail: string, hint = 'upgrade Tidemark to use this repository') {
    super('E_UNSUPPORTED', `${location}: ${detail}; ${hint}`, { location }, ExitCode.UNSUPPORTED);
  }
}

/** Another process holds a conflicting lock. */
export class RepositoryLockedError extends InUseError {
  constructor(location: string, holder: string, exclusive: boolean) {
    super(`repository ${location}`, `${holder}${exclusive ? ' (exclusive)' : ''}; wait for it to finish, or remove the lock with \`repo unlock\` if that process is gone`);
    Object.assign(this.data, { location, exclusive });
  }
}

/** A backup or restore input that does not fit the disk entry (size, chunk size mismatch...). */
export class DiskMismatchError extends TidemarkError {
  constructor(detail: string, data: Record<string, unknown> = {}) {
    super('E_DISK_MISMATCH', detail, data, ExitCode.USAGE);
  }
}

/** An incremental backup's parent snapshot is gone (forgotten): its objects may have been pruned. */
export class ParentMissingError extends TidemarkError {
  constructor(location: string, parent: string) {
    super(
      'E_PARENT_MISSING',
      `${location}: parent snapshot ${parent} no longer exists (forgotten or pruned), so an incremental cannot build on it; run a full backup (without changed ranges)`,
      { location, parent },
      ExitCode.TRACKING_INVALID,
    );
  }
}
