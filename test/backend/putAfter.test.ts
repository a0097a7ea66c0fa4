import assert from 'node:assert/strict';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { LocalBackend } from '../../src/backend/LocalBackend.js';
import { tempDir } from '../helpers/tools.js';

test('LocalBackend.putAfter publishes only once the awaited promise resolves; a rejection publishes nothing', async (t) => {
  const b = new LocalBackend(await tempDir(t));
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const put = b.putAfter('packindex', 'aa11', Buffer.from('index'), gate);
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(await b.has('packindex', 'aa11'), false, 'not visible before the gate opens');
  assert.equal((await readdir(join(b.root, 'tmp'))).length, 1, 'prepared meanwhile (temp file written)');
  release();
  assert.equal(await put, true);
  assert.deepEqual(await b.get('packindex', 'aa11'), Buffer.from('index'));

  const boom = new Error('pack failed');
  await assert.rejects(b.putAfter('packindex', 'bb22', Buffer.from('x'), Promise.reject(boom)), (e) => e === boom);
  assert.equal(await b.has('packindex', 'bb22'), false);
  assert.deepEqual(await readdir(join(b.root, 'tmp')), [], 'no temp file left behind');
});

test('LocalBackend.put with nameDurable: false stores the whole object (locks)', async (t) => {
  const b = new LocalBackend(await tempDir(t));
  assert.equal(await b.put('locks', 'cc33', Buffer.from('lock'), { nameDurable: false }), true);
  assert.deepEqual(await b.get('locks', 'cc33'), Buffer.from('lock'));
  assert.equal(await b.put('locks', 'cc33', Buffer.from('other'), { nameDurable: false }), false, 'never overwrites');
});
