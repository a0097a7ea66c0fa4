/**
 * withQuiesce's hooks path, stale hook freezes, failures and locking, on a machine record whose
 * runner is this process (so it counts as running) and which has no agent channel. The agent path
 * runs against a real guest in quiesce.test.ts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, readFile, writeFile, access } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import type { TestContext } from 'node:test';
import { tempDir } from '../helpers/tools.js';
import { cli, ok } from '../vm-mgmt/harness.js';
import type { MachineRecord } from '../../src/vm/Inventory.js';
import { CONFIG_SCHEMA, configHash, validateConfig, type MachineConfig } from '../../src/vm/MachineConfig.js';
import { ConfigInvalidError, VmBusyError } from '../../src/vm/errors.js';
import { guestAgentSocket } from '../../src/vm/GuestAgent.js';
import { withQuiesce } from '../../src/checkpoint/quiesce.js';
import { QuiesceFailedError, QuiesceThawError } from '../../src/checkpoint/QuiesceError.js';

/** A "running" machine (runner = this process) with one hook script for both freeze and thaw. */
async function fixture(t: TestContext): Promise<{ m: MachineRecord; dir: string; calls: () => Promise<string[]>; set: (name: string, v: string) => Promise<void> }> {
  const dir = await tempDir(t);
  const hook = join(dir, 'hook.sh');
  // Records "<arg> <env TIDEMARK_HOOK> <name> <id>"; exit status from rc-<arg>, delay from sleep-<arg>.
  await writeFile(hook, [
    '#!/bin/sh',
    `d=${dir}`,
    'echo "$1 $TIDEMARK_HOOK $TIDEMARK_MACHINE_NAME $TIDEMARK_MACHINE_ID" >> "$d/calls"',
    '[ -f "$d/sleep-$1" ] && sleep "$(cat "$d/sleep-$1")"',
    'echo "hook output $1" >&2',
    'exit "$(cat "$d/rc-$1" 2>/dev/null || echo 0)"',
    '',
  ].join('\n'));
  await chmod(hook, 0o755);
  const config: MachineConfig = { schema: CONFIG_SCHEMA, cpus: 1, memoryMiB: 256, disks: [], network: [], notes: '', hooks: { freeze: hook, thaw: hook } };
  const m: MachineRecord = {
    id: randomUUID(), name: 'db', dir, config, checkpoints: [], refpoints: [], nextRefSeq: 1,
    runtime: { pid: process.pid, since: new Date().toISOString(), socket: join(dir, 'nbd.sock'), console: join(dir, 'console.log') },
  };
  return {
    m, dir,
    calls: async () => (await readFile(join(dir, 'calls'), 'utf8').catch(() => '')).split('\n').filter(Boolean).map((l) => l.split(' ').slice(0, 2).join(' ')),
    set: (name, v) => writeFile(join(dir, name), v),
  };
}

const exists = (p: string) => access(p).then(() => true, () => false);

test('hooks: freeze, fn (marker present), thaw; machine in env; thaw also when fn throws', async (t) => {
  const { m, dir, calls } = await fixture(t);
  const lines: string[] = [];
  const r = await withQuiesce(m, { log: (l) => lines.push(l) }, async (ctx) => {
    assert.equal(ctx.method, 'hooks');
    assert.ok(await exists(join(dir, 'quiesce-hooks.json')), 'marker written before the freeze');
    return calls();
  });
  assert.deepEqual(r, { result: ['freeze freeze'], consistency: 'application', method: 'hooks' });
  assert.deepEqual(await calls(), ['freeze freeze', 'thaw thaw']);
  assert.ok((await readFile(join(dir, 'calls'), 'utf8')).includes(`freeze freeze db ${m.id}`));
  assert.equal(await exists(join(dir, 'quiesce-hooks.json')), false, 'marker removed after the thaw');
  assert.ok(lines.some((l) => /freeze hook .* succeeded/.test(l)), lines.join('\n'));

  await assert.rejects(withQuiesce(m, {}, async () => {
    throw new Error('fork failed');
  }), /fork failed/);
  assert.deepEqual((await calls()).slice(2), ['freeze freeze', 'thaw thaw']);
});

test('hooks: a failing freeze hook is followed by a thaw and gives QuiesceFailedError (or crash with the fallback); a hook past its timeout is killed', async (t) => {
  const { m, calls, set } = await fixture(t);
  await set('rc-freeze', '3');
  let ran = false;
  await assert.rejects(withQuiesce(m, {}, async () => {
    ran = true;
  }), (err: unknown) => {
    assert.ok(err instanceof QuiesceFailedError);
    assert.match(err.message, /exit status 3/);
    assert.match(err.message, /hook output freeze/);
    assert.match(err.message, /no channel at .*qga\.sock/);
    assert.match(err.message, /--fallback crash/);
    return true;
  });
  assert.equal(ran, false);
  assert.deepEqual(await calls(), ['freeze freeze', 'thaw thaw']);
  const lines: string[] = [];
  const r = await withQuiesce(m, { fallback: 'crash', log: (l) => lines.push(l) }, async () => 'forked');
  assert.deepEqual(r, { result: 'forked', consistency: 'crash', method: 'none' });
  assert.ok(lines.some((l) => /crash-consistent/.test(l)));

  await set('rc-freeze', '0');
  await set('sleep-freeze', '5');
  const t0 = Date.now();
  await assert.rejects(withQuiesce(m, { timeoutMs: 300 }, async () => undefined), /still running after 300 ms/);
  assert.ok(Date.now() - t0 < 4000, 'the hook was killed at its timeout');
});

test('hooks: a failed thaw gives QuiesceThawError and leaves the marker; the next quiesce thaws the stale freeze first', async (t) => {
  const { m, dir, calls, set } = await fixture(t);
  await set('rc-thaw', '1');
  await assert.rejects(withQuiesce(m, {}, async () => 'made'), (err: unknown) => {
    assert.ok(err instanceof QuiesceThawError);
    assert.match(err.message, /may still be frozen/);
    return true;
  });
  assert.ok(await exists(join(dir, 'quiesce-hooks.json')));
  await set('rc-thaw', '0');
  const lines: string[] = [];
  const r = await withQuiesce(m, { log: (l) => lines.push(l) }, async () => 'again');
  assert.equal(r.method, 'hooks');
  assert.ok(lines.some((l) => /never thawed; running the thaw hook first/.test(l)), lines.join('\n'));
  assert.deepEqual(await calls(), ['freeze freeze', 'thaw thaw', 'thaw thaw', 'freeze freeze', 'thaw thaw']);
  assert.equal(await exists(join(dir, 'quiesce-hooks.json')), false);

  // A marker left by a killed Tidemark (as written before the freeze hook ran).
  await writeFile(join(dir, 'quiesce-hooks.json'), JSON.stringify({ pid: 999999999, since: 'then', freeze: m.config.hooks!.freeze, thaw: m.config.hooks!.thaw }));
  await withQuiesce(m, {}, async () => undefined);
  assert.deepEqual((await calls()).slice(5), ['thaw thaw', 'freeze freeze', 'thaw thaw']);

  // The stale freeze is thawed with the hook recorded in the marker even when the hooks are gone now.
  await writeFile(join(dir, 'quiesce-hooks.json'), JSON.stringify({ pid: 999999999, since: 'then', freeze: m.config.hooks!.freeze, thaw: m.config.hooks!.thaw }));
  const bare = structuredClone(m);
  delete bare.config.hooks;
  assert.equal((await withQuiesce(bare, { fallback: 'crash' }, async () => undefined)).consistency, 'crash');
  assert.deepEqual((await calls()).slice(8), ['thaw thaw']);
  assert.equal(await exists(join(dir, 'quiesce-hooks.json')), false);
});

test('a second quiesce of the same machine while one runs: VmBusyError; an agent channel nobody answers falls through to the hooks', async (t) => {
  const { m, calls } = await fixture(t);
  // QEMU listening with no agent in the guest.
  const server = createServer(() => undefined);
  await new Promise<void>((r) => server.listen(guestAgentSocket(m.dir), r));
  t.after(() => server.close());
  const lines: string[] = [];
  const r = await withQuiesce(m, { timeoutMs: 500, log: (l) => lines.push(l) }, async () => {
    await assert.rejects(withQuiesce(m, {}, async () => assert.fail('must not run')), VmBusyError);
    return 1;
  });
  assert.equal(r.method, 'hooks');
  assert.deepEqual(await calls(), ['freeze freeze', 'thaw thaw']);

  // Without hooks the reasons name both methods.
  const bare = structuredClone(m);
  delete bare.config.hooks;
  await assert.rejects(withQuiesce(bare, { timeoutMs: 300 }, async () => undefined), (err: unknown) => {
    assert.ok(err instanceof QuiesceFailedError);
    assert.match(err.message, /guest agent: no answer on .*qga\.sock/);
    assert.match(err.message, /no freeze\/thaw hooks configured/);
    return true;
  });

  // Not running: nothing to quiesce, the disks are consistent as they are.
  const off = structuredClone(m);
  delete off.runtime;
  assert.deepEqual(await withQuiesce(off, {}, async () => 7), { result: 7, consistency: 'application', method: 'none' });
  assert.equal((await calls()).length, 2);
});

test('configuration hooks: validated (absolute, thaw needs freeze, no unknown keys), not part of configHash; vm set --freeze-hook/--thaw-hook', async (t) => {
  const base = { schema: CONFIG_SCHEMA, cpus: 1, memoryMiB: 256, disks: [], network: [], notes: '' };
  assert.deepEqual(validateConfig({ ...base, hooks: { freeze: '/a', thaw: '/b' } }, 'x').hooks, { freeze: '/a', thaw: '/b' });
  assert.equal(validateConfig({ ...base, hooks: {} }, 'x').hooks, undefined);
  assert.equal(validateConfig(base, 'x').hooks, undefined);
  assert.equal(configHash(validateConfig({ ...base, hooks: { freeze: '/a' } }, 'x')), configHash(validateConfig(base, 'x')));
  for (const [hooks, re] of [
    [{ freeze: 'rel/path' }, /hooks\.freeze must be an absolute path/],
    [{ thaw: '/b' }, /hooks\.thaw needs hooks\.freeze/],
    [{ freeze: '/a', pre: '/c' }, /hooks: unknown field\(s\): pre/],
    ['/a', /hooks must be an object/],
    [{ freeze: 5 }, /hooks\.freeze must be/],
  ] as Array<[unknown, RegExp]>) {
    assert.throws(() => validateConfig({ ...base, hooks }, 'machine x'), (err: unknown) => err instanceof ConfigInvalidError && re.test(err.message), JSON.stringify(hooks));
  }

  const home = await tempDir(t);
  ok(home, ['vm', 'create', 'h', '--no-network']);
  const hook = join(home, 'hook.sh');
  await writeFile(hook, '#!/bin/sh\nexit 0\n');
  const notExec = cli(home, ['vm', 'set', 'h', '--freeze-hook', hook]);
  assert.equal(notExec.status, 2, notExec.stderr);
  assert.match(notExec.stderr, /not an executable file/);
  await chmod(hook, 0o755);
  const thawOnly = cli(home, ['vm', 'set', 'h', '--thaw-hook', hook]);
  assert.equal(thawOnly.status, 2, thawOnly.stderr);
  assert.match(thawOnly.stderr, /hooks\.thaw needs hooks\.freeze/);
  const both = ok(home, ['vm', 'set', 'h', '--freeze-hook', hook, '--thaw-hook', hook, '--cpus', '2']).config;
  assert.equal(both.cpus, 2);
  assert.deepEqual(both.hooks, { freeze: hook, thaw: hook });
  const text = cli(home, ['vm', 'show', 'h'], { json: false });
  assert.match(text.stdout, new RegExp(`hooks: freeze ${hook}, thaw ${hook}`));
  assert.deepEqual(ok(home, ['vm', 'set', 'h', '--thaw-hook', '']).config.hooks, { freeze: hook });
  assert.equal(ok(home, ['vm', 'set', 'h', '--freeze-hook', '']).config.hooks, undefined);
});
