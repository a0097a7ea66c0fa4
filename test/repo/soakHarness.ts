/**
 * Black-box fault harness for the repository: rounds of "mutate real disk images, run `tidemark backup`,
 * `forget` and `prune` through the real CLI — sometimes concurrently — and SIGKILL some of them at a
 * random moment", each round followed by the checks a user relies on:
 *
 * - `verify --read-data` exits 0 and reports no damage (a damaged or dangling object is a bug);
 * - every listed snapshot restores (`restore --to`) bit-exact to the shadow hash of the disk state the
 *   backup that wrote it captured (disks change only between rounds, so a snapshot that appears in a
 *   round — from a completed backup, or from one killed after its manifest was stored — must equal the
 *   disk's state of that round);
 * - a snapshot disappears only through a forget of that round and never one a completed forget kept;
 *   a completed backup's snapshot is listed; a failed (not killed) backup leaves no snapshot;
 * - exit codes other than 0 are only the ones a race explains: 5 (locked by the concurrent op) and 6
 *   (parent forgotten by a concurrent forget);
 * - after a killed or failed backup, the next backup of that disk succeeds (incremental or full-scan);
 * - at the end, with every object aged past the grace period, `prune` leaves no garbage.
 *
 * Every decision comes from a seeded PRNG (`seed`), so a failing seed replays the same operations,
 * data and kill plan; kill instants are wall-clock and vary a little between runs. Prune keeps
 * unreferenced objects younger than 2 h, so before most rounds every file of the repository is aged by
 * 3 h (utimes): prune then really deletes the garbage that killed backups leave, and a backup racing a
 * prune is the dangerous case the repository locks must make safe.
 */
import { spawn } from 'node:child_process';
import { createCipheriv, createHash } from 'node:crypto';
import { mkdir, open, readdir, readFile, rm, stat, truncate, utimes } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DiskLock } from '../../src/blockdev/DiskLock.js';
import type { BlockDevice } from '../../src/blockdev/BlockDevice.js';
import { openTrackedDisk } from '../../src/rct/openTrackedDisk.js';

/** The compiled CLI, found relative to this compiled file (<outDir>/test/repo -> <outDir>/src/cli). */
export const CLI_MAIN = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));

const MiB = 1024 * 1024;
const HOUR = 3600_000;

export interface RepoSoakOptions {
  /** Working directory (disks, repository, restores); the caller removes it. */
  dir: string;
  rounds: number;
  seed: number;
  /** Size of each of the two disk images (default 16 MiB). */
  diskSize?: number;
  /**
   * Which snapshots to restore after each round: `all` (every listed one, every round),
   * `after-prune` (default: every one after a round with a prune, else the new ones plus two random
   * others) or `sample` (only the new ones). All restore everything at the end.
   * (`verify --read-data` checks every chunk of every snapshot in every round either way, and trees
   * are immutable, so a snapshot not restored in a round cannot have changed unnoticed.)
   */
  restore?: 'all' | 'after-prune' | 'sample';
  /**
   * Also run readers (`verify --read-data`, `restore` of a listed snapshot) concurrently with the
   * round's operations, never killed. A reader must never restore wrong bytes (a hard failure); a
   * reader that fails or reports damage while the repository is fine (the post-round verify passes and
   * its snapshot is still listed) is recorded in `readerAnomalies` (default false).
   */
  readers?: boolean;
  /** Encrypt the repository (default: chosen by the seed). */
  encrypt?: boolean;
  log?: (line: string) => void;
}

export type OpKind = 'backup' | 'forget' | 'prune';
export type Outcome = 'completed' | 'killed' | 'killed-after-output' | 'locked' | 'parent-missing' | 'failed';

export interface RepoSoakResult {
  seed: number;
  rounds: number;
  encrypted: boolean;
  /** Operations per kind and outcome, e.g. `backup killed: 12`. */
  outcomes: Record<string, number>;
  /** Backups killed whose snapshot nevertheless became visible (killed after the manifest). */
  killedAfterCommit: number;
  /** Backup modes seen (including follow-up backups). */
  modes: Record<string, number>;
  /** Distinct full-scan reasons (the start of each). */
  fullScanReasons: string[];
  restores: number;
  verifies: number;
  /** Bytes prune reported freed (proves prune had garbage to remove). */
  bytesPruned: number;
  maxSnapshots: number;
  /** Readers that failed, or reported damage, though the repository was fine (see `readers`). */
  readerAnomalies: string[];
  /** Concurrent readers run. */
  readers: number;
}

/** A check failed: the message names the seed, the round and the operations of the round. */
export class RepoSoakFailure extends Error {
  constructor(readonly seed: number, readonly round: number, message: string) {
    super(`repo soak (seed ${seed}, round ${round}): ${message}\nreplay the decisions with TIDEMARK_SOAK_SEED=${seed} (kill instants vary)`);
    this.name = 'RepoSoakFailure';
  }
}

/** mulberry32: a small seeded PRNG. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface Proc {
  kind: OpKind;
  args: string[];
  label: string;
  startedAt: number;
  killAt: number | null;
  done: Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string; ms: number }>;
  kill(): void;
}

interface OpRecord {
  kind: OpKind;
  label: string;
  disk?: number;
  outcome: Outcome;
  code: number | null;
  ms: number;
  killAfterMs: number | null;
  json: unknown;
  stderr: string;
}

interface SnapshotJson {
  id: string;
  time: string;
  source: { id: string; name: string };
  disks: Array<{ name: string; size: number; indexRoot: string }>;
}

interface Expect {
  hash: string;
  size: number;
  round: number;
}

export async function runRepoSoak(opts: RepoSoakOptions): Promise<RepoSoakResult> {
  const rand = prng(opts.seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
  const between = (lo: number, hi: number): number => lo + Math.floor(rand() * (hi - lo + 1));
  const log = opts.log ?? (() => undefined);
  const diskSize = opts.diskSize ?? 16 * MiB;
  const encrypted = opts.encrypt ?? rand() < 0.5;
  const home = join(opts.dir, 'home');
  const repo = join(opts.dir, 'repo');
  const restoreDir = join(opts.dir, 'restore');
  await mkdir(home, { recursive: true });
  await mkdir(restoreDir, { recursive: true });
  const env: NodeJS.ProcessEnv = { ...process.env, TIDEMARK_HOME: home };
  if (encrypted) env.TIDEMARK_PASSPHRASE = `soak ${opts.seed}`;
  else delete env.TIDEMARK_PASSPHRASE;

  const result: RepoSoakResult = { seed: opts.seed, rounds: 0, encrypted, outcomes: {}, killedAfterCommit: 0, modes: {}, fullScanReasons: [], restores: 0, verifies: 0, bytesPruned: 0, maxSnapshots: 0, readerAnomalies: [], readers: 0 };
  // Typical durations (ms) of an uninterrupted op, to aim kills inside it; updated as we go.
  const est: Record<OpKind, number> = { backup: 1500, forget: 700, prune: 900 };
  // Time a CLI process needs before it touches the repository (module loading; `snapshots` runs are
  // almost only that): kills are aimed after it, so most land in the operation's real work.
  let startupEst = 400;
  let round = -1;
  const fail = (msg: string, ops: OpRecord[] = []): never => {
    const lines = ops.map((o) => `  ${o.label}: ${o.outcome} (exit ${o.code}, ${o.ms} ms${o.killAfterMs !== null ? `, kill planned at ${o.killAfterMs} ms` : ''})${o.stderr ? ` stderr: ${o.stderr.trim().slice(-400)}` : ''}`);
    throw new RepoSoakFailure(opts.seed, round, [msg, ...(lines.length ? ['operations of the round:', ...lines] : [])].join('\n'));
  };

  const start = (kind: OpKind, args: string[], label: string, killAfterMs: number | null): Proc => {
    const child = spawn(process.execPath, [CLI_MAIN, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    const t0 = Date.now();
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const done = new Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string; ms: number }>((res, rej) => {
      child.on('error', rej);
      child.on('close', (code, signal) => res({ code, signal, stdout, stderr, ms: Date.now() - t0 }));
    });
    let timer: NodeJS.Timeout | null = null;
    const proc: Proc = {
      kind,
      args,
      label,
      startedAt: t0,
      killAt: killAfterMs,
      done,
      kill: () => {
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      },
    };
    if (killAfterMs !== null) timer = setTimeout(proc.kill, killAfterMs);
    void done.finally(() => timer && clearTimeout(timer));
    return proc;
  };

  /** Run a CLI command to completion (never killed); returns exit code, parsed JSON (if any) and stderr. */
  const run = async (args: string[]): Promise<{ code: number | null; json: unknown; stderr: string; stdout: string; ms: number }> => {
    const r = await start('backup', args, args.join(' '), null).done;
    let json: unknown = undefined;
    try {
      json = JSON.parse(r.stdout);
    } catch {
      /* not JSON */
    }
    return { code: r.code, json, stderr: r.stderr, stdout: r.stdout, ms: r.ms };
  };

  // ---- disks and their shadow state -------------------------------------------------------------
  const disks = [join(opts.dir, 'disk0.raw'), join(opts.dir, 'disk1.raw')];
  const sourceIds: string[] = [];
  const state: Expect[] = [];
  const bytes = (n: number): Buffer => {
    // Fast seeded pseudo-random bytes: AES-128-CTR of zeros, keyed from the PRNG.
    const key = Buffer.alloc(16);
    for (let i = 0; i < 16; i++) key[i] = Math.floor(rand() * 256);
    return createCipheriv('aes-128-ctr', key, Buffer.alloc(16)).update(Buffer.alloc(n));
  };
  const content = (n: number): Buffer => {
    const k = rand();
    if (k < 0.55) return bytes(n); // incompressible
    if (k < 0.8) {
      const unit = bytes(between(1, 64));
      const b = Buffer.alloc(n);
      for (let o = 0; o < n; o += unit.length) unit.copy(b, o);
      return b; // compressible
    }
    return Buffer.alloc(n); // zeros (zero chunks are not stored)
  };
  const hashDisk = async (i: number): Promise<Expect> => {
    const b = await readFile(disks[i]!);
    return { hash: createHash('sha256').update(b).digest('hex'), size: b.length, round };
  };
  for (let i = 0; i < disks.length; i++) {
    const fh = await open(disks[i]!, 'w');
    await fh.truncate(diskSize);
    for (let n = between(2, 6); n > 0; n--) {
      const len = between(1, 24) * 64 * 1024;
      await fh.write(content(len), 0, len, between(0, diskSize - len));
    }
    await fh.close();
    sourceIds.push(`disk:${disks[i]!}`);
    state.push(await hashDisk(i));
  }

  /** Random writes: through change tracking (as a guest), behind its back; or a resize; or tracking files deleted. */
  const mutate = async (i: number): Promise<string> => {
    const path = disks[i]!;
    const size = (await stat(path)).size;
    const k = rand();
    const writes: Array<{ off: number; data: Buffer }> = [];
    const planWrites = (count: number) => {
      for (let n = 0; n < count; n++) {
        const len = rand() < 0.5 ? between(1, 16) * 4096 : between(1, 1024 * 1024);
        const off = rand() < 0.5 ? between(0, Math.floor((size - len) / 4096)) * 4096 : between(0, size - len);
        writes.push({ off, data: content(len) });
      }
    };
    if (k < 0.58) {
      planWrites(between(1, 12));
      const lock = await DiskLock.acquire(path, { exclusive: true, holder: 'soak writer' });
      let dev: BlockDevice | undefined;
      try {
        dev = await openTrackedDisk(path);
        for (const w of writes) {
          if (rand() < 0.2) {
            // copy existing content (deduplicates)
            const from = between(0, size - w.data.length);
            await dev.write(w.off, await dev.read(from, w.data.length));
          } else await dev.write(w.off, w.data);
        }
      } finally {
        await dev?.close();
        await lock.release();
      }
      return `tracked ${writes.length} write(s)`;
    }
    if (k < 0.9) {
      planWrites(between(1, 6));
      const fh = await open(path, 'r+');
      try {
        for (const w of writes) await fh.write(w.data, 0, w.data.length, w.off);
      } finally {
        await fh.close();
      }
      return `outside ${writes.length} write(s)`;
    }
    if (k < 0.95) {
      // The next backup must re-enable tracking (a kill may land in it) and full-scan.
      await rm(`${path}.rct`, { force: true });
      await rm(`${path}.mrt`, { force: true });
      return 'tracking files deleted';
    }
    const newSize = Math.max(4 * MiB, Math.min(2 * diskSize, size + (rand() < 0.5 ? -1 : 1) * between(1, 64) * 64 * 1024));
    await truncate(path, newSize);
    return `resized ${size} -> ${newSize}`;
  };

  /** Age every file of the repository past the prune grace period (2 h). */
  const ageRepository = async (): Promise<void> => {
    const past = new Date(Date.now() - 3 * HOUR);
    const walk = async (d: string): Promise<void> => {
      for (const e of await readdir(d, { withFileTypes: true }).catch(() => [])) {
        const p = join(d, e.name);
        if (e.isDirectory()) await walk(p);
        else if (e.isFile()) await utimes(p, past, past).catch(() => undefined);
      }
    };
    await walk(repo);
  };

  const listSnapshots = async (ops: OpRecord[]): Promise<SnapshotJson[]> => {
    const r = await run(['snapshots', '--repo', repo, '--json']);
    if (r.code !== 0 || !Array.isArray(r.json)) fail(`snapshots exited ${r.code}: ${r.stderr}`, ops);
    startupEst = Math.round(startupEst * 0.7 + r.ms * 0.3);
    return r.json as SnapshotJson[];
  };

  const verify = async (ops: OpRecord[], what: string): Promise<void> => {
    const r = await run(['verify', '--repo', repo, '--read-data', '--json']);
    result.verifies++;
    const rep = r.json as { ok?: boolean; problems?: unknown[] } | undefined;
    if (r.code !== 0 || rep?.ok !== true) fail(`verify --read-data after ${what} exited ${r.code}: ${r.stdout.slice(0, 2000)} ${r.stderr}`, ops);
  };

  // Known snapshots: id -> the disk state it must restore to.
  const expected = new Map<string, Expect>();
  const restored = new Set<string>();

  const restoreCheck = async (snaps: SnapshotJson[], which: Set<string> | 'all', ops: OpRecord[]): Promise<void> => {
    for (const s of snaps) {
      if (which !== 'all' && !which.has(s.id)) continue;
      const e = expected.get(s.id);
      if (!e) fail(`snapshot ${s.id} has no recorded disk state`, ops);
      const out = join(restoreDir, `${s.id.slice(0, 16)}.raw`);
      const r = await run(['restore', s.id, '--repo', repo, '--to', out, '--force', '--json']);
      if (r.code !== 0) fail(`restore of ${s.id} (state of round ${e!.round}) exited ${r.code}: ${r.stderr}`, ops);
      const b = await readFile(out);
      await rm(out, { force: true });
      const h = createHash('sha256').update(b).digest('hex');
      if (h !== e!.hash || b.length !== e!.size) fail(`snapshot ${s.id} restores to ${b.length} B sha256 ${h.slice(0, 16)}…, but the disk it was taken of (round ${e!.round}) was ${e!.size} B sha256 ${e!.hash.slice(0, 16)}…`, ops);
      result.restores++;
      restored.add(s.id);
    }
  };

  const noteBackup = (json: unknown): void => {
    const j = json as { mode?: string; reason?: string };
    if (!j?.mode) return;
    result.modes[j.mode] = (result.modes[j.mode] ?? 0) + 1;
    if (j.reason) {
      const r = j.reason.replace(/[0-9a-f]{12}/g, '…').replace(/\d+/g, 'N').slice(0, 90);
      if (!result.fullScanReasons.includes(r)) result.fullScanReasons.push(r);
    }
  };

  // ---- the repository --------------------------------------------------------------------------
  const init = await run(['repo', 'init', repo, ...(encrypted ? ['--encrypt'] : []), '--chunk-size', pick(['16K', '32K', '64K']), '--json']);
  if (init.code !== 0) fail(`repo init exited ${init.code}: ${init.stderr}`);
  let known = new Set<string>();

  const forgetArgs = (): string[] => {
    const a = ['forget', '--repo', repo, '--json'];
    const policies: Array<[string, number, number]> = [
      ['--keep-last', 1, 4],
      ['--keep-hourly', 1, 3],
      ['--keep-daily', 1, 2],
      ['--keep-weekly', 1, 2],
      ['--keep-monthly', 1, 2],
      ['--keep-yearly', 1, 2],
    ];
    const n = between(1, 2);
    for (let i = 0; i < n; i++) {
      const [flag, lo, hi] = pick(policies);
      if (!a.includes(flag)) a.push(flag, String(between(lo, hi)));
    }
    if (rand() < 0.3) a.push('--prune');
    return a;
  };

  for (round = 0; round < opts.rounds; round++) {
    // 1. Age the repository so prune deletes garbage; change the disks.
    if (rand() < 0.8) await ageRepository();
    const changes: string[] = [];
    for (let i = 0; i < disks.length; i++) {
      if (rand() < 0.6) {
        changes.push(`disk${i} ${await mutate(i)}`);
        state[i] = await hashDisk(i);
      }
    }

    // 2. The operations of this round, started a little apart, some killed.
    const scenario = rand();
    const plan: Array<{ kind: OpKind; disk?: number; args: string[] }> = [];
    const backupOf = (i: number) => ({ kind: 'backup' as const, disk: i, args: ['backup', disks[i]!, '--repo', repo, '--json'] });
    const pruneOp = () => ({ kind: 'prune' as const, args: ['prune', '--repo', repo, '--json'] });
    if (scenario < 0.35) plan.push(pick([backupOf(0), backupOf(1), backupOf(between(0, 1)), { kind: 'forget' as const, args: forgetArgs() }, pruneOp()]));
    else if (scenario < 0.7) plan.push(backupOf(between(0, 1)), pruneOp()); // a backup racing a prune
    else {
      plan.push(backupOf(0), backupOf(1), { kind: 'forget' as const, args: forgetArgs() });
      if (rand() < 0.5) plan.push(pruneOp());
    }
    // Shuffle so either side of a race may start first.
    for (let i = plan.length - 1; i > 0; i--) {
      const j = Math.floor(rand() * (i + 1));
      [plan[i], plan[j]] = [plan[j]!, plan[i]!];
    }
    const victims = new Set<number>([Math.floor(rand() * plan.length)]);
    for (let i = 0; i < plan.length; i++) if (rand() < 0.3) victims.add(i);
    const procs: Array<{ p: Proc; disk?: number }> = [];
    for (let i = 0; i < plan.length; i++) {
      const op = plan[i]!;
      const head = startupEst * 0.8;
      const killAfter = victims.has(i) ? Math.round(rand() < 0.15 ? rand() * head : head + rand() * 1.2 * Math.max(est[op.kind] - head, 150)) : null;
      const label = op.kind === 'backup' ? `backup disk${op.disk}` : op.kind === 'prune' ? 'prune' : `forget ${op.args.slice(4).join(' ')}`;
      procs.push({ p: start(op.kind, op.args, label, killAfter), disk: op.disk });
      if (i + 1 < plan.length) await new Promise((r) => setTimeout(r, between(0, 300)));
    }
    // A concurrent reader, started among the operations.
    let reader: { what: string; snap?: string; want?: Expect; out?: string; p: Proc } | null = null;
    if (opts.readers && known.size > 0 && rand() < 0.6) {
      await new Promise((r) => setTimeout(r, between(0, 600)));
      if (rand() < 0.5) reader = { what: 'verify --read-data', p: start('backup', ['verify', '--repo', repo, '--read-data', '--json'], 'reader verify', null) };
      else {
        const snap = pick([...known]);
        const out = join(restoreDir, 'reader.raw');
        await rm(out, { force: true });
        reader = { what: `restore ${snap.slice(0, 12)}`, snap, want: expected.get(snap), out, p: start('backup', ['restore', snap, '--repo', repo, '--to', out, '--json'], 'reader restore', null) };
      }
      result.readers++;
    }
    const ops: OpRecord[] = [];
    for (const { p, disk } of procs) {
      const r = await p.done;
      let json: unknown = undefined;
      try {
        json = JSON.parse(r.stdout);
      } catch {
        /* killed before printing */
      }
      let outcome: Outcome;
      if (r.signal === 'SIGKILL') outcome = json !== undefined ? 'killed-after-output' : 'killed';
      else if (r.code === 0) outcome = 'completed';
      else if (r.code === 5) outcome = 'locked';
      else if (r.code === 6) outcome = 'parent-missing';
      else outcome = 'failed';
      if (outcome === 'completed') est[p.kind] = Math.round(est[p.kind] * 0.7 + r.ms * 0.3);
      ops.push({ kind: p.kind, label: p.label, disk, outcome, code: r.code, ms: r.ms, killAfterMs: p.killAt, json, stderr: outcome === 'completed' ? '' : r.stderr });
      const key = `${p.kind} ${outcome}`;
      result.outcomes[key] = (result.outcomes[key] ?? 0) + 1;
    }
    const concurrent = ops.length > 1;
    const forgetRan = ops.some((o) => o.kind === 'forget');
    for (const o of ops) {
      if (o.outcome === 'failed') fail(`${o.label} failed with exit ${o.code} (not a kill, not a lock conflict)`, ops);
      if (o.outcome === 'locked' && !concurrent) fail(`${o.label} found the repository or disk locked with nothing else running (a lock left by a killed process must count as stale)`, ops);
      if (o.outcome === 'parent-missing' && !forgetRan) fail(`${o.label}: parent missing without a concurrent forget`, ops);
      if (o.outcome === 'locked' && !/lock|in use/i.test(o.stderr)) fail(`${o.label} exited 5 without naming a lock: ${o.stderr}`, ops);
      if (o.kind === 'backup' && (o.outcome === 'completed' || o.outcome === 'killed-after-output')) noteBackup(o.json);
      if (o.kind === 'prune' && o.outcome === 'completed') result.bytesPruned += (o.json as { bytesFreed?: number })?.bytesFreed ?? 0;
      if (o.kind === 'forget' && o.outcome === 'completed') result.bytesPruned += (o.json as { prune?: { bytesFreed?: number } | null })?.prune?.bytesFreed ?? 0;
    }
    log(`round ${round}: ${changes.join('; ') || 'no change'} | ${ops.map((o) => `${o.label} ${o.outcome}${o.killAfterMs !== null ? `@${o.killAfterMs}` : ''} ${o.ms}ms`).join(', ')}`);

    // 3. Snapshots: what appeared must be a state some backup of this round captured; what vanished, a forget removed.
    const checkListing = (snaps: SnapshotJson[], allowNewFrom: Set<number>): Set<string> => {
      const ids = new Set(snaps.map((s) => s.id));
      for (const id of known) {
        if (ids.has(id)) continue;
        if (!forgetRan) fail(`snapshot ${id} vanished without a forget`, ops);
        const keptBy = ops.find((o) => o.kind === 'forget' && o.outcome === 'completed' && (o.json as { kept?: Array<{ id: string }> })?.kept?.some((k) => k.id === id));
        if (keptBy) fail(`snapshot ${id} vanished though the forget kept it`, ops);
        expected.delete(id);
      }
      const fresh = new Set<string>();
      for (const s of snaps) {
        if (known.has(s.id)) continue;
        const d = sourceIds.indexOf(s.source.id);
        if (d < 0) fail(`snapshot ${s.id} of unknown source ${s.source.id}`, ops);
        if (!allowNewFrom.has(d)) fail(`snapshot ${s.id} of disk${d} appeared though no backup of it could have written it`, ops);
        expected.set(s.id, { ...state[d]! });
        fresh.add(s.id);
      }
      return fresh;
    };
    let snaps = await listSnapshots(ops);
    const couldWrite = new Set<number>();
    for (const o of ops) if (o.kind === 'backup' && (o.outcome === 'completed' || o.outcome.startsWith('killed'))) couldWrite.add(o.disk!);
    const fresh = checkListing(snaps, couldWrite);
    for (const o of ops) {
      if (o.kind !== 'backup') continue;
      const id = (o.json as { snapshot?: string } | undefined)?.snapshot;
      if (id && !snaps.some((s) => s.id === id)) fail(`${o.label} printed snapshot ${id}, which is not listed`, ops);
      if (o.outcome === 'killed' && [...fresh].some((f) => snaps.find((s) => s.id === f)?.source.id === sourceIds[o.disk!])) result.killedAfterCommit++;
    }
    known = new Set(snaps.map((s) => s.id));

    // 4. verify --read-data.
    await verify(ops, 'the round');

    // The reader: never wrong bytes; a failure while the repository is fine is an anomaly.
    if (reader) {
      const r = await reader.p.done;
      const during = ops.map((o) => `${o.label} ${o.outcome}`).join(', ');
      if (reader.out && r.code === 0) {
        const b = await readFile(reader.out);
        await rm(reader.out, { force: true });
        const h = createHash('sha256').update(b).digest('hex');
        if (h !== reader.want!.hash || b.length !== reader.want!.size) fail(`a restore of ${reader.snap} running during [${during}] produced wrong bytes`, ops);
      } else if (r.code !== 0 && r.code !== 5 && (!reader.snap || known.has(reader.snap))) {
        let detail = (r.stderr || r.stdout).trim().slice(0, 300);
        try {
          const rep = JSON.parse(r.stdout) as { problems: Array<{ type: string; name: string; problem: string; snapshots: string[] }> };
          detail = rep.problems
            .map((q) => `${q.type}/${q.name.slice(0, 12)} ${q.problem}, affects ${q.snapshots.map((x) => `${x.slice(0, 12)} (${known.has(x) ? 'still listed' : 'since forgotten'})`).join(', ') || 'none'}`)
            .join('; ');
        } catch {
          /* not a verify report */
        }
        const anomaly = `round ${round}: ${reader.what} during [${during}] exited ${r.code} though the repository is fine: ${detail}`;
        result.readerAnomalies.push(anomaly);
        log(`  reader anomaly: ${anomaly}`);
      }
    }

    // 5. The next backup of a disk whose backup was killed or refused works.
    const followUps = new Set<number>();
    for (const o of ops) if (o.kind === 'backup' && o.outcome !== 'completed') followUps.add(o.disk!);
    for (const d of followUps) {
      const r = await run(['backup', disks[d]!, '--repo', repo, '--json']);
      if (r.code !== 0) fail(`the backup after an interrupted one (disk${d}) exited ${r.code}: ${r.stderr}`, ops);
      est.backup = Math.round(est.backup * 0.7 + r.ms * 0.3);
      noteBackup(r.json);
      const id = (r.json as { snapshot: string }).snapshot;
      if (!known.has(id)) {
        expected.set(id, { ...state[d]! });
        fresh.add(id);
        known.add(id);
      } else if (expected.get(id)!.hash !== state[d]!.hash) fail(`follow-up backup of disk${d} returned existing snapshot ${id} of another state`, ops);
    }
    if (followUps.size > 0) {
      snaps = await listSnapshots(ops);
      const ids = new Set(snaps.map((s) => s.id));
      if (ids.size !== known.size || [...known].some((k) => !ids.has(k))) fail(`the snapshot list after the follow-up backups is not the expected one`, ops);
    }

    // 6. Restores.
    const pruned = ops.some((o) => o.kind === 'prune' || (o.kind === 'forget' && o.label.includes('--prune')));
    const policy = opts.restore ?? 'after-prune';
    if (policy === 'all' || (policy === 'after-prune' && pruned)) await restoreCheck(snaps, 'all', ops);
    else {
      const which = new Set(fresh);
      const others = snaps.filter((s) => !fresh.has(s.id));
      for (let n = policy === 'sample' ? 0 : 2; n > 0 && others.length > 0; n--) which.add(others.splice(Math.floor(rand() * others.length), 1)[0]!.id);
      await restoreCheck(snaps, which, ops);
    }
    result.maxSnapshots = Math.max(result.maxSnapshots, snaps.length);

    // 7. Keep the repository small: a clean forget when snapshots pile up; sometimes remove stale locks.
    if (snaps.length > 10) {
      const r = await run(['forget', '--repo', repo, '--keep-last', '3', '--json']);
      if (r.code !== 0) fail(`clean forget exited ${r.code}: ${r.stderr}`, ops);
      snaps = await listSnapshots(ops);
      if (snaps.filter((s) => s.source.id === sourceIds[0]).length > 3 || snaps.filter((s) => s.source.id === sourceIds[1]).length > 3) fail(`forget --keep-last 3 kept more than 3 snapshots of a disk`, ops);
      for (const id of known) if (!snaps.some((s) => s.id === id)) expected.delete(id);
      known = new Set(snaps.map((s) => s.id));
    }
    if (rand() < 0.1) {
      const r = await run(['repo', 'unlock', repo, '--json']);
      if (r.code !== 0) fail(`repo unlock exited ${r.code}: ${r.stderr}`, ops);
    }
    result.rounds = round + 1;
  }

  // ---- the end: everything restores; with all objects aged, prune leaves no garbage ---------------
  round = opts.rounds;
  await ageRepository();
  const pr = await run(['prune', '--repo', repo, '--json']);
  if (pr.code !== 0) fail(`final prune exited ${pr.code}: ${pr.stderr}`);
  result.bytesPruned += (pr.json as { bytesFreed?: number }).bytesFreed ?? 0;
  const dry = await run(['prune', '--repo', repo, '--dry-run', '--json']);
  const left = dry.json as { removedChunks?: number; removedPages?: number; keptYoung?: number };
  if (dry.code !== 0 || left.removedChunks !== 0 || left.removedPages !== 0 || left.keptYoung !== 0) fail(`after a full prune, prune --dry-run still finds garbage: ${dry.stdout} ${dry.stderr}`);
  await verify([], 'the final prune');
  let snaps = await listSnapshots([]);
  if (snaps.length !== known.size) fail(`the final prune changed the snapshot list`);
  await restoreCheck(snaps, 'all', []);
  // The next backup after a full prune works (it builds on what prune kept) and restores bit-exact.
  for (let d = 0; d < disks.length; d++) {
    const r = await run(['backup', disks[d]!, '--repo', repo, '--json']);
    if (r.code !== 0) fail(`final backup of disk${d} exited ${r.code}: ${r.stderr}`);
    noteBackup(r.json);
    const id = (r.json as { snapshot: string }).snapshot;
    expected.set(id, { ...state[d]! });
  }
  snaps = await listSnapshots([]);
  await restoreCheck(snaps.slice(-2), 'all', []);
  return result;
}

/** The seed: TIDEMARK_SOAK_SEED when set, else random. */
export function soakSeed(): number {
  const s = process.env.TIDEMARK_SOAK_SEED;
  if (s !== undefined && s !== '') {
    const n = Number(s);
    if (!Number.isInteger(n) || n < 0) throw new Error(`TIDEMARK_SOAK_SEED=${s}: give a non-negative integer`);
    return n >>> 0;
  }
  return Math.floor(Math.random() * 2 ** 32);
}
