import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtemp, open, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { LocalBackend } from '../../src/backend/LocalBackend.js';
import { NoSpaceError } from '../../src/backend/errors.js';
import { tempDir } from '../helpers/tools.js';

test('LocalBackend: chunks and index pages fan out by name prefix; no temp files remain', async (t) => {
  const dir = await tempDir(t);
  const b = new LocalBackend(dir);
  await b.put('chunks', 'ab' + '0'.repeat(62), Buffer.from('c'));
  await b.put('index', 'cd' + '1'.repeat(62), Buffer.from('i'));
  await b.put('snapshots', 'ef' + '2'.repeat(62), Buffer.from('s'));
  assert.ok((await stat(join(dir, 'chunks', 'ab', 'ab' + '0'.repeat(62)))).isFile());
  assert.ok((await stat(join(dir, 'index', 'cd', 'cd' + '1'.repeat(62)))).isFile());
  assert.ok((await stat(join(dir, 'snapshots', 'ef' + '2'.repeat(62)))).isFile());
  assert.deepEqual(await readdir(join(dir, 'tmp')), []);
});

/** Fill a backend with objects until the disk is full; returns the error of the failing put. */
async function fillUntilFull(b: LocalBackend): Promise<unknown> {
  for (let i = 0; i < 200; i++) {
    const data = Buffer.alloc(48 * 1024, i);
    try {
      await b.put('chunks', `${i.toString(16).padStart(4, '0')}${'a'.repeat(60)}`, data);
    } catch (err) {
      return err;
    }
  }
  return undefined;
}

test('LocalBackend: ENOSPC on a real 1 MiB tmpfs leaves no partial object and throws NoSpaceError', async (t) => {
  const mnt = await mkdtemp(join(tmpdir(), 'tidemark-tmpfs-'));
  const m = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', mnt]);
  t.after(async () => {
    if (m.status === 0) spawnSync('umount', [mnt]);
    await rm(mnt, { recursive: true, force: true });
  });
  if (m.status !== 0) {
    t.skip('cannot mount tmpfs (not root); the injected-handle test covers ENOSPC');
    return;
  }
  const b = new LocalBackend(mnt);
  const err = await fillUntilFull(b);
  assert.ok(err instanceof NoSpaceError, `expected NoSpaceError, got ${String(err)}`);
  assert.equal(err.code, 'E_NO_SPACE');
  assert.match(err.message, /^repository .* is out of space; free space or prune \(while storing chunks\//);
  // Every object that exists is whole; the failed one does not exist; no temp file is left.
  const failed = (err.data as { name: string }).name;
  assert.equal(await b.has('chunks', failed), false);
  for await (const name of b.list('chunks')) assert.equal((await b.get('chunks', name)).length, 48 * 1024, name);
  assert.deepEqual(await readdir(join(mnt, 'tmp')), []);
});

test('LocalBackend: ENOSPC from an injected file handle leaves nothing and throws NoSpaceError', async (t) => {
  const dir = await tempDir(t);
  const failing: typeof open = async (path, flags, mode) => {
    const fh = await open(path, flags, mode);
    return new Proxy(fh, {
      get(target, prop, receiver) {
        if (prop === 'write') {
          return async (data: Uint8Array, off: number) => {
            await target.write(data, off, 100, 0); // half-written, then the disk fills
            throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC', syscall: 'write' });
          };
        }
        const v = Reflect.get(target, prop, receiver);
        return typeof v === 'function' ? v.bind(target) : v;
      },
    });
  };
  const b = new LocalBackend(dir, { open: failing });
  const name = 'ab'.repeat(32);
  await assert.rejects(b.put('chunks', name, Buffer.alloc(4096, 1)), (e) => e instanceof NoSpaceError && (e.data as { name: string }).name === name);
  assert.equal(await b.has('chunks', name), false);
  assert.deepEqual(await readdir(join(dir, 'tmp')), []);
  // The same name stores fine once space is back.
  assert.equal(await new LocalBackend(dir).put('chunks', name, Buffer.alloc(4096, 1)), true);
});

test('LocalBackend.cleanup removes old leftovers of interrupted puts, keeps young ones', async (t) => {
  const dir = await tempDir(t);
  const b = new LocalBackend(dir);
  await b.put('chunks', 'aa'.repeat(32), Buffer.from('x'));
  const { writeFile, utimes } = await import('node:fs/promises');
  await writeFile(join(dir, 'tmp', 'old.partial'), 'half');
  await writeFile(join(dir, 'tmp', 'young.partial'), 'half');
  const past = new Date(Date.now() - 3 * 3600_000);
  await utimes(join(dir, 'tmp', 'old.partial'), past, past);
  assert.equal(await b.cleanup(2 * 3600_000), 1);
  assert.deepEqual(await readdir(join(dir, 'tmp')), ['young.partial']);
  assert.equal(await b.has('chunks', 'aa'.repeat(32)), true);
});
