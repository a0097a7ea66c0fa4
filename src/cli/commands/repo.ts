import { Command, InvalidArgumentError } from 'commander';
import { ExitCode } from '../../errors.js';
import { LocalBackend } from '../../backend/LocalBackend.js';
import { listSnapshots } from '../../repo/Manifest.js';
import { openRepositoryAt, readPassphrase } from '../../repo/openRepositoryAt.js';
import { forget, prune } from '../../repo/prune.js';
import type { ForgetPolicy } from '../../repo/forgetPolicy.js';
import { removeStaleLocks } from '../../repo/RepoLock.js';
import { Repository } from '../../repo/Repository.js';
import { verifyRepository } from '../../repo/verifyRepository.js';
import { UsageError } from '../../errors.js';
import { formatSize, parseSize } from '../../util/size.js';
import { defaultRepositoryPath } from '../../backup/defaultRepository.js';
import { repositoryStats } from '../../backup/repositoryStats.js';
import { printResult } from '../output.js';

/**
 * `tidemark repo ...`: create and maintain backup repositories (a directory). Thin: parse, call
 * src/repo, format. Passphrases come from `--passphrase-file` or TIDEMARK_PASSPHRASE, never argv.
 * Exit codes: 0 ok; 1 `verify` found damage; 2 usage / wrong passphrase; 3 no repository;
 * 4 corrupt; 5 locked by another process.
 */
export function register(program: Command): void {
  const repo = program.command('repo').description('create and maintain backup repositories (init, snapshots, verify, forget, prune, stats, unlock)');
  const pass = (c: Command): Command => c.option('--passphrase-file <file>', 'read the passphrase from the first line of this file (default: $TIDEMARK_PASSPHRASE)');

  pass(
    repo
      .command('init <path>')
      .description('create a repository in an empty directory')
      .option('--encrypt', 'encrypt with a passphrase (from --passphrase-file or $TIDEMARK_PASSPHRASE)')
      .option('--chunk-size <size>', 'chunk size for new disks, 4K..4M, power of two (default 32K)', sizeArg)
      .option('--json', 'print as JSON'),
  ).action(async (path: string, o: { encrypt?: boolean; chunkSize?: number; passphraseFile?: string; json?: boolean }) => {
    let passphrase: string | undefined;
    if (o.encrypt) {
      passphrase = await readPassphrase(o);
      if (!passphrase) throw new UsageError('--encrypt needs a passphrase: set TIDEMARK_PASSPHRASE or use --passphrase-file');
    }
    const r = await Repository.init(new LocalBackend(path), { passphrase, chunkSize: o.chunkSize });
    printResult(o.json, { path, ...r.config }, () => `created ${r.config.encryption === 'none' ? 'unencrypted' : 'encrypted'} repository ${r.config.id} at ${path} (chunk size ${formatSize(r.config.chunkSize)}, compression ${r.config.compression})`);
  });

  pass(repo.command('snapshots <path>').description('list restore points, oldest first').option('--json', 'print as JSON')).action(async (path: string, o: { passphraseFile?: string; json?: boolean }) => {
    const r = await openRepositoryAt(path, o);
    const snaps = await listSnapshots(r, { onDamaged: warnDamaged });
    printResult(o.json, snaps, () =>
      snaps.length === 0
        ? 'no snapshots'
        : snaps.map((s) => `${s.id.slice(0, 12)}  ${s.time}  ${s.host}  ${s.source.name}  ${s.disks.map((d) => `${d.name}:${formatSize(d.size)}`).join(' ')}`).join('\n'),
    );
  });

  const verifyCmd = (c: Command): Command =>
    pass(
      c
        .description(`check every restore point can be restored; exits ${ExitCode.DIFFERENT} and names the damaged objects and affected snapshots otherwise`)
        .option('--read-data', 'read and verify every chunk (default: check that chunks exist)')
        .option('--json', 'print as JSON'),
    );
  const verifyAction = async (path: string, o: { readData?: boolean; passphraseFile?: string; json?: boolean }): Promise<void> => {
    const r = await openRepositoryAt(path, o);
    const rep = await verifyRepository(r, { readData: !!o.readData });
    printResult(o.json, rep, () => {
      const head = rep.ok
        ? `${path}: OK (${rep.snapshots} snapshots, ${rep.pages} index pages, ${rep.chunks} chunks${o.readData ? `, ${formatSize(rep.bytesRead)} read` : ''})`
        : `${path}: ${rep.problems.length} damaged object(s)`;
      const lines = rep.problems.map((p) => `  ${p.type}/${p.name}: ${p.problem}; affects ${p.snapshots.length ? p.snapshots.map((s) => s.slice(0, 12)).join(', ') : 'no snapshot'}`);
      if (!rep.ok) lines.push('  back up the affected sources again; then forget the damaged snapshots and prune');
      return [head, ...lines].join('\n');
    });
    if (!rep.ok) process.exitCode = ExitCode.DIFFERENT;
  };
  verifyCmd(repo.command('verify <path>')).action(verifyAction);
  verifyCmd(program.command('verify')).option('--repo <dir>', DEFAULT_REPO_HELP).action((o: { repo?: string; readData?: boolean; passphraseFile?: string; json?: boolean }) => verifyAction(o.repo ?? defaultRepositoryPath(), o));

  const keep = (c: Command): Command =>
    c
      .option('--keep-last <n>', 'keep the n newest snapshots', countArg)
      .option('--keep-hourly <n>', 'keep the newest snapshot of each of the last n hours', countArg)
      .option('--keep-daily <n>', 'keep the newest snapshot of each of the last n days', countArg)
      .option('--keep-weekly <n>', 'keep the newest snapshot of each of the last n weeks', countArg)
      .option('--keep-monthly <n>', 'keep the newest snapshot of each of the last n months', countArg)
      .option('--keep-yearly <n>', 'keep the newest snapshot of each of the last n years', countArg);
  const forgetCmd = (c: Command): Command => pass(keep(c.description('remove snapshots not kept by the policy (per host + source); see also --prune')).option('--snapshot <id...>', 'also remove these snapshots by id (works for damaged manifests too)').option('--dry-run', 'only show what would be removed').option('--prune', 'prune afterwards').option('--json', 'print as JSON'));
  const forgetAction = async (path: string, o: KeepOpts & { snapshot?: string[]; dryRun?: boolean; prune?: boolean; passphraseFile?: string; json?: boolean }): Promise<void> => {
      const policy: ForgetPolicy = { last: o.keepLast, hourly: o.keepHourly, daily: o.keepDaily, weekly: o.keepWeekly, monthly: o.keepMonthly, yearly: o.keepYearly };
      if (!Object.values(policy).some((n) => (n ?? 0) > 0) && !o.snapshot?.length) throw new UsageError('forget needs a policy (at least one --keep-* option) or --snapshot <id>');
      const r = await openRepositoryAt(path, o);
      const f = await forget(r, policy, { dryRun: o.dryRun, ids: o.snapshot });
      for (const d of f.damaged) process.stderr.write(`tidemark: warning: snapshot ${d.id.slice(0, 12)} is damaged and was kept (${d.message}); remove it with --snapshot ${d.id.slice(0, 12)}\n`);
      const pr = o.prune && !o.dryRun ? await prune(r) : null;
      const out = { kept: f.kept.map((k) => ({ id: k.snapshot.id, time: k.snapshot.time, reasons: k.reasons })), removed: [...f.removedIds.map((id) => ({ id, time: null as string | null })), ...f.removed.map((s) => ({ id: s.id, time: s.time as string | null }))], damaged: f.damaged, prune: pr, dryRun: !!o.dryRun };
      printResult(o.json, out, () =>
        [
          ...out.kept.map((k) => `keep   ${k.id.slice(0, 12)}  ${k.time}  (${k.reasons.join(', ')})`),
          ...out.removed.map((k) => `${o.dryRun ? 'would remove' : 'remove'} ${k.id.slice(0, 12)}  ${k.time ?? '(by id)'}`),
          ...(pr ? [pruneText(pr)] : []),
        ].join('\n'),
      );
  };
  forgetCmd(repo.command('forget <path>')).action(forgetAction);
  forgetCmd(program.command('forget')).option('--repo <dir>', DEFAULT_REPO_HELP).action((o: KeepOpts & { repo?: string; snapshot?: string[]; dryRun?: boolean; prune?: boolean; passphraseFile?: string; json?: boolean }) => forgetAction(o.repo ?? defaultRepositoryPath(), o));

  const pruneCmd = (c: Command): Command => pass(c.description('delete chunks and index pages no snapshot references (exclusive lock; objects younger than 2 h are kept)').option('--dry-run', 'only count').option('--json', 'print as JSON'));
  const pruneAction = async (path: string, o: { dryRun?: boolean; passphraseFile?: string; json?: boolean }): Promise<void> => {
    const r = await openRepositoryAt(path, o);
    const pr = await prune(r, { dryRun: o.dryRun });
    printResult(o.json, pr, () => pruneText(pr, o.dryRun));
  };
  pruneCmd(repo.command('prune <path>')).action(pruneAction);
  pruneCmd(program.command('prune')).option('--repo <dir>', DEFAULT_REPO_HELP).action((o: { repo?: string; dryRun?: boolean; passphraseFile?: string; json?: boolean }) => pruneAction(o.repo ?? defaultRepositoryPath(), o));

  const statsCmd = (c: Command): Command => pass(c.description('count and size the stored objects and snapshots').option('--json', 'print as JSON'));
  const statsAction = async (path: string, o: { passphraseFile?: string; json?: boolean }): Promise<void> => {
    const r = await openRepositoryAt(path, o);
    const st = await repositoryStats(r);
    printResult(o.json, st, () =>
      [
        `${st.location}: ${st.encryption === 'none' ? 'unencrypted' : st.encryption}, compression ${st.compression}`,
        `${st.snapshots} snapshot(s) of ${st.sources} source(s), ${formatSize(st.logicalBytes)} as full copies`,
        `${st.chunks} chunk(s), ${formatSize(st.chunkBytes)}; ${st.indexPages} index page(s), ${formatSize(st.indexBytes)}; stored ${formatSize(st.chunkBytes + st.indexBytes)}`,
      ].join('\n'),
    );
  };
  statsCmd(repo.command('stats <path>')).action(statsAction);
  statsCmd(program.command('stats')).option('--repo <dir>', DEFAULT_REPO_HELP).action((o: { repo?: string; passphraseFile?: string; json?: boolean }) => statsAction(o.repo ?? defaultRepositoryPath(), o));

  pass(repo.command('unlock <path>').description('remove stale locks left by crashed processes').option('--json', 'print as JSON')).action(async (path: string, o: { passphraseFile?: string; json?: boolean }) => {
    const r = await openRepositoryAt(path, o);
    const removed = await removeStaleLocks(r);
    printResult(o.json, { removed }, () => `removed ${removed} stale lock(s)`);
  });
}

const DEFAULT_REPO_HELP = 'repository directory (default: $TIDEMARK_HOME/repo)';

interface KeepOpts {
  keepLast?: number;
  keepHourly?: number;
  keepDaily?: number;
  keepWeekly?: number;
  keepMonthly?: number;
  keepYearly?: number;
}

function pruneText(p: { removedChunks: number; removedPages: number; bytesFreed: number; keptYoung: number; snapshots: number }, dryRun = false): string {
  return `${dryRun ? 'would remove' : 'removed'} ${p.removedChunks} chunk(s) and ${p.removedPages} index page(s), ${formatSize(p.bytesFreed)}; kept ${p.keptYoung} unreferenced object(s) younger than the grace period; ${p.snapshots} snapshot(s) remain`;
}

function sizeArg(v: string): number {
  try {
    return parseSize(v);
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message);
  }
}

function countArg(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError(`"${v}" is not a non-negative integer`);
  return n;
}

/** `snapshots` and `forget` list what they can read and name each damaged manifest on stderr. */
export function warnDamaged(id: string, err: Error): void {
  process.stderr.write(`tidemark: warning: snapshot ${id.slice(0, 12)} is damaged and not listed (${err.message}); run verify, then \`tidemark forget --snapshot ${id.slice(0, 12)}\`\n`);
}
