import type { Command } from 'commander';
import { restoreMachine } from '../../backup/restoreMachine.js';
import { restoreSnapshot } from '../../backup/restoreSnapshot.js';
import { resolveHome } from '../../vm/Inventory.js';
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
  vm?: boolean;
  newId?: boolean;
  name?: string;
}

/**
 * `tidemark restore <snapshot> --to <path>` (new image), `--in-place <disk>` (rollback), or
 * `--vm [--new-id] [--name N] [--to DIR]` (a machine snapshot as a registered machine).
 */
export function register(program: Command): void {
  repoOptions(
    program
      .command('restore <snapshot>')
      .description('restore a disk of a snapshot to a new image (--to), roll a disk back in place writing only what differs (--in-place), or register a machine snapshot as a machine (--vm)')
      .option('--to <path>', 'write a new image here (temp name + fsync + rename: never a partial file); with --vm: the machine folder (new or empty)')
      .option('--vm', 'restore a machine snapshot as a registered machine (same ID unless --new-id), disks restored sparse into its folder')
      .option('--new-id', 'with --vm: register under a new ID (a copy beside the original)')
      .option('--name <name>', 'with --vm: register under this name')
      .option('--in-place <disk>', 'roll this disk back to the snapshot, rewriting only the chunks that differ')
      .option('--format <fmt>', 'raw or vhdx (default: vhdx when --to ends in .vhdx, else raw)')
      .option('--disk <name>', 'which disk of the snapshot (needed when it has several)')
      .option('--force', 'replace an existing file at --to (atomically)')
      .option('--json', 'print a JSON summary'),
  ).action(async (snapshot: string, o: RestoreOpts) => {
    if (o.vm) return machineAction(snapshot, o);
    if (o.newId || o.name !== undefined) throw new UsageError('--new-id and --name apply to --vm only');
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

async function machineAction(snapshot: string, o: RestoreOpts): Promise<void> {
  if (o.inPlace || o.format || o.disk || o.force) throw new UsageError('--vm restores a whole machine: --in-place, --format, --disk and --force do not apply (use --to DIR for its folder)');
  const repo = await openRepo(o);
  const tty = !o.json && process.stderr.isTTY === true;
  let bar: Progress | null = null;
  let barSlot = -1;
  // Ctrl-C / SIGTERM stop cleanly: what was restored is removed, nothing is registered.
  const abort = abortOnSignals(() => new OperationAbortedError('restore'));
  try {
    const r = await restoreMachine(repo, resolveHome(o.home), snapshot, {
      newId: !!o.newId,
      ...(o.name !== undefined ? { name: o.name } : {}),
      ...(o.to !== undefined ? { to: o.to } : {}),
      signal: abort.signal,
      onProgress: (slot, p, size) => {
        if (slot !== barSlot) {
          bar?.stop();
          bar = progress(`disk${slot}`, size, tty);
          barSlot = slot;
        }
        bar!.update(p.bytesWritten);
      },
    });
    bar = (bar as Progress | null)?.stop() ?? null;
    printResult(o.json, r, () =>
      [
        `restored machine ${r.machine.name} (${r.machine.id}) from snapshot ${r.snapshot.slice(0, 12)} into ${r.machine.dir} in ${(r.durationMs / 1000).toFixed(1)} s`,
        ...r.disks.map((d) => `  disk${d.slot}: ${d.path} (${formatSize(d.size)}; ${formatSize(d.bytesWritten)} of data written, the rest sparse)`),
      ].join('\n'),
    );
  } finally {
    abort.dispose();
    (bar as Progress | null)?.stop();
    await repo.close();
  }
}
