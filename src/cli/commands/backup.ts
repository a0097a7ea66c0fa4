import type { Command } from 'commander';
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { backupDisk } from '../../backup/backupDisk.js';
import { backupMachine, type BackupMachineResult } from '../../backup/backupMachine.js';
import { openOrCreateRepository } from '../../backup/defaultRepository.js';
import { OperationAbortedError } from '../../disk/errors.js';
import { NotFoundError, UsageError } from '../../errors.js';
import { Inventory, inventoryPath, resolveHome } from '../../vm/Inventory.js';
import { findMachine } from '../../vm/machines.js';
import type { Repository } from '../../repo/Repository.js';
import { defaultCodecWorkers } from '../../repo/CodecPool.js';
import { formatSize } from '../../util/size.js';
import { abortOnSignals } from '../abortOnSignals.js';
import { printResult } from '../output.js';
import { progress } from '../progress.js';

export interface RepoOpts {
  repo?: string;
  passphraseFile?: string;
  home?: string;
  json?: boolean;
}

/** `--repo`, `--passphrase-file` and `--home`, shared by backup, restore, snapshots and mount. */
export function repoOptions(c: Command): Command {
  return c
    .option('--repo <dir>', 'repository directory (default: <data directory>/repo)')
    .option('--passphrase-file <file>', 'read the passphrase of an encrypted repository from the first line of this file (default: $TIDEMARK_PASSPHRASE)')
    .option('--home <dir>', 'data directory: machine inventory and default repository (default: $TIDEMARK_HOME or ~/.local/share/tidemark)');
}

/** Open the repository named by --repo (or the default one; `create` makes the default on first use). */
export async function openRepo(o: RepoOpts, create = false, workers?: number): Promise<Repository> {
  return openOrCreateRepository(o.repo ?? (o.home !== undefined ? join(resolveHome(o.home), 'repo') : undefined), {
    passphraseFile: o.passphraseFile,
    create,
    workers,
    onCreated: (p) => process.stderr.write(`tidemark: created an unencrypted repository at ${p} (built-in defaults; use "tidemark repo init --encrypt" for an encrypted one)\n`),
  });
}

/** Is `target` a disk file (else a machine of the inventory)? NotFoundError when it is neither. */
async function isDiskFile(target: string, home: string): Promise<boolean> {
  // A machine name never contains '/'; an existing file is a disk (backupDisk reports a missing path).
  if (target.includes('/') || (await stat(target).then((s) => s.isFile(), () => false))) return true;
  const known = (await stat(inventoryPath(home)).then(() => true, () => false)) && await Inventory.transact(home, (state) => {
    try {
      findMachine(state, target);
      return true;
    } catch {
      return false;
    }
  });
  if (!known) throw new NotFoundError(`disk file or machine "${target}"`, 'give the path of a raw or VHDX image, or a machine name or ID (`tidemark vm list`)');
  return false;
}

/**
 * `tidemark backup <vm|disk>`: a restore point of an offline disk, or of a whole machine (through a
 * backup checkpoint), incremental when tracking allows.
 */
export function register(program: Command): void {
  repoOptions(
    program
      .command('backup <target>')
      .description('back up a machine (name or ID: configuration + every disk, through a backup checkpoint) or a disk image (raw or VHDX) into the repository: full the first time, then incremental through change tracking')
      .option('--tag <tag...>', 'tags to record on the snapshot')
      .option('--workers <n>', `worker threads that hash, compress and encrypt chunks while the main thread reads (default ${defaultCodecWorkers()} here: one per core beyond the first, up to 4; none on 2 cores, where inline measured as fast)`, parseWorkers)
      .option('--json', 'print a JSON summary'),
  ).action(async (disk: string, o: RepoOpts & { tag?: string[]; workers?: number }) => {
    const home = resolveHome(o.home);
    if (!(await isDiskFile(disk, home))) return machineAction(disk, home, o);
    const repo = await openRepo(o, true, o.workers ?? defaultCodecWorkers());
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

/** `--workers`: a whole number from 0 to 64. */
function parseWorkers(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0 || n > 64) throw new UsageError(`--workers ${v}: give a whole number from 0 to 64`);
  return n;
}

async function machineAction(vm: string, home: string, o: RepoOpts & { tag?: string[]; workers?: number }): Promise<void> {
  const repo = await openRepo(o, true, o.workers ?? defaultCodecWorkers());
  const tty = !o.json && process.stderr.isTTY === true;
  let bar: ReturnType<typeof progress> | null = null;
  let barSlot = -1;
  // Ctrl-C / SIGTERM stop cleanly: no snapshot, the checkpoint merged back, its RCT IDs dropped.
  const abort = abortOnSignals(() => new OperationAbortedError('backup'));
  try {
    const r = await backupMachine(repo, home, vm, {
      signal: abort.signal,
      tags: o.tag,
      onProgress: (slot, p) => {
        if (slot !== barSlot) {
          bar?.stop();
          bar = progress(`disk${slot}`, p.chunksTotal * repo.config.chunkSize, tty);
          barSlot = slot;
        }
        bar!.update(Math.min(p.chunksDone * repo.config.chunkSize, p.chunksTotal * repo.config.chunkSize));
      },
    });
    (bar as ReturnType<typeof progress> | null)?.stop();
    bar = null;
    printResult(o.json, machineSummary(r, repo.location), () => machineText(r));
  } finally {
    abort.dispose();
    (bar as ReturnType<typeof progress> | null)?.stop();
    await repo.close();
  }
}

const roundRatio = (x: number) => (Number.isFinite(x) ? Math.round(x * 100) / 100 : null);

/** The `--json` summary of a machine backup. */
export function machineSummary(r: BackupMachineResult, repository: string) {
  return {
    snapshot: r.snapshot.id,
    machine: r.machine,
    ...(r.parent ? { parent: r.parent } : {}),
    refpoint: r.refpoint,
    ...(r.consistency ? { consistency: r.consistency } : {}),
    disks: r.disks.map((d) => ({ ...d, dedupRatio: roundRatio(d.dedupRatio) })),
    bytesRead: r.bytesRead,
    chunksNew: r.chunksNew,
    chunksDeduplicated: r.chunksDeduplicated,
    bytesStored: r.bytesStored,
    dedupRatio: roundRatio(r.dedupRatio),
    durationMs: r.durationMs,
    warnings: r.warnings,
    repository,
  };
}

function machineText(r: BackupMachineResult): string {
  return [
    `snapshot ${r.snapshot.id.slice(0, 12)} of machine ${r.machine.name} (${r.disks.length} disk(s)${r.parent ? `, from ${r.parent.slice(0, 12)}` : ''})`,
    ...r.disks.map((d) => `  disk${d.slot}: ${d.mode}, read ${formatSize(d.bytesRead)} of ${formatSize(d.size)}; ${d.chunksNew} new chunk(s), ${d.chunksDeduplicated} already stored; stored ${formatSize(d.bytesStored)}${d.reason ? `\n    note: ${d.reason}` : ''}`),
    `read ${formatSize(r.bytesRead)}, stored ${formatSize(r.bytesStored)}; ${(r.durationMs / 1000).toFixed(1)} s${r.consistency ? `; ${r.consistency.level}-consistent (quiesce: ${r.consistency.quiesce})` : ''}`,
    ...r.warnings.filter((w) => !r.disks.some((d) => d.reason && w.startsWith(d.reason))).map((w) => `warning: ${w}`),
  ].join('\n');
}
