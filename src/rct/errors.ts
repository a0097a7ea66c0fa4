import { ExitCode, TidemarkError } from '../errors.js';

/**
 * Change tracking for a disk can no longer answer for IDs issued before `previousTracker` ended: the
 * disk was written outside Tidemark, a tracking file is missing or corrupt, or the disk shrank.
 * Tracking has restarted; the caller must take a full (or full-scan) backup and seal a new ID.
 */
export class TrackingInvalidError extends TidemarkError {
  constructor(diskPath: string, reason: string, data: Record<string, unknown> = {}) {
    super(
      'E_RCT_INVALID',
      `${diskPath}: change tracking was reset (${reason}); changes since this ID are unknown: take a full or full-scan backup and seal a new ID`,
      { diskPath, reason, ...data },
      ExitCode.TRACKING_INVALID,
    );
  }
}

/** Change tracking is not enabled on the disk (neither `<disk>.rct` nor `<disk>.mrt` exists): a usage error (exit 2). */
export class TrackingNotEnabledError extends TidemarkError {
  constructor(diskPath: string) {
    super(
      'E_RCT_NOT_ENABLED',
      `${diskPath}: change tracking is not enabled (no ${diskPath}.rct); run \`tidemark rct enable ${diskPath}\` and take a full backup`,
      { diskPath },
      ExitCode.USAGE,
    );
  }
}

/** The RCT ID is malformed, was dropped, or was never issued by this disk's tracker. */
export class UnknownRctIdError extends TidemarkError {
  constructor(diskPath: string, id: string, why: string) {
    super(
      'E_RCT_UNKNOWN_ID',
      `${diskPath}: RCT ID "${id}" ${why}; list live IDs with \`tidemark rct status\`, or take a full backup`,
      { diskPath, id, why },
      ExitCode.NOT_FOUND,
    );
  }
}
