import type { Command } from 'commander';
import { DiskLock } from '../../blockdev/DiskLock.js';
import { stat } from 'node:fs/promises';
import { NotFoundError, UsageError } from '../../errors.js';
import { disableTracking, enableTracking } from '../../rct/enableTracking.js';
import { openRctHandle } from '../../rct/openRctHandle.js';
import { trackingStatus } from '../../rct/trackingStatus.js';
import { controlClient } from '../../rct/control.js';
import { InUseError } from '../../errors.js';
import { formatSize, parseSize } from '../../util/size.js';
import { printResult } from '../output.js';

interface JsonOpt {
  json?: boolean;
}

/** NotFoundError (exit 3) when the disk file itself does not exist (its tracking state is moot). */
async function requireDisk(disk: string): Promise<void> {
  try {
    await stat(disk);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new NotFoundError(disk, 'check the disk path');
    throw err;
  }
}

async function withHandle<T>(disk: string, mutate: boolean, fn: (h: Awaited<ReturnType<typeof openRctHandle>>) => Promise<T>): Promise<T> {
  await requireDisk(disk);
  const h = await openRctHandle(disk, { mutate });
  try {
    return await fn(h);
  } finally {
    await h.close();
  }
}

/** Hold the disk's exclusive lock around `fn` (InUseError "in use by PID …" when another process has it). */
async function withLock<T>(disk: string, fn: () => Promise<T>): Promise<T> {
  const lock = await DiskLock.acquire(disk, { exclusive: true, holder: 'tidemark rct' });
  try {
    return await fn();
  } finally {
    await lock.release();
  }
}

/** `tidemark rct …`: enable, disable, status, seal, changes, drop. */
export function register(program: Command): void {
  const rct = program.command('rct').description('Resilient Change Tracking: changed blocks since an RCT ID');

  rct.command('enable <disk>')
    .description('start tracking changes to a disk (then take a full backup and seal an ID)')
    .option('--block-size <size>', 'fine granularity, power of two from 512 to 64M (default 64K)')
    .option('--region-size <size>', 'coarse crash-safety region, power of two >= 1M (default automatic, 64M and up)')
    .option('--json', 'print JSON')
    .action(async (disk: string, o: JsonOpt & { blockSize?: string; regionSize?: string }) => {
      if (await controlClient(disk).then((c) => (c?.close(), !!c))) throw new InUseError(disk, 'the process serving it (enable tracking while the disk is not in use)');
      const blockSize = o.blockSize ? parseSize(o.blockSize) : undefined;
      const regionSize = o.regionSize ? parseSize(o.regionSize) : undefined;
      await withLock(disk, () => enableTracking(disk, { blockSize, regionSize }));
      const st = await trackingStatus(disk);
      printResult(o.json, st, () => `change tracking enabled on ${disk} (block size ${formatSize(st.blockSize!)}); take a full backup and seal an ID`);
    });

  rct.command('disable <disk>')
    .description('stop tracking and delete the tracking files (every RCT ID becomes invalid)')
    .option('--json', 'print JSON')
    .action(async (disk: string, o: JsonOpt) => {
      if (await controlClient(disk).then((c) => (c?.close(), !!c))) throw new InUseError(disk, 'the process serving it');
      await withLock(disk, () => disableTracking(disk));
      printResult(o.json, { diskPath: disk, enabled: false }, () => `change tracking disabled on ${disk}`);
    });

  rct.command('status <disk>')
    .description('show tracking state: granularity, generation, live IDs, last close')
    .option('--json', 'print JSON')
    .action(async (disk: string, o: JsonOpt) => {
      await requireDisk(disk);
      const st = (await trackingStatus(disk)).enabled ? await withHandle(disk, false, (h) => h.status()) : await trackingStatus(disk);
      printResult(o.json, st, () => {
        if (!st.enabled) return `${disk}: change tracking is not enabled`;
        const lines = [
          `disk:            ${disk}`,
          `block size:      ${formatSize(st.blockSize!)}`,
          `region size:     ${formatSize(st.regionSize!)}`,
          `generation:      ${st.generation}`,
          `last close:      ${st.lastCloseClean ? 'clean' : 'not clean (in use or crashed)'}`,
        ];
        if (st.verdict) lines.push(`state:           ${st.verdict}`);
        if (st.invalidation) lines.push(`last reset:      ${st.invalidation.at}: ${st.invalidation.reason}`);
        lines.push(`live IDs:        ${st.liveIds!.length}`);
        for (const x of st.liveIds!) lines.push(`  ${x.id}  (${x.createdAt})`);
        return lines.join('\n');
      });
    });

  rct.command('seal <disk>')
    .description('end the current generation and print a new RCT ID')
    .option('--json', 'print JSON')
    .action(async (disk: string, o: JsonOpt) => {
      const id = await withHandle(disk, true, (h) => h.seal());
      printResult(o.json, { id }, () => id);
    });

  rct.command('changes <disk>')
    .description('byte ranges changed since an RCT ID (and up to another)')
    .requiredOption('--since <id>', 'RCT ID from `tidemark rct seal`')
    .option('--until <id>', 'a later RCT ID (default: now)')
    .option('--json', 'print JSON')
    .action(async (disk: string, o: JsonOpt & { since: string; until?: string }) => {
      if (!o.since) throw new UsageError('--since needs an RCT ID');
      const ranges = await withHandle(disk, false, (h) => h.changes(o.since, o.until));
      const changedBytes = ranges.reduce((n, r) => n + r.length, 0);
      printResult(o.json, { ranges, changedBytes }, () =>
        [...ranges.map((r) => `${r.offset}\t${r.length}`), `# ${ranges.length} range(s), ${changedBytes} bytes (${formatSize(changedBytes)}) changed`].join('\n'),
      );
    });

  rct.command('drop <disk> <id>')
    .description('forget an RCT ID and free its state')
    .option('--json', 'print JSON')
    .action(async (disk: string, id: string, o: JsonOpt) => {
      await withHandle(disk, true, (h) => h.drop(id));
      printResult(o.json, { dropped: id }, () => `dropped ${id}`);
    });
}
