import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { tempDir } from '../helpers/tools.js';
import { cli, MAIN, ok } from './harness.js';
import { validateConfig } from '../../src/vm/MachineConfig.js';
import { ConfigInvalidError } from '../../src/vm/errors.js';

test('vm create/list/show/set/remove through the CLI', async (t) => {
  const home = await tempDir(t);
  const m = ok(home, ['vm', 'create', 'web', '--cpus', '2', '--memory', '1G', '--disk', '64M', '--disk', '8M', '--notes', 'hello']);
  assert.match(m.id, /^[0-9a-f-]{36}$/);
  assert.equal(m.config.cpus, 2);
  assert.equal(m.config.memoryMiB, 1024);
  assert.deepEqual(m.disks.map((d: any) => [d.slot, d.size, d.format]), [[0, 64 * 2 ** 20, 'vhdx'], [1, 8 * 2 ** 20, 'vhdx']]);
  const files = await readdir(m.dir);
  assert.ok(files.includes('disk0.vhdx') && files.includes('disk0.vhdx.rct'), 'a sized disk is a VHDX with tracking enabled');

  const shown = ok(home, ['vm', 'show', m.id]);
  assert.equal(shown.name, 'web');
  assert.equal(shown.disks[0].path, join(m.dir, 'disk0.vhdx'));
  assert.equal(ok(home, ['vm', 'show', 'web']).id, m.id);

  const dup = cli(home, ['vm', 'create', 'web']);
  assert.equal(dup.status, 2);
  assert.equal(dup.json.error.code, 'E_VM_EXISTS');

  const set = ok(home, ['vm', 'set', 'web', '--cpus', '4', '--name', 'www', '--add-disk', '4M', '--remove-disk', '1']);
  assert.equal(set.name, 'www');
  assert.equal(set.config.cpus, 4);
  assert.deepEqual(set.disks.map((d: any) => [d.slot, d.size]), [[0, 64 * 2 ** 20], [1, 4 * 2 ** 20]]);

  const inv = JSON.parse(await readFile(join(home, 'inventory.json'), 'utf8'));
  assert.equal(inv.format, 'tidemark-inventory');
  assert.equal(inv.machines[0].name, 'www');

  const missing = cli(home, ['vm', 'show', 'nope']);
  assert.equal(missing.status, 3);
  assert.match(missing.stderr, /machine "nope" not found/);

  ok(home, ['vm', 'remove', 'www']);
  assert.deepEqual(ok(home, ['vm', 'list']), []);
  assert.equal((await readdir(join(home, 'machines'))).length, 0, 'the machine folder is deleted');
});

test('concurrent CLI processes never lose an inventory update', async (t) => {
  const home = await tempDir(t);
  const names = ['a1', 'a2', 'a3', 'a4', 'a5'];
  await Promise.all(names.map((n) => new Promise<void>((resolve, reject) => {
    const p = spawn(process.execPath, [MAIN, 'vm', 'create', n, '--home', home], { stdio: 'ignore' });
    p.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`create ${n} exited ${code}`))));
  })));
  assert.deepEqual(ok(home, ['vm', 'list']).map((m: any) => m.name).sort(), names);
});

test('a corrupt inventory is a clear error, never overwritten', async (t) => {
  const home = await tempDir(t);
  ok(home, ['vm', 'create', 'x']);
  await writeFile(join(home, 'inventory.json'), '{"format":"tidemark-inventory",');
  const r = cli(home, ['vm', 'list']);
  assert.equal(r.status, 4);
  assert.match(r.stderr, /inventory\.json: inventory: not valid JSON/);
  assert.equal(await readFile(join(home, 'inventory.json'), 'utf8'), '{"format":"tidemark-inventory",');
});

test('validateConfig rejects bad configurations with every problem listed', () => {
  const good = { schema: 1, cpus: 2, memoryMiB: 512, disks: [{ slot: 0, path: '/a.vhdx' }], network: [{ mode: 'user', mac: '52:54:00:aa:bb:cc' }], notes: '' };
  assert.deepEqual(validateConfig(good, 'x'), good);
  assert.throws(() => validateConfig({ ...good, schema: 2, cpus: 0, disks: [{ slot: 0, path: 'rel' }], extra: 1 }, 'x'), (err: unknown) => {
    assert.ok(err instanceof ConfigInvalidError);
    const problems = (err.data as { problems: string[] }).problems;
    assert.equal(problems.length, 4, problems.join('; '));
    return true;
  });
  assert.throws(() => validateConfig({ ...good, disks: [{ slot: 1, path: '/a' }, { slot: 1, path: '/b' }] }, 'x'), /slot 1 used twice/);
});

