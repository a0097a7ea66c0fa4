import { Command, InvalidArgumentError, Option } from 'commander';
import { ExitCode } from '../../errors.js';
import { checkDisk } from '../../disk/checkDisk.js';
import { compareDisks } from '../../disk/compareDisks.js';
import { convertDisk } from '../../disk/convertDisk.js';
import { createDisk } from '../../disk/createDisk.js';
import { diskInfo, type DiskInfo } from '../../disk/diskInfo.js';
import { mergeDisk } from '../../disk/mergeDisk.js';
import { resizeDisk } from '../../disk/resizeDisk.js';
import type { DiskFormat } from '../../disk/sniffFormat.js';
import { formatSize, parseSize } from '../../util/size.js';
import { abortOnSignals } from '../abortOnSignals.js';
import { printResult } from '../output.js';
import { progress } from '../progress.js';

/**
 * `tidemark disk ...`: create, inspect, check, convert, compare, merge and resize disks.
 * Thin: parse, call src/disk, format. Exit codes: 0 ok; 1 `compare` found a difference or `check`
 * found problems; 2 usage; 3 file not found; 4 a disk is corrupt (other commands); 7 unsupported format.
 */
export function register(program: Command): void {
  const disk = program
    .command('disk')
    .description('create, inspect, check, convert, compare, merge and resize VHDX and raw disks (format detected from content)');

  disk
    .command('create <path>')
    .description('create a new disk (default: dynamic VHDX; --parent makes a differencing VHDX)')
    .option('--size <size>', 'virtual size, e.g. 10G (K/M/G/T suffixes); defaults to the parent size with --parent', sizeArg)
    .addOption(new Option('--format <format>', 'disk format').choices(['vhdx', 'raw']).default('vhdx'))
    .addOption(new Option('--type <type>', 'VHDX type').choices(['dynamic', 'fixed']))
    .option('--block-size <size>', 'VHDX block size, 1M to 256M, power of two', sizeArg)
    .addOption(new Option('--logical-sector-size <bytes>', 'VHDX logical sector size').choices(['512', '4096']))
    .addOption(new Option('--physical-sector-size <bytes>', 'VHDX physical sector size').choices(['512', '4096']))
    .option('--parent <path>', 'parent VHDX: create a differencing disk over it')
    .option('--json', 'print the new disk info as JSON')
    .action(async (path: string, o: CreateOpts) => {
      const info = await createDisk(path, {
        format: o.format,
        ...(o.size !== undefined ? { size: o.size } : {}),
        ...(o.type !== undefined ? { type: o.type } : {}),
        ...(o.blockSize !== undefined ? { blockSize: o.blockSize } : {}),
        ...(o.logicalSectorSize !== undefined ? { logicalSectorSize: Number(o.logicalSectorSize) as 512 | 4096 } : {}),
        ...(o.physicalSectorSize !== undefined ? { physicalSectorSize: Number(o.physicalSectorSize) as 512 | 4096 } : {}),
        ...(o.parent !== undefined ? { parent: o.parent } : {}),
      });
      printResult(o.json, info, () => `created ${path}: ${describe(info)}`);
    });

  disk
    .command('info <path>')
    .description('show format, type, sizes, identity and parent chain of a disk')
    .option('--json', 'print as JSON')
    .action(async (path: string, o: { json?: boolean }) => {
      const info = await diskInfo(path);
      printResult(o.json, info, () => infoText(info));
    });

  disk
    .command('check <path>')
    .description(`check a disk's structures (read-only unless --repair); exits ${ExitCode.DIFFERENT} when problems are found`)
    .option('--repair', 'replay a dirty VHDX log left by a crashed writer (takes the disk lock exclusively)')
    .option('--json', 'print as JSON')
    .action(async (path: string, o: { json?: boolean; repair?: boolean }) => {
      const r = await checkDisk(path, { repair: !!o.repair });
      printResult(o.json, r, () => {
        const head = r.ok ? `${path}: OK (${r.format}${r.size !== null ? `, ${formatSize(r.size)}` : ''})` : `${path}: ${r.problems.length} problem(s) found`;
        const lines = r.problems.map((p) => `  ${p.structure}: ${p.message}`);
        if (r.repaired) lines.push('  repaired: replayed the VHDX log left by a writer that did not close the disk cleanly');
        if (r.logDirty) lines.push(`  note: the VHDX log has unapplied entries (read-only opens refuse the disk); replay them with \`tidemark disk check --repair ${path}\``);
        if (!r.ok) lines.push('  the disk is damaged: restore it from a backup, or copy out what is readable with `tidemark disk convert`');
        return [head, ...lines].join('\n');
      });
      if (!r.ok) process.exitCode = ExitCode.DIFFERENT;
    });

  disk
    .command('convert <src> <dst>')
    .description('convert a disk to a new standalone sparse disk (flattens differencing chains); replaces dst atomically')
    .addOption(new Option('--format <format>', 'output format').choices(['vhdx', 'raw']).default('vhdx'))
    .addOption(new Option('--type <type>', 'VHDX output type (default dynamic)').choices(['dynamic', 'fixed']))
    .option('--block-size <size>', 'VHDX output block size, 1M to 256M, power of two', sizeArg)
    .addOption(new Option('--logical-sector-size <bytes>', 'VHDX output logical sector size (default: the source\'s)').choices(['512', '4096']))
    .option('--json', 'print a summary as JSON')
    .action(async (src: string, dst: string, o: ConvertOpts) => {
      let bar: ReturnType<typeof progress> | undefined;
      // Ctrl-C stops the copy cleanly: the temporary output is removed and dst stays as it was.
      const abort = abortOnSignals();
      try {
        const r = await convertDisk(src, dst, {
          signal: abort.signal,
          format: o.format,
          ...(o.type !== undefined ? { type: o.type } : {}),
          ...(o.blockSize !== undefined ? { blockSize: o.blockSize } : {}),
          ...(o.logicalSectorSize !== undefined ? { logicalSectorSize: Number(o.logicalSectorSize) as 512 | 4096 } : {}),
          onProgress: (done, total) => {
            bar ??= progress(`convert ${src}`, total, process.stderr.isTTY === true && !o.json);
            bar.update(done);
          },
        });
        bar?.stop();
        bar = undefined;
        printResult(o.json, r, () => `converted ${src} to ${dst} (${r.format}, ${formatSize(r.size)}; ${formatSize(r.written)} of data written)`);
      } finally {
        bar?.stop();
        abort.dispose();
      }
    });

  disk
    .command('compare <a> <b>')
    .description(`compare the content of two disks of any formats; exits ${ExitCode.DIFFERENT} with the first differing offset when they differ`)
    .option('--json', 'print as JSON')
    .action(async (a: string, b: string, o: { json?: boolean }) => {
      let bar: ReturnType<typeof progress> | undefined;
      try {
        const r = await compareDisks(a, b, {
          onProgress: (done, total) => {
            bar ??= progress('compare', total, process.stderr.isTTY === true && !o.json);
            bar.update(done);
          },
        });
        bar?.stop();
        bar = undefined;
        printResult(o.json, r, () => {
          if (r.equal) return 'disks are identical';
          const sizes = r.sizeA !== r.sizeB ? ` (sizes differ: ${r.sizeA} vs ${r.sizeB} bytes)` : '';
          return `disks differ at offset ${r.firstDifference}${sizes}`;
        });
        if (!r.equal) process.exitCode = ExitCode.DIFFERENT;
      } finally {
        bar?.stop();
      }
    });

  disk
    .command('merge <child>')
    .description('merge a differencing VHDX into its parent')
    .option('--json', 'print as JSON')
    .action(async (child: string, o: { json?: boolean }) => {
      const r = await mergeDisk(child);
      printResult(o.json, r, () => `merged ${r.child} into ${r.parent}`);
    });

  disk
    .command('resize <path>')
    .description('change the virtual size of a disk (shrinking needs --force)')
    .requiredOption('--size <size>', 'new virtual size, e.g. 20G', sizeArg)
    .option('--force', 'allow shrinking, which discards the data past the new size')
    .option('--json', 'print as JSON')
    .action(async (path: string, o: { size: number; force?: boolean; json?: boolean }) => {
      const r = await resizeDisk(path, o.size, { force: !!o.force });
      printResult(o.json, r, () => `resized ${path} from ${formatSize(r.oldSize)} to ${formatSize(r.newSize)}`);
    });
}

interface CreateOpts {
  size?: number;
  format: DiskFormat;
  type?: 'dynamic' | 'fixed';
  blockSize?: number;
  logicalSectorSize?: string;
  physicalSectorSize?: string;
  parent?: string;
  json?: boolean;
}

interface ConvertOpts {
  format: DiskFormat;
  type?: 'dynamic' | 'fixed';
  blockSize?: number;
  logicalSectorSize?: string;
  json?: boolean;
}

/** Commander argument parser for sizes: "10G" -> bytes; a bad size is a usage error. */
function sizeArg(text: string): number {
  try {
    return parseSize(text);
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message);
  }
}

function describe(i: DiskInfo): string {
  return `${i.format} ${i.type}, ${formatSize(i.size)}`;
}

function infoText(i: DiskInfo): string {
  const rows: Array<[string, string]> = [
    ['path', i.path],
    ['format', i.format],
    ['type', i.type],
    ['virtual size', `${formatSize(i.size)} (${i.size} bytes)`],
  ];
  if (i.blockSize !== null) rows.push(['block size', formatSize(i.blockSize)]);
  rows.push(['sector size', `${i.logicalSectorSize} logical, ${i.physicalSectorSize} physical`]);
  rows.push(['allocated', `${formatSize(i.allocatedBytes)} (${i.allocatedBytes} bytes)`]);
  rows.push(['file size', `${formatSize(i.fileSize)} (${i.fileSize} bytes)`]);
  if (i.diskId !== null) rows.push(['disk id', i.diskId]);
  if (i.dataWriteGuid !== null) rows.push(['data write guid', i.dataWriteGuid]);
  if (i.logDirty) rows.push(['log', 'dirty (replayed on the next writable open)']);
  i.parentChain.forEach((p, n) => rows.push([n === 0 ? 'parent' : `ancestor ${n + 1}`, p]));
  const w = Math.max(...rows.map(([k]) => k.length));
  return rows.map(([k, v]) => `${k.padEnd(w)}  ${v}`).join('\n');
}
