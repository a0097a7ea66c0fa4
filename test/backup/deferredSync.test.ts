import assert from 'node:assert/strict';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { LocalBackend } from '../../src/backend/LocalBackend.js';
import { DeferredSyncBackend } from '../../src/backup/DeferredSyncBackend.js';
import { tempDir } from '../helpers/tools.js';
import { backendContract } from '../backend/contract.js';

backendContract('DeferredSyncBackend(LocalBackend)', async (t) => new DeferredSyncBackend(new LocalBackend(await tempDir(t)), { maxPending: 3 }));

const name = (i: number) => i.toString(16).padStart(64, 'a');

test('deferred objects are published only by a barrier, and any other put runs the barrier first', async (t) => {
  const dir = await tempDir(t);
  const local = new LocalBackend(dir);
  const b = new DeferredSyncBackend(local, { maxPending: 100 });
  for (let i = 0; i < 10; i++) assert.equal(await b.put('chunks', name(i), Buffer.from(`chunk ${i}`)), true);
  assert.equal(await b.put('chunks', name(3), Buffer.from('chunk 3')), false, 'pending objects deduplicate');
  assert.equal(await b.has('chunks', name(3)), true);
  assert.equal((await b.get('chunks', name(3))).toString(), 'chunk 3');
  // Not published: another process (a fresh backend over the same directory) sees nothing.
  assert.equal(await local.has('chunks', name(3)), false, 'a crash now would leave no object under its name');
  assert.equal((await readdir(join(dir, 'tmp'))).length, 10);
  // A manifest put publishes everything first.
  await b.put('snapshots', name(99), Buffer.from('manifest'));
  for (let i = 0; i < 10; i++) assert.equal((await local.get('chunks', name(i))).toString(), `chunk ${i}`);
  assert.equal((await readdir(join(dir, 'tmp'))).length, 0, 'temp files are gone after publishing');
});

test('maxPending bounds the unpublished set', async (t) => {
  const dir = await tempDir(t);
  const local = new LocalBackend(dir);
  const b = new DeferredSyncBackend(local, { maxPending: 4 });
  for (let i = 0; i < 30; i++) {
    await b.put('index', name(i), Buffer.from(`page ${i}`));
    let pendingNow = 0;
    for await (const _ of b.list('index')) pendingNow++;
    let published = 0;
    for await (const _ of local.list('index')) published++;
    assert.ok(pendingNow - published <= 16, `at most 4 x maxPending unpublished (${pendingNow - published})`);
  }
  await b.barrier();
  let published = 0;
  for await (const _ of local.list('index')) published++;
  assert.equal(published, 30);
});
