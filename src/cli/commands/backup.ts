import type { Command } from 'commander';
import { backupDisk } from '../../backup/backupDisk.js';
import { openOrCreateRepository } from '../../backup/defaultRepository.js';
import { OperationAbortedError } from '../../disk/errors.js';
import type { Repository } from '../../repo/Repository.js';
import { formatSize } from '../../util/size.js';
import { abortOnSignals } from '../abortOnSignals.js';
import { printResult } from '../output.js';
import { progress } from '../progress.js';

export interface RepoOpts {
  repo?: string;
  passphraseFile?: string;
  json?: boolean;
}

/** `--repo` and `--passphrase-file`, shared by backup, restore, snapshots and mount. */
export function repoOptions(c: Command): Command {
  return c
    .option('--repo <dir>', 'repository directory (default: $TIDEMARK_HOME/repo, TIDEMARK_HOME default ~/.local/share/tidemark)')
    .option('--passphrase-file <file>', 'read the passphrase of an encrypted repository from the first line of this file (default: $TIDEMARK_PASSPHRASE)');
}

/** Open the repository named by --repo (or the default one; `create` makes the default on first use). */
export async function openRepo(o: RepoOpts, create = false): Promise<Repository> {
  return openOrCreateRepository(o.repo, {
    passphraseFile: o.passphraseFile,
    create,
    onCreated: (p) => process.stderr.write(`tidemark: created an unencrypted repository at ${p} (built-in defaults; use "tidemark repo init --encrypt" for an encrypted one)\n`),
  });
}

/** `tidemark backup <disk>`: a restore point of an offline disk, incremental when tracking allows. */
export function register(program: Command): void {
  repoOptions(
    program
      .command('backup <disk>')
      .description('back up a disk image (raw or VHDX) into the repository: full the first time, then incremental through change tracking')
      .option('--tag <tag...>', 'tags to record on the snapshot')
      .option('--json', 'print a JSON summary'),
  ).action(async (disk: string, o: RepoOpts & { tag?: string[] }) => {
    const repo = await openRepo(o, true);
    let bar: ReturnType<typeof progress> | null = null;
    // Ctrl-C / SIGTERM stop cleanly: no snapshot is written, the new RCT ID is dropped, locks released.
    const abort = abortOnSignals(() => new OperationAbortedError('backup'));
    try {
      const r = await backupDisk(repo, disk, {
        signal: abort.signal,
        tags: o.tag,
        onProgress: (p) => {
          bar ??= progress('backup', p.chunksTotal * repo.config.chunkSize, !o.json && process.stderr.isTTY === true);
          bar.update(Math.min(p.bytesRead, p.chunksTotal * repo.config.chunkSize));
        },
      });
      (bar as ReturnType<typeof progress> | null)?.stop();
      bar = null;
      const out = {
        snapshot: r.snapshot.id,
        mode: r.mode,
        ...(r.reason ? { reason: r.reason } : {}),
        ...(r.parent ? { parent: r.parent } : {}),
        disk: r.snapshot.source.name,
        diskSize: r.diskSize,
        bytesRead: r.bytesRead,
        chunksNew: r.chunksNew,
        chunksDeduplicated: r.chunksDeduplicated,
        bytesStored: r.bytesStored,
        dedupRatio: Number.isFinite(r.dedupRatio) ? Math.round(r.dedupRatio * 100) / 100 : null,
        durationMs: r.durationMs,
        trackingEnabled: r.trackingEnabled,
        repository: repo.location,
      };
      printResult(o.json, out, () =>
        [
          `snapshot ${r.snapshot.id.slice(0, 12)} of ${disk} (${r.mode}${r.mode === 'incremental' ? ` from ${r.parent!.slice(0, 12)}` : ''})`,
          ...(r.reason ? [`note: full scan because ${r.reason}`] : []),
          `read ${formatSize(r.bytesRead)} of ${formatSize(r.diskSize)}; ${r.chunksNew} new chunk(s), ${r.chunksDeduplicated} already stored; stored ${formatSize(r.bytesStored)}; ${(r.durationMs / 1000).toFixed(1)} s`,
          ...(r.trackingEnabled ? ['change tracking enabled on the disk: the next backup will be incremental'] : []),
        ].join('\n'),
      );
    } finally {
      abort.dispose();
      (bar as ReturnType<typeof progress> | null)?.stop();
      await repo.close();
    }
  });
}
