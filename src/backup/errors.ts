/** Errors of the backup jobs (backup, restore, rollback, mount). */
import { ExitCode, TidemarkError } from '../errors.js';

/**
 * The disk is served by a running `tidemark serve` (it answers on its control socket). Tidemark could
 * seal and query its tracker there, but cannot read a point-in-time image of a disk another process is
 * writing (a VHDX's metadata moves under us; even a raw file would give a torn image), so it refuses.
 */
export class DiskServedError extends TidemarkError {
  constructor(diskPath: string) {
    super(
      'E_IN_USE',
      `${diskPath} is in use: it is being served by a running "tidemark serve" (control socket answers); ` +
        'a consistent backup of a disk another process writes needs a checkpoint of its VM — stop the server (or back up the VM) and retry',
      { diskPath },
      ExitCode.IN_USE,
    );
  }
}

/** The snapshot has no disk of that name, or several and none was chosen. */
export class SnapshotDiskError extends TidemarkError {
  constructor(message: string, data: Record<string, unknown> = {}) {
    super('E_SNAPSHOT_DISK', message, data, ExitCode.USAGE);
  }
}
