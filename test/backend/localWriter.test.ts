/**
 * LocalBackend.openWriter (LocalObjectWriter): the bytes reach the temp file while the object is being
 * written, with an fdatasync every `streamSyncBytes`; a failing write (full disk) fails the commit
 * with NoSpaceError and leaves nothing behind.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { open, readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { LocalBackend } from '../../src/backend/LocalBackend.js';
import { NoSpaceError } from '../../src/backend/errors.js';
import { tempDir } from '../helpers/tools.js';

/** An `open` whose handles count datasync calls and can fail writev after `failAfter` bytes. */
function instrumented(opts: { failAfter?: number } = {}) {
  const counts = { datasync: 0, sync: 0, written: 0 };
  const opener: typeof open = async (path, flags, mode) => {
    const fh = await open(path, flags, mode);
    return new Proxy(fh, {
      get(target, prop, receiver) {
        if (prop === 'datasync') return () => (counts.datasync++, target.datasync());
        if (prop === 'sync') return () => (counts.sync++, target.sync());
        if (prop === 'writev') {
          return async (bufs: Uint8Array[], pos: number) => {
            const n = bufs.reduce((a, b) => a + b.length, 0);
            if (opts.failAfter !== undefined && counts.written + n > opts.failAfter) {
              throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC', syscall: 'write' });
            }
            counts.written += n;
            return target.writev(bufs, pos);
          };
        }
        const v = Reflect.get(target, prop, receiver);
        return typeof v === 'function' ? v.bind(target) : v;
      },
    });
  };
  return { counts, opener };
}

test('LocalBackend.openWriter: bytes are in the temp file before commit, synced every streamSyncBytes', async (t) => {
  const dir = await tempDir(t);
  const { counts, opener } = instrumented();
  const b = new LocalBackend(dir, { open: opener, streamSyncBytes: 100_000 });
  const w = b.openWriter('packs');
  const pieces = Array.from({ length: 20 }, () => randomBytes(30_000));
  for (const p of pieces) await w.write(p);
  const [part] = await readdir(join(dir, 'tmp'));
  assert.match(part, /^packs\.[0-9a-f]{12}\.part$/);
  assert.deepEqual(await readFile(join(dir, 'tmp', part)), Buffer.concat(pieces), 'streamed before commit');
  assert.ok(counts.datasync >= 5, `600 kB with a sync every 100 kB: ${counts.datasync} datasyncs`);
  assert.equal(counts.sync, 0, 'the full fsync is left to commit');
  assert.equal(await w.commit('ab'.repeat(32)), true);
  assert.equal(counts.sync, 1);
  assert.deepEqual(await b.get('packs', 'ab'.repeat(32)), Buffer.concat(pieces));
  assert.deepEqual(await readdir(join(dir, 'tmp')), [], 'the temp file is gone after commit');

  // streamSyncBytes 0: no syncs while writing.
  const quiet = instrumented();
  const b0 = new LocalBackend(dir, { open: quiet.opener, streamSyncBytes: 0 });
  const w0 = b0.openWriter('packs');
  for (const p of pieces) void w0.write(p);
  assert.equal(await w0.commit('cd'.repeat(32)), true);
  assert.equal(quiet.counts.datasync, 0);
});

test('LocalBackend.openWriter: a full disk mid-stream fails the commit with NoSpaceError and leaves nothing', async (t) => {
  const dir = await tempDir(t);
  const { opener } = instrumented({ failAfter: 50_000 });
  const b = new LocalBackend(dir, { open: opener, streamSyncBytes: 20_000 });
  const w = b.openWriter('packs');
  const writes = Array.from({ length: 10 }, () => w.write(randomBytes(10_000)));
  const settled = await Promise.allSettled(writes);
  assert.ok(settled.some((s) => s.status === 'rejected'), 'a write reports the failure');
  await assert.rejects(w.write(Buffer.from('more')), /ENOSPC/, 'the failure is sticky');
  const name = 'ef'.repeat(32);
  await assert.rejects(w.commit(name), (e) => e instanceof NoSpaceError && (e.data as { name: string }).name === name);
  assert.equal(await b.has('packs', name), false);
  assert.deepEqual(await readdir(join(dir, 'tmp')), [], 'no temp file left');
  await w.abort(); // after a failed commit: harmless
});
