/**
 * Test helper (no tests here): run a lock-holding child script and wait for its first line of output.
 * The child is killed when the test ends if it is still running.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import type { TestContext } from 'node:test';

export interface Child {
  proc: ChildProcess;
  /** The child's first line of stdout, trimmed. */
  line: string;
}

/** Spawn `node <script> ...args` and resolve with its first output line (or reject if it exits silent). */
export async function startChild(t: TestContext, script: string, args: string[]): Promise<Child> {
  const proc = spawn(process.execPath, [script, ...args], { stdio: ['pipe', 'pipe', 'inherit'] });
  t.after(() => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
  });
  const line = await new Promise<string>((resolve, reject) => {
    let out = '';
    proc.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('\n')) resolve(out.slice(0, out.indexOf('\n')).trim());
    });
    proc.once('close', (code) => reject(new Error(`${script} exited ${code} without output: ${out}`)));
  });
  return { proc, line };
}

/** Resolves when the child has exited. */
export function exited(proc: ChildProcess): Promise<void> {
  return proc.exitCode !== null || proc.signalCode !== null ? Promise.resolve() : new Promise((r) => proc.once('exit', () => r()));
}
