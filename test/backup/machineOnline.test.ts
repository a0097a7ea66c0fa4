import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { tempDir } from '../helpers/tools.js';
import { requireVm } from '../vm/guest.js';
import { assertHoldsWrites, avhdxIn, blockNumbers, lastWrite, slotOf, start, waitWrites, WRITER } from '../vm-mgmt/onlineKit.js';
import { createMachine, showMachine } from '../../src/vm/machines.js';
import { listRefpoints } from '../../src/checkpoint/refpoints.js';
import { readRunnerJournal } from '../../src/vm/runnerJournal.js';
import { openRctHandle } from '../../src/rct/openRctHandle.js';
import { hashDisk, interruptBackupAt, ok, snapshotIds, type MachineBackupJson } from './machineKit.js';
import { MAIN } from '../vm-mgmt/harness.js';
import { cliJson } from './helpers.js';
import { listCheckpoints } from '../../src/checkpoint/checkpoints.js';

// This guest runs qemu-guest-agent: give its handshake time under load (onlineKit's 500 ms default is for
// agent-less guests), so every backup fork is quiesced (asserted below) rather than crash-consistent.
process.env.TIDEMARK_QGA_TIMEOUT_MS = '5000';

const MiB = 2 ** 20;
const DISK = 128 * MiB;
const BLOCK = 64 * 1024;

/**
 * `tidemark backup g --json`, paused at step `checkpoint` (TIDEMARK_DEBUG_STEPS) long enough to hash the
 * frozen image while the guest writes the checkpoint's child. The hash must be taken before the merge
 * (after step `refpoint`) touches the frozen image again: checked, so a slow host fails loudly.
 */
function backupFrozen(home: string, repo: string, base: string, pauseMs: number): Promise<{ json: MachineBackupJson; frozenHash: string }> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [MAIN, 'backup', 'g', '--repo', repo, '--home', home, '--json'], {
      env: { ...process.env, TIDEMARK_DEBUG_STEPS: String(pauseMs), TIDEMARK_DEBUG_PAUSE_AT: 'checkpoint' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    let hashed: Promise<string> | undefined;
    p.stdout.setEncoding('utf8').on('data', (s: string) => (out += s));
    p.stderr.setEncoding('utf8').on('data', (s: string) => {
      err += s;
      if (!hashed && err.includes('tidemark-step checkpoint\n')) {
        hashed = (async () => {
          const v = await showMachine(home, 'g');
          assert.equal(v.status.state, 'running', 'the machine runs during its backup');
          assert.equal(v.status.holder?.pid, p.pid, 'held by the backup process');
          assert.equal((await listCheckpoints(home, 'g'))[0]?.disks[0]?.parent, base, 'the frozen image is the base disk');
          assert.notEqual(v.disks[0]!.path, base, 'the guest writes a child meanwhile');
          const h = await hashDisk(base);
          assert.ok(!err.includes('tidemark-step refpoint'), `the frozen image was hashed after the backup went on to merge (pause ${pauseMs} ms too short)`);
          return h;
        })();
        hashed.catch(() => p.kill('SIGKILL'));
      }
    });
    p.on('close', (code) => {
      if (!hashed) return reject(new Error(`backup exited ${code} before step checkpoint: ${err}`));
      hashed.then((frozenHash) => {
        if (code !== 0) return reject(new Error(`backup exited ${code}: ${err}`));
        resolve({ json: JSON.parse(out) as MachineBackupJson, frozenHash });
      }, reject);
    });
  });
}

/** 64 KiB blocks the writer touches with writes from..to. */
function writerBlocks(from: number, to: number): number {
  const s = new Set<number>();
  for (let i = Math.max(1, from); i <= to; i++) s.add(Math.floor((slotOf(i) * 4096) / BLOCK));
  return s.size;
}

test('online machine backup: a running guest that keeps writing is backed up full, incremental, incremental through backup checkpoints; each restore point equals its frozen image; a SIGKILLed backup is merged back online', async (t) => {
  if (!(await requireVm(t))) return;
  const home = await tempDir(t);
  const repo = join(home, 'backups');
  const m = await createMachine(home, 'g', { disks: [{ size: DISK }], memoryMiB: 256, network: false });
  const base = m.disks[0]!.path;
  const t0 = Date.now();
  const mark = (what: string) => t.diagnostic(`${what} at ${Date.now() - t0} ms`);
  // The guest agent runs (no filesystem mounted: a freeze is immediate), so each fork is quiesced.
  assert.equal((await start(t, home, 'g', `start_qga\n${WRITER}`)).status.state, 'running');
  await waitWrites(m.dir, 3);
  mark('booted');

  const points: Array<{ snapshot: string; frozenHash: string; ackedBeforeFork: number }> = [];
  let prevFrom = 0; // the first write that may be missing from the previous restore point
  const backupOnce = async (expectMode: 'full' | 'incremental') => {
    const acked = await lastWrite(m.dir); // acknowledged before the fork: must be in the restore point
    const { json: r, frozenHash } = await backupFrozen(home, repo, base, 2500);
    const after = await lastWrite(m.dir);
    mark(`backup ${points.length} (${r.disks[0]!.mode}, read ${r.bytesRead} bytes, writes ${acked}..${after})`);
    assert.equal(r.disks.length, 1);
    assert.equal(r.disks[0]!.mode, expectMode, JSON.stringify(r.warnings));
    assert.ok(!r.warnings.some((w) => w.includes('crash-consistent')), `quiesced through the guest agent: ${JSON.stringify(r.warnings)}`);
    assert.deepEqual(r.consistency, { level: 'application', quiesce: 'guest-agent' }, 'the summary says how the fork was made consistent');
    if (expectMode === 'incremental') {
      assert.equal(r.parent, points[points.length - 1]!.snapshot, 'built on the previous restore point');
      // Only what the guest wrote since the previous fork: at most the blocks of writes since then.
      const bound = writerBlocks(prevFrom, after + 1) * BLOCK;
      assert.ok(r.bytesRead > 0 && r.bytesRead <= bound, `incremental read ${r.bytesRead} bytes, at most ${bound} expected`);
      assert.ok(r.bytesRead < DISK / 8, `incremental read ${r.bytesRead} of a ${DISK}-byte disk`);
    }
    points.push({ snapshot: r.snapshot, frozenHash, ackedBeforeFork: acked });
    prevFrom = acked + 1;
    // Merged back online: running on the base disk, no checkpoint disk left, one reference point.
    const v = await showMachine(home, 'g');
    assert.equal(v.status.state, 'running');
    assert.equal(v.status.holder, undefined);
    assert.equal(v.disks[0]!.path, base);
    assert.deepEqual(v.checkpoints, []);
    assert.deepEqual(await avhdxIn(m.dir), []);
    assert.equal((await readRunnerJournal(m.dir))?.disks[0]?.path, base);
    const refs = await listRefpoints(home, 'g');
    assert.equal(refs.length, 1, 'one reference point for the chain');
    assert.equal(refs[0]!.repo?.snapshot, points[points.length - 1]!.snapshot);
    // The only live RCT ID of the disk is the reference point's (earlier seals, older reference points,
    // interrupted backups: all dropped), asked of the runner's tracker over its control socket.
    const h = await openRctHandle(base);
    try {
      assert.equal(h.via, 'socket');
      assert.deepEqual((await h.status()).liveIds?.map((x) => x.id), [refs[0]!.disks[0]!.rctId], 'one live RCT ID: the reference point\'s');
    } finally {
      await h.close();
    }
    await waitWrites(m.dir, (await lastWrite(m.dir)) + 3); // still writing
    assert.equal(cliJson<{ ok: boolean }>(home, ['repo', 'verify', repo, '--read-data']).ok, true, 'repo verify --read-data');
    mark('checked');
    return r;
  };

  await backupOnce('full');
  await backupOnce('incremental');
  await backupOnce('incremental');

  // SIGKILL mid-read (the first chunk of disk0 read, the rest not): no restore point, the next command
  // merges the dead holder's checkpoint back while the guest runs.
  const before = await snapshotIds(repo);
  const ackedBeforeKill = await lastWrite(m.dir);
  const killed = await interruptBackupAt(home, repo, 'g', 'disk0-reading', 'SIGKILL', 60_000, async (pid) => {
    const v = await showMachine(home, 'g');
    assert.equal(v.status.holder?.pid, pid);
    assert.equal(v.checkpoints.length, 1);
  });
  assert.equal(killed.signal, 'SIGKILL');
  mark('killed');
  const shown = ok(home, ['vm', 'show', 'g']);
  assert.equal(shown.status.state, 'running', 'the guest keeps running across the recovery');
  assert.deepEqual(shown.checkpoints, [], 'no visible snapshot (checkpoint) left');
  assert.equal(shown.disks[0].path, base);
  assert.deepEqual(await avhdxIn(m.dir), []);
  assert.deepEqual(await snapshotIds(repo), before, 'no restore point from the killed backup');
  assert.equal((await listRefpoints(home, 'g')).length, 1);
  await waitWrites(m.dir, (await lastWrite(m.dir)) + 3);
  assert.equal((await readRunnerJournal(m.dir))?.disks[0]?.path, base, 'the runner serves the base disk again');

  // SIGTERM mid-backup: the backup itself merges the checkpoint back online (read from the inventory
  // file, so no recovery by this test runs first) and exits 130 without a restore point.
  const termed = await interruptBackupAt(home, repo, 'g', 'disk0', 'SIGTERM', 2000, async () => undefined);
  assert.equal(termed.code, 130, termed.stderr);
  const inv = JSON.parse(await readFile(join(home, 'inventory.json'), 'utf8'));
  assert.deepEqual(inv.machines[0].checkpoints, []);
  assert.equal(inv.machines[0].config.disks[0].path, base);
  assert.deepEqual(await avhdxIn(m.dir), []);
  assert.deepEqual(await snapshotIds(repo), before, 'no restore point from the interrupted backup');
  assert.equal((await showMachine(home, 'g')).status.state, 'running');
  mark('interrupted');

  const next = await backupOnce('incremental');
  assert.ok(points[points.length - 1]!.ackedBeforeFork >= ackedBeforeKill);
  assert.equal(next.parent, points[2]!.snapshot);

  // The guest wrote between the forks: every frozen image differs (so the equalities below say something).
  assert.equal(new Set(points.map((p) => p.frozenHash)).size, points.length);

  // Every restore point restores (as a new machine) to exactly its frozen image, holding every write
  // the guest had acknowledged before its fork.
  for (const [i, p] of points.entries()) {
    const r = ok(home, ['restore', p.snapshot, '--vm', '--new-id', '--name', `r${i}`, '--repo', repo]);
    const path = (r.machine.disks as Array<{ path: string }>)[0]!.path;
    assert.equal(await hashDisk(path), p.frozenHash, `restore point ${i} equals its frozen image`);
    assertHoldsWrites(await blockNumbers(path), p.ackedBeforeFork, `restore point ${i}`);
  }
  // The same restore point to a plain image file (restore --to): the same bytes.
  const last = points[points.length - 1]!;
  const file = join(home, 'last.vhdx');
  ok(home, ['restore', last.snapshot, '--to', file, '--repo', repo]);
  assert.equal(await hashDisk(file), last.frozenHash, 'restore --to equals the frozen image');
  mark('restored');
});
