import type { Command } from 'commander';
import { diffDisks } from '../../backup/diffSnapshots.js';
import { selectDisk } from '../../backup/selectDisk.js';
import { findSnapshot, listSnapshots, type Snapshot } from '../../repo/Manifest.js';
import { warnDamaged } from './repo.js';
import { formatSize } from '../../util/size.js';
import { printResult } from '../output.js';
import { openRepo, repoOptions, type RepoOpts } from './backup.js';

/** `tidemark snapshots [list]`, `snapshots show <id>`, `snapshots diff <a> <b>`. */
export function register(program: Command): void {
  const snaps = program.command('snapshots').description('list restore points; show one; diff two (changed byte ranges from their indexes)');

  repoOptions(snaps.command('list', { isDefault: true }).description('list restore points, oldest first').option('--source <text>', 'only snapshots whose source name or id contains this').option('--json', 'print as JSON')).action(
    async (o: RepoOpts & { source?: string }) => {
      const repo = await openRepo(o);
      try {
        const all = (await listSnapshots(repo, { onDamaged: warnDamaged })).filter((s) => !o.source || s.source.name.includes(o.source) || s.source.id.includes(o.source));
        printResult(o.json, all, () => (all.length === 0 ? 'no snapshots' : all.map(line).join('\n')));
      } finally {
        await repo.close();
      }
    },
  );

  repoOptions(snaps.command('show <snapshot>').description('everything recorded about one restore point').option('--json', 'print as JSON')).action(async (id: string, o: RepoOpts) => {
    const repo = await openRepo(o);
    try {
      const s = await findSnapshot(repo, id);
      printResult(o.json, s, () =>
        [
          `snapshot ${s.id}`,
          `time     ${s.time}`,
          `host     ${s.host}`,
          `source   ${s.source.name} (${s.source.id})`,
          ...(s.machine ? [`machine  ${s.machine.name} (${s.machine.id}): ${machineShape(s.machine.config)}`] : []),
          ...(s.parent ? [`parent   ${s.parent}`] : []),
          ...(s.tags?.length ? [`tags     ${s.tags.join(', ')}`] : []),
          ...s.disks.map((d) => `disk     ${d.name}${d.slot !== undefined ? ` (slot ${d.slot})` : ''}: ${formatSize(d.size)}, chunks ${formatSize(d.chunkSize)}, index ${d.indexRoot.slice(0, 16)}…${d.rctId ? `, rct ${d.rctId}` : ''}`),
          ...(s.stats ? [`stats    read ${formatSize(s.stats.bytesRead ?? 0)}, ${s.stats.chunksWritten ?? 0} new chunk(s) (${formatSize(s.stats.chunkBytesWritten ?? 0)}), ${s.stats.chunksDeduplicated ?? 0} deduplicated, ${s.stats.pagesWritten ?? 0} index page(s), ${((s.stats.durationMs ?? 0) / 1000).toFixed(1)} s`] : []),
        ].join('\n'),
      );
    } finally {
      await repo.close();
    }
  });

  repoOptions(snaps.command('diff <a> <b>').description('the byte ranges of a disk that differ between two snapshots (from their index trees; no data read)').option('--disk <name>', 'which disk (when the snapshots have several)').option('--json', 'print as JSON')).action(
    async (a: string, b: string, o: RepoOpts & { disk?: string }) => {
      const repo = await openRepo(o);
      try {
        const [sa, sb] = [await findSnapshot(repo, a), await findSnapshot(repo, b)];
        const d = await diffDisks(repo, selectDisk(sa, o.disk), selectDisk(sb, o.disk));
        printResult(o.json, { a: sa.id, b: sb.id, ...d }, () =>
          [
            `${d.changedBytes === 0 && d.sizeA === d.sizeB ? 'identical' : `${formatSize(d.changedBytes)} differ in ${d.ranges.length} range(s) (${d.changedChunks} chunk(s))`}${d.sizeA !== d.sizeB ? `; size ${d.sizeA} -> ${d.sizeB}` : ''}`,
            ...d.ranges.slice(0, 50).map((r) => `  ${r.offset}+${r.length}`),
            ...(d.ranges.length > 50 ? [`  … ${d.ranges.length - 50} more (use --json)`] : []),
          ].join('\n'),
        );
      } finally {
        await repo.close();
      }
    },
  );
}

function line(s: Snapshot): string {
  return `${s.id.slice(0, 12)}  ${s.time}  ${s.machine ? `machine ${s.machine.name}` : s.source.name}  ${s.disks.map((d) => `${d.name}:${formatSize(d.size)}`).join(' ')}${s.parent ? `  (parent ${s.parent.slice(0, 8)})` : ''}${s.tags?.length ? `  [${s.tags.join(',')}]` : ''}`;
}

/** "2 CPU(s), 512 MiB, 2 disk(s), 1 NIC(s)" from a snapshot's machine configuration (checked loosely). */
function machineShape(c: { [k: string]: unknown }): string {
  const n = (v: unknown) => (Array.isArray(v) ? v.length : 0);
  return `${String(c.cpus)} CPU(s), ${String(c.memoryMiB)} MiB, ${n(c.disks)} disk(s), ${n(c.network)} NIC(s)`;
}
