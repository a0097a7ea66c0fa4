/**
 * Production checkpoints quiesce the guest (issue #5), through the CLI against one real guest: the
 * test guest mounts an ext4 on /dev/vda, starts qemu-ga (GUEST_LIB start_qga) and keeps writing a
 * counter file, printing `TICK n` after each write (while the filesystem is frozen the ticks stop).
 * Order: offline production (no quiesce) → running with the agent (guest-agent) → agent killed in the
 * guest, hooks configured, as a group with an offline machine (hooks / none) → hooks removed: the typed
 * error, nothing created, guest not left frozen → `--fallback crash` → an export (backup checkpoint:
 * crash-consistent automatically, recorded in its manifest).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { tempDir } from '../helpers/tools.js';
import { ensureVmAssets, GUEST_LIB, requireVm } from './guest.js';
import { cli, ok } from '../vm-mgmt/harness.js';
import { pidAlive } from '../../src/checkpoint/pidAlive.js';
import { GuestAgent, guestAgentSocket } from '../../src/vm/GuestAgent.js';
import { GuestAgentNotRespondingError } from '../../src/vm/guestAgentErrors.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test('checkpoint create --type production: quiesced through qemu-ga, then hooks (group), typed failure leaving nothing, --fallback crash; offline needs no quiesce', async (t) => {
  if (!(await requireVm(t))) return;
  const { kernel, initrd } = await ensureVmAssets();
  const home = await tempDir(t);
  const made = ok(home, ['vm', 'create', 'g', '--disk', '32M', '--memory', '256', '--no-network']);
  const other = ok(home, ['vm', 'create', 'h', '--disk', '16M', '--no-network']); // stays off
  ok(home, ['group', 'create', 'both', 'g', 'h']);
  const dir = made.dir as string;
  const consolePath = join(dir, 'console.log');
  const ticks = async () => ((await readFile(consolePath, 'utf8').catch(() => '')).match(/^TICK \d+/gm) ?? []).length;
  const waitTicks = async (n: number, ms: number, what: string) => {
    const deadline = Date.now() + ms;
    while ((await ticks()) < n) {
      if (Date.now() > deadline) throw new Error(`${what}: fewer than ${n} ticks after ${ms} ms; console:\n${(await readFile(consolePath, 'utf8').catch(() => '')).slice(-2000)}`);
      await sleep(200);
    }
  };
  const avhdx = async () => [...(await readdir(dir)), ...(await readdir(other.dir as string))].filter((n) => n.endsWith('.avhdx'));

  // 0. Offline: nothing to quiesce, the checkpoint is consistent as the disks are.
  const off = ok(home, ['checkpoint', 'create', 'g', '--type', 'production']);
  assert.equal(off[0].consistency, 'application');
  assert.equal(off[0].quiesce, 'none');
  ok(home, ['checkpoint', 'remove', 'g', off[0].id]);
  assert.equal(cli(home, ['checkpoint', 'create', 'g', '--fallback', 'crash']).status, 2, '--fallback with a standard checkpoint is a usage error');
  assert.equal(cli(home, ['checkpoint', 'create', 'g', '--type', 'production', '--fallback', 'nope']).status, 2, '--fallback takes only crash');

  const script = join(home, 'script.sh');
  await writeFile(script, GUEST_LIB + [
    'mke2fs -q /dev/vda',
    'mount -t ext4 /dev/vda /mnt',
    'start_qga',
    'i=0',
    'while :; do i=$((i + 1)); echo $i > /mnt/counter; echo "TICK $i"; usleep 100000; done',
  ].join('\n'));
  const started = ok(home, ['vm', 'start', 'g', '--kernel', kernel, '--initrd', initrd, '--append', 'console=ttyS0 panic=-1 loglevel=3 mitigations=off tidemark.disks=1',
    '--qemu-arg=-fw_cfg', `--qemu-arg=name=opt/tidemark/script,file=${script}`]);
  const pids = [started.status?.runtime?.qemuPid, started.status?.runtime?.pid].filter((p): p is number => !!p);
  t.after(() => {
    for (const pid of pids) if (pidAlive(pid)) process.kill(pid, 'SIGKILL'); // by PID: leaked guests hurt everyone
  });
  assert.ok(pids.length === 2, `runner and QEMU PIDs: ${JSON.stringify(started.status)}`);

  await waitTicks(3, 90_000, 'guest boot');
  // The agent is up (TCG on a loaded box can be slow: a generous first handshake, then the CLI's 5 s is plenty).
  await (await GuestAgent.connect(guestAgentSocket(dir), { timeoutMs: 30_000 })).close();

  // 1. Running, agent present: application-consistent through guest-agent; the guest writes on afterwards.
  const r1 = cli(home, ['checkpoint', 'create', 'g', '--type', 'production', '--name', 'p1']);
  assert.equal(r1.status, 0, r1.stderr);
  assert.equal(r1.json[0].consistency, 'application');
  assert.equal(r1.json[0].quiesce, 'guest-agent');
  assert.match(r1.stderr, /froze 1 filesystem/);
  assert.match(r1.stderr, /thawed 1 filesystem/);
  const k1 = await ticks();
  await waitTicks(k1 + 3, 15_000, 'after the production checkpoint (thawed)');
  {
    const a = await GuestAgent.connect(guestAgentSocket(dir), { timeoutMs: 10_000 });
    assert.equal(await a.fsfreezeStatus(), 'thawed');
    // 2. Kill the agent in the guest (for the hooks and no-method cases below).
    await a.execute('guest-exec', { path: '/bin/sh', arg: ['-c', 'sleep 1; killall qemu-ga'] });
    await a.close();
  }
  const listed = ok(home, ['checkpoint', 'list', 'g']);
  assert.deepEqual(listed.map((c: { name: string; consistency: string; quiesce: string }) => [c.name, c.consistency, c.quiesce]), [['p1', 'application', 'guest-agent']]);
  ok(home, ['checkpoint', 'remove', 'g', 'p1']); // online
  assert.deepEqual(await avhdx(), []);
  for (const deadline = Date.now() + 20_000; ;) {
    const a = await GuestAgent.connect(guestAgentSocket(dir), { timeoutMs: 1000 }).catch((err: unknown) => {
      if (err instanceof GuestAgentNotRespondingError) return undefined;
      throw err;
    });
    if (!a) break; // QEMU still listens, nobody answers
    await a.close();
    assert.ok(Date.now() < deadline, 'qemu-ga still answers 20 s after it was told to quit');
    await sleep(300);
  }
  // No agent from here: each production checkpoint waits for its handshake; shorten that wait (the
  // TIDEMARK_QGA_TIMEOUT_MS knob, inherited by the CLI processes).
  process.env.TIDEMARK_QGA_TIMEOUT_MS = '1500';

  // 3. Hooks configured, as a group with the offline h: g frozen by its hooks around the one fork, h needs nothing.
  const calls = join(home, 'calls.log');
  const hook = join(home, 'hook.sh');
  await writeFile(hook, `#!/bin/sh\necho "$TIDEMARK_HOOK $TIDEMARK_MACHINE_NAME $(ls ${dir} | grep -c "avhdx$")" >> ${calls}\n`);
  await chmod(hook, 0o755);
  ok(home, ['vm', 'set', 'g', '--freeze-hook', hook, '--thaw-hook', hook]);
  const r3 = cli(home, ['checkpoint', 'create', 'both', '--type', 'production']);
  assert.equal(r3.status, 0, r3.stderr);
  assert.deepEqual(r3.json.map((c: { machine: string; consistency: string; quiesce: string }) => [c.machine, c.consistency, c.quiesce]), [['g', 'application', 'hooks'], ['h', 'application', 'none']]);
  // The freeze hook ran before the fork (no child yet), the thaw hook after it (the child exists).
  assert.deepEqual((await readFile(calls, 'utf8')).trim().split('\n'), ['freeze g 0', 'thaw g 1']);
  ok(home, ['checkpoint', 'remove', 'g', r3.json[0].id]);
  ok(home, ['checkpoint', 'remove', 'h', r3.json[1].id]);

  // 4. No agent, no hooks: the typed error (exit 7), nothing created for any member, the guest writes on.
  ok(home, ['vm', 'set', 'g', '--freeze-hook', '', '--thaw-hook', '']);
  const k4 = await ticks();
  const r4 = cli(home, ['checkpoint', 'create', 'both', '--type', 'production']);
  assert.equal(r4.status, 7, r4.stderr);
  assert.equal(r4.json.error.code, 'E_QUIESCE_FAILED');
  assert.match(r4.stderr, /--fallback crash/);
  assert.match(r4.stderr, /guest agent: no answer/);
  assert.deepEqual(ok(home, ['checkpoint', 'list', 'both']), []);
  assert.deepEqual(await avhdx(), []);
  await waitTicks(k4 + 3, 15_000, 'after the failed production checkpoint (not paused, not frozen)');

  // 5. --fallback crash: made, crash-consistent, and says so.
  const r5 = cli(home, ['checkpoint', 'create', 'g', '--type', 'production', '--fallback', 'crash']);
  assert.equal(r5.status, 0, r5.stderr);
  assert.equal(r5.json[0].consistency, 'crash');
  assert.equal(r5.json[0].quiesce, 'none');
  assert.match(r5.stderr, /crash-consistent/);
  const k5 = await ticks();
  await waitTicks(k5 + 3, 15_000, 'after the crash-consistent checkpoint');
  ok(home, ['checkpoint', 'remove', 'g', r5.json[0].id]);
  assert.deepEqual(await avhdx(), []);

  // 6. Backup checkpoints (export, backup <vm>) fall back by themselves, and say so in the manifest.
  const r6 = cli(home, ['export', 'g', join(home, 'e1')]);
  assert.equal(r6.status, 0, r6.stderr);
  assert.deepEqual(r6.json[0].manifest.consistency, { level: 'crash', quiesce: 'none' });
  assert.ok(r6.json[0].manifest.warnings.some((w: string) => /crash-consistent/.test(w)), JSON.stringify(r6.json[0].manifest.warnings));
  assert.deepEqual(await avhdx(), [], 'the export merged its backup checkpoint back');
  ok(home, ['vm', 'stop', 'g', '--force']);
});
