import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { tempDir } from '../helpers/tools.js';
import { cli, hashDisk, ok, writeDisk } from './harness.js';
import { groupAdd, showMachine } from '../../src/vm/machines.js';
import { removeCheckpoint } from '../../src/checkpoint/checkpoints.js';

test('groups: create/add/remove/list/show, and a checkpoint of a group', async (t) => {
  const home = await tempDir(t);
  ok(home, ['vm', 'create', 'a', '--disk', '4M']);
  ok(home, ['vm', 'create', 'b', '--disk', '4M']);
  ok(home, ['group', 'create', 'g', 'a']);
  assert.deepEqual(ok(home, ['group', 'add', 'g', 'b']).members.length, 2);
  assert.deepEqual(ok(home, ['group', 'show', 'g']).names, ['a', 'b']);
  const cps = ok(home, ['checkpoint', 'create', 'g']);
  assert.deepEqual(cps.map((c: any) => c.machine), ['a', 'b']);
  assert.equal(ok(home, ['group', 'remove', 'g', 'a']).members.length, 1);
  // A group export writes <dir>/<machine>; a differential one takes the previous group export directory.
  const out = await tempDir(t, 'tidemark-exp-');
  await writeDisk((await showMachine(home, 'a')).disks[0]!.path, [[0, Buffer.alloc(4096, 5)]]);
  await removeCheckpoint(home, 'a', cps[0].id);
  await removeCheckpoint(home, 'b', cps[1].id);
  await groupAdd(home, 'g', ['a']);
  const full = ok(home, ['export', 'g', join(out, 'f')]);
  assert.deepEqual(full.map((e: any) => e.dir), [join(out, 'f', 'b'), join(out, 'f', 'a')]);
  const diff = ok(home, ['export', 'g', join(out, 'd'), '--since', join(out, 'f')]);
  assert.deepEqual(diff.map((e: any) => e.manifest.kind), ['differential', 'differential']);
  assert.equal(diff[1].manifest.disks[0].sha256, await hashDisk((await showMachine(home, 'a')).disks[0]!.path));
  ok(home, ['group', 'remove', 'g']);
  assert.deepEqual(ok(home, ['group', 'list']), []);
  assert.equal(cli(home, ['group', 'show', 'g']).status, 3);
});

test('checkpoints: create forks into .avhdx, apply reverts, remove merges back', async (t) => {
  const home = await tempDir(t);
  const m = ok(home, ['vm', 'create', 'c', '--disk', '16M']);
  const root = m.disks[0].path;
  await writeDisk(root, [[0, Buffer.alloc(4096, 1)]]);
  const h0 = await hashDisk(root);

  const [cp1] = ok(home, ['checkpoint', 'create', 'c', '--name', 'one']);
  const leaf1 = (await showMachine(home, 'c')).disks[0]!.path;
  assert.match(leaf1, /\.avhdx$/);
  assert.equal(cp1.disks[0].parent, root);
  await writeDisk(leaf1, [[8192, Buffer.alloc(4096, 2)]]);
  const h1 = await hashDisk(leaf1);
  assert.equal(await hashDisk(root), h0, 'the frozen parent does not change');

  ok(home, ['checkpoint', 'create', 'c', '--name', 'two', '--type', 'production']);
  const leaf2 = (await showMachine(home, 'c')).disks[0]!.path;
  await writeDisk(leaf2, [[16384, Buffer.alloc(4096, 3)]]);
  assert.notEqual(await hashDisk(leaf2), h1);

  // Apply "one": back to the state at checkpoint one (h0), "two" is gone.
  ok(home, ['checkpoint', 'apply', 'c', 'one']);
  const after = await showMachine(home, 'c');
  assert.deepEqual(after.checkpoints.map((c) => c.name), ['one']);
  assert.equal(await hashDisk(after.disks[0].path), h0);

  // Write, remove "one": the current state is kept and merged into the root.
  await writeDisk(after.disks[0].path, [[65536, Buffer.alloc(512, 9)]]);
  const hCur = await hashDisk(after.disks[0].path);
  ok(home, ['checkpoint', 'remove', 'c', 'one']);
  const fin = await showMachine(home, 'c');
  assert.equal(fin.disks[0].path, root);
  assert.equal(await hashDisk(root), hCur);
  assert.deepEqual((await readdir(m.dir)).filter((f) => f.endsWith('.avhdx')), []);
});
