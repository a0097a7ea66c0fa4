import { DiskLock } from '../blockdev/DiskLock.js';

/**
 * Who holds a disk exclusively right now ("PID 1234 (tidemark serve)"), or undefined; never takes the
 * lock and never writes the lock file. See DiskLock.exclusiveHolder.
 */
export function diskLockHolder(diskPath: string): Promise<string | undefined> {
  return DiskLock.exclusiveHolder(diskPath);
}
