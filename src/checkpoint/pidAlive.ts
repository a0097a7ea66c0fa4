import { readFileSync } from 'node:fs';

/**
 * True when process `pid` exists and is not a zombie (this process counts as alive; EPERM means it
 * exists). A killed process stays a zombie until its parent reaps it — for a runner started in-process
 * that parent may be busy — and a zombie holds no locks and serves no socket, so it counts as dead.
 */
export function pidAlive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  try {
    // /proc/<pid>/stat: "pid (comm) S ..." — the state follows the last ')'.
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return true; // no /proc: trust kill(0)
  }
}
