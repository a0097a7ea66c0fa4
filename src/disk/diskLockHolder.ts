/**
 * Read-only probe of a disk's DiskLock (`<disk>.lock`, src/blockdev/DiskLock.ts): who holds it
 * exclusively right now, without taking it and without writing the lock file.
 *
 * How this works: the lock file is opened read-only (absent: nobody has ever locked the disk) and a
 * shared flock is tried without waiting; getting it means no writer holds the disk (it is released at
 * once). Failing means an exclusive holder: its live `<pid>\t<command>` lines name it, as InUseError does.
 */
import { open } from 'node:fs/promises';
import { flock } from '../native/native.js';

/**
 * "PID 1234 (tidemark serve)" when another open file holds `<diskPath>.lock` exclusively, else
 * undefined (not locked, only shared holders, or no lock file). Never modifies anything.
 */
export async function diskLockHolder(diskPath: string): Promise<string | undefined> {
  let fh;
  try {
    fh = await open(`${diskPath}.lock`, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  try {
    if (await flock(fh.fd, 'shared', false)) {
      await flock(fh.fd, 'unlock', false);
      return undefined;
    }
    const text = (await fh.readFile({ encoding: 'utf8' })).slice(0, 64 * 1024);
    const holders: string[] = [];
    const seen = new Set<number>();
    for (const line of text.split('\n')) {
      const m = /^(\d+)\t(.*)$/.exec(line);
      if (!m) continue;
      const pid = Number(m[1]);
      if (seen.has(pid) || !alive(pid)) continue;
      seen.add(pid);
      holders.push(`PID ${pid}${pid === process.pid ? ' (this process)' : m[2] ? ` (${m[2]})` : ''}`);
    }
    return holders.length > 0 ? holders.join(', ') : 'another process (not yet recorded in the lock file)';
  } finally {
    await fh.close();
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
