/**
 * Production-checkpoint quiesce against a real guest: `tidemark vm start` boots the test guest (its
 * initramfs carries Debian's qemu-ga), which mounts an ext4 on /dev/vda, starts qemu-ga on the
 * org.qemu.guest_agent.0 port and keeps writing a counter file, printing `TICK n` after each write.
 * While the filesystem is frozen the write blocks, so the ticks on the console stop.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, writeFile, chmod } from 'node:fs/promises';
import { join } from 'node:path';
import { tempDir } from '../helpers/tools.js';
import { ensureVmAssets, GUEST_LIB, requireVm } from './guest.js';
import { cli, ok } from '../vm-mgmt/harness.js';
import { Inventory, type MachineRecord } from '../../src/vm/Inventory.js';
import { findMachine } from '../../src/vm/machines.js';
import { GuestAgent, guestAgentSocket } from '../../src/vm/GuestAgent.js';
import { GuestAgentNotRespondingError } from '../../src/vm/guestAgentErrors.js';
import { withQuiesce } from '../../src/checkpoint/quiesce.js';
import { QuiesceFailedError } from '../../src/checkpoint/QuiesceError.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function record(home: string, ref: string): Promise<MachineRecord> {
  return Inventory.transact(home, (s) => structuredClone(findMachine(s, ref)));
}

test('withQuiesce freezes a running guest through qemu-ga, thaws after (also when fn throws and after a stale freeze), falls back to hooks, then to crash', async (t) => {
  if (!(await requireVm(t))) return;
  const { kernel, initrd } = await ensureVmAssets();
  const home = await tempDir(t);
  const made = ok(home, ['vm', 'create', 'g', '--disk', '32M', '--memory', '256', '--no-network']);
  const consolePath = join(made.dir as string, 'console.log');
  const ticks = async () => ((await readFile(consolePath, 'utf8').catch(() => '')).match(/^TICK \d+/gm) ?? []).length;
  const waitTicks = async (n: number, ms: number, what: string) => {
    const deadline = Date.now() + ms;
    while ((await ticks()) < n) {
      if (Date.now() > deadline) throw new Error(`${what}: fewer than ${n} ticks after ${ms} ms; console:\n${(await readFile(consolePath, 'utf8').catch(() => '')).slice(-2000)}`);
      await sleep(200);
    }
  };

  // Hooks record their calls (argument, environment) in calls.log; set through the CLI.
  const calls = join(home, 'calls.log');
  const hook = join(home, 'hook.sh');
  await writeFile(hook, `#!/bin/sh\necho "$1 $TIDEMARK_HOOK $TIDEMARK_MACHINE_NAME $TIDEMARK_MACHINE_ID" >> ${calls}\n`);
  await chmod(hook, 0o755);
  const withHooks = ok(home, ['vm', 'set', 'g', '--freeze-hook', hook, '--thaw-hook', hook]);
  assert.deepEqual(withHooks.config.hooks, { freeze: hook, thaw: hook });

  const script = join(home, 'script.sh');
  await writeFile(script, GUEST_LIB + [
    'mke2fs -q /dev/vda',
    'mount -t ext4 /dev/vda /mnt',
    'start_qga',
    'i=0',
    'while :; do i=$((i + 1)); echo $i > /mnt/counter; echo "TICK $i"; usleep 100000; done',
  ].join('\n'));
  ok(home, ['vm', 'start', 'g', '--kernel', kernel, '--initrd', initrd, '--append', 'console=ttyS0 panic=-1 loglevel=3 mitigations=off tidemark.disks=1',
    '--qemu-arg=-fw_cfg', `--qemu-arg=name=opt/tidemark/script,file=${script}`]);
  try {
    await exercise();
  } finally {
    cli(home, ['vm', 'stop', 'g', '--force']); // before tempDir removes the home
  }

  async function exercise(): Promise<void> {
  const started = Date.now();
  await waitTicks(3, 90_000, 'guest boot'); // TCG boot on a loaded 2-core box: 15-50 s
  t.diagnostic(`guest writing after ${Date.now() - started} ms`);
  const m = await record(home, 'g');
  const lines: string[] = [];
  const log = (l: string) => lines.push(l);
  const agentTimeoutMs = 30_000; // a TCG guest on a loaded 2-core CI box can be slow to answer

  // 1. The agent answers: frozen during fn (status, and the guest's writes stop), thawed after.
  let during: { status: string; before: number; after: number } | undefined;
  const q1 = await withQuiesce(m, { log, agentTimeoutMs }, async (ctx) => {
    assert.ok(ctx.agent, 'fn gets the agent');
    const status = await ctx.agent.fsfreezeStatus();
    const before = await ticks();
    await sleep(1500);
    during = { status, before, after: await ticks() };
    return 42;
  });
  assert.deepEqual(q1, { result: 42, consistency: 'application', method: 'guest-agent' });
  assert.equal(during!.status, 'frozen');
  assert.ok(during!.after <= during!.before + 1, `the guest kept writing while frozen: ${during!.before} -> ${during!.after} ticks`);
  await waitTicks(during!.after + 3, 15_000, 'after thaw');
  assert.ok(lines.some((l) => /froze 1 filesystem/.test(l)), lines.join('\n'));
  assert.equal(await readFile(calls, 'utf8').catch(() => ''), '', 'hooks are not run when the agent answers');

  // 2. fn throws: its error comes out, the guest is thawed.
  await assert.rejects(withQuiesce(m, { log, agentTimeoutMs }, async () => {
    throw new Error('fork failed');
  }), /fork failed/);
  {
    const a = await GuestAgent.connect(guestAgentSocket(m.dir), { timeoutMs: agentTimeoutMs });
    assert.equal(await a.fsfreezeStatus(), 'thawed');
    // 3. A freeze left by a dead Tidemark (freeze, then the connection goes away) is thawed by the next quiesce.
    assert.equal(await a.fsfreezeFreeze(), 1);
    await a.close();
  }
  const k3 = await ticks();
  await sleep(1000);
  assert.ok((await ticks()) <= k3 + 1, 'the stale freeze holds the guest');
  lines.length = 0;
  const q3 = await withQuiesce(m, { log, agentTimeoutMs }, async () => 'ok');
  assert.equal(q3.method, 'guest-agent');
  assert.ok(lines.some((l) => /left frozen/.test(l)), lines.join('\n'));
  await waitTicks(k3 + 4, 15_000, 'after the stale freeze was thawed');

  // 4. The agent goes away (killed in the guest): the hooks run, freeze then thaw, with the machine in env.
  {
    const a = await GuestAgent.connect(guestAgentSocket(m.dir), { timeoutMs: agentTimeoutMs });
    await a.execute('guest-exec', { path: '/bin/sh', arg: ['-c', 'sleep 1; killall qemu-ga'] });
    await a.close();
  }
  for (const deadline = Date.now() + 20_000; ;) {
    const a = await GuestAgent.connect(guestAgentSocket(m.dir), { timeoutMs: 1000 }).catch((err: unknown) => {
      if (err instanceof GuestAgentNotRespondingError) return undefined;
      throw err;
    });
    if (!a) break; // QEMU still listens, nobody answers
    await a.close();
    assert.ok(Date.now() < deadline, 'qemu-ga still answers 20 s after it was told to quit');
    await sleep(300);
  }
  const q4 = await withQuiesce(m, { log, timeoutMs: 1000 }, async (ctx) => {
    assert.equal(ctx.method, 'hooks');
    return (await readFile(calls, 'utf8')).trim().split('\n');
  });
  assert.deepEqual(q4.result, [`freeze freeze g ${m.id}`]);
  assert.equal(q4.consistency, 'application');
  assert.equal(q4.method, 'hooks');
  assert.deepEqual((await readFile(calls, 'utf8')).trim().split('\n'), [`freeze freeze g ${m.id}`, `thaw thaw g ${m.id}`]);

  // 5. No agent, no hooks: a typed error naming the remedies; with fallback crash, crash-consistent.
  const bare = structuredClone(m);
  delete bare.config.hooks;
  await assert.rejects(withQuiesce(bare, { timeoutMs: 1000 }, async () => assert.fail('fn must not run')), (err: unknown) => {
    assert.ok(err instanceof QuiesceFailedError);
    assert.match(err.message, /qemu-guest-agent/);
    assert.match(err.message, /--freeze-hook/);
    assert.match(err.message, /--fallback crash/);
    return true;
  });
  lines.length = 0;
  const q5 = await withQuiesce(bare, { fallback: 'crash', log, timeoutMs: 1000 }, async () => 'x');
  assert.deepEqual(q5, { result: 'x', consistency: 'crash', method: 'none' });
  assert.ok(lines.some((l) => /crash-consistent/.test(l)), lines.join('\n'));

  // 6. Stopped: nothing to quiesce.
  ok(home, ['vm', 'stop', 'g', '--force']);
  const off = await record(home, 'g');
  assert.deepEqual(await withQuiesce(off, {}, async () => 1), { result: 1, consistency: 'application', method: 'none' });
  }
});
