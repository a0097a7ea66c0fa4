import { execFile } from 'node:child_process';

/**
 * Run a tool asynchronously (tests whose server runs in this process must not block the event loop with
 * spawnSync). Rejects with stderr when the tool fails, unless allowFail.
 */
export function exec(cmd: string, args: string[], opts: { allowFail?: boolean; timeoutMs?: number } = {}): Promise<{ status: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024, timeout: opts.timeoutMs ?? 60_000 }, (err, stdout, stderr) => {
      const code = (err as { code?: unknown } | null)?.code;
      const status = err ? (typeof code === 'number' ? code : -1) : 0;
      if (err && !opts.allowFail) reject(new Error(`${cmd} ${args.join(' ')} failed (${status}): ${stderr}`));
      else resolve({ status, stdout, stderr });
    });
  });
}
