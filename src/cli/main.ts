#!/usr/bin/env node
import '../util/threadPool.js'; // first: sizes libuv's thread pool before any file I/O
import { Command, CommanderError } from 'commander';
import { TidemarkError, ExitCode } from '../errors.js';
import { commands } from './commands/index.js';

/** Build the `tidemark` program. Each noun registers itself from src/cli/commands/<noun>.ts. */
export function buildProgram(): Command {
  const program = new Command('tidemark')
    .description('VM disk backup with Resilient Change Tracking')
    .version('0.1.0')
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride();
  for (const register of commands) register(program);
  return program;
}

/** Print an error the way the CLI always does and return the exit code. */
export function reportError(err: unknown, json: boolean): number {
  if (err instanceof CommanderError) return err.exitCode === 0 ? 0 : ExitCode.USAGE;
  if (err instanceof TidemarkError) {
    if (json) process.stdout.write(JSON.stringify({ error: { code: err.code, message: err.message, data: err.data } }) + '\n');
    process.stderr.write(`tidemark: ${err.message}\n`);
    return err.exitCode;
  }
  const e = err as NodeJS.ErrnoException;
  if (e && typeof e.code === 'string' && e.syscall) {
    const hint = e.code === 'ENOENT' ? ' (check the path)' : e.code === 'ENOSPC' ? ' (free some space and retry; nothing was committed)' : e.code === 'EACCES' ? ' (check permissions)' : '';
    process.stderr.write(`tidemark: ${e.message}${hint}\n`);
    if (json) process.stdout.write(JSON.stringify({ error: { code: e.code, message: e.message } }) + '\n');
    return e.code === 'ENOENT' ? ExitCode.NOT_FOUND : ExitCode.IO;
  }
  process.stderr.write(`tidemark: internal error: ${(err as Error)?.stack ?? String(err)}\n`);
  return ExitCode.INTERNAL;
}

async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
    return process.exitCode === undefined ? 0 : Number(process.exitCode);
  } catch (err) {
    return reportError(err, argv.includes('--json'));
  }
}

main(process.argv).then((code) => {
  process.exitCode = code;
});
