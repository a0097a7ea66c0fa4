import type { Command } from 'commander';
import { restoreSnapshot } from '../../backup/restoreSnapshot.js';
import { rollbackDisk } from '../../backup/rollbackDisk.js';
import { UsageError } from '../../errors.js';
import { OperationAbortedError } from '../../disk/errors.js';
import { formatSize } from '../../util/size.js';
import { abortOnSignals } from '../abortOnSignals.js';
import { printResult } from '../output.js';
import { progress, type Progress } from '../progress.js';
import { openRepo, repoOptions, type RepoOpts } from './backup.js';

interface RestoreOpts extends RepoOpts {
  to?: string;
  inPlace?: string;
  format?: string;
  disk?: string;
  force?: boolean;
}

/** `tidemark restore <snapshot> --to <path>` (new image) or `--in-place <disk>` (rollback). */
export function register(program: Command): void {
  repoOptions(
    program
      .command('restore <snapshot>')
      .description('restore a disk of a snapshot to a new image (--to), or roll a disk back in place writing only what differs (--in-place)')
      .option('--to <path>', 'write a new image here (temp name + fsync + rename: never a partial file)')
      .option('--in-place <disk>', 'roll this disk back to the snapshot, rewriting only the chunks that differ')
      .option('--format <fmt>', 'raw or vhdx (default: vhdx when --to ends in .vhdx, else raw)')
      .option('--disk <name>', 'which disk of the snapshot (needed when it has several)')
      .option('--force', 'replace an existing file at --to (atomically)')
      .option('--json', 'print a JSON summary'),
  ).action(async (snapshot: string, o: RestoreOpts) => {
    if (!!o.to === !!o.inPlace) throw new UsageError('give exactly one of --to <path> (new image) or --in-place <disk> (rollback)');
    if (o.format !== undefined && o.format !== 'raw' && o.format !== 'vhdx') throw new UsageError(`--format ${o.format}: use raw or vhdx`);
    if (o.inPlace && (o.format || o.force)) throw new UsageError('--format and --force apply to --to only');
    const repo = await openRepo(o);
    let bar: Progress | null = null;
    const tty = !o.json && process.stderr.isTTY === true;
    // Ctrl-C / SIGTERM stop cleanly: the temporary image is removed (--to).
    const abort = abortOnSignals(() => new OperationAbortedError('restore'));
    try {
      if (o.to) {
        const r = await restoreSnapshot(repo, snapshot, {
          to: o.to,
          format: o.format as 'raw' | 'vhdx' | undefined,
          disk: o.disk,
          overwrite: !!o.force,
          signal: abort.signal,
          onProgress: (p, size) => {
            bar ??= progress('restore', size, tty);
            bar.update(p.bytesWritten);
          },
        });
        // Zero chunks are skipped (sparse), so the bytes written fall short of the size: finish the bar.
        (bar as Progress | null)?.update(r.size);
        bar = (bar as Progress | null)?.stop() ?? null;
        printResult(o.json, r, () => `restored disk ${r.disk} of snapshot ${r.snapshot.slice(0, 12)} to ${r.path} (${r.format}, ${formatSize(r.size)}; ${formatSize(r.bytesWritten)} of data written, the rest sparse; every chunk verified) in ${(r.durationMs / 1000).toFixed(1)} s`);
      } else {
        const r = await rollbackDisk(repo, snapshot, o.inPlace!, {
          disk: o.disk,
          onProgress: (done, total) => {
            bar ??= progress('rollback', total, tty);
            bar.update(done);
          },
        });
        bar = (bar as Progress | null)?.stop() ?? null;
        printResult(o.json, r, () =>
          [
            `rolled ${o.inPlace} back to snapshot ${r.snapshot.slice(0, 12)}: rewrote ${r.chunksWritten} of ${r.chunksChecked} chunk(s) checked (${formatSize(r.bytesWritten)}), via ${r.method === 'rct' ? 'change tracking' : 'content comparison'}`,
            ...(r.reason ? [`note: compared content because ${r.reason}`] : []),
          ].join('\n'),
        );
      }
    } finally {
      abort.dispose();
      (bar as Progress | null)?.stop();
      await repo.close();
    }
  });
}
