import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { fileURLToPath } from 'node:url';
import { DiskLock } from '../../src/blockdev/DiskLock.js';
import { InUseError } from '../../src/errors.js';
import { tempDir } from '../helpers/tools.js';
import { exited, startChild, type Child } from '../native/childProcess.js';

const HOLDER = fileURLToPath(new URL('./fixtures/holdDiskLock.js', import.meta.url));

/** Run the holder child; its first line is "locked <pid>" or "in-use <message>". */
function child(t: TestContext, disk: string, mode: 'exclusive' | 'shared', holder: string): Promise<Child> {
  return startChild(t, HOLDER, [disk, mode, holder]);
}

test('DiskLock: an exclusive holder in another process is named in InUseError; a dead holder leaves no lock', async (t) => {
  const disk = join(await tempDir(t), 'disk.vhdx');
  const a = await child(t, disk, 'exclusive', 'tidemark serve');
  assert.equal(a.line, `locked ${a.proc.pid}`);
  assert.equal(await readFile(`${disk}.lock`, 'utf8'), `${a.proc.pid}\ttidemark serve\n`);
  for (const exclusive of [true, false]) {
    await assert.rejects(DiskLock.acquire(disk, { exclusive }), (err: unknown) => {
      assert.ok(err instanceof InUseError);
      assert.equal(err.code, 'E_IN_USE');
      assert.equal(err.data.holder, `PID ${a.proc.pid} (tidemark serve)`);
      assert.match(err.message, new RegExp(`disk\\.vhdx is in use by PID ${a.proc.pid} \\(tidemark serve\\)`));
      return true;
    });
  }
  a.proc.kill('SIGKILL');
  await exited(a.proc);
  const mine = await DiskLock.acquire(disk, { exclusive: true, holder: 'tidemark backup' });
  assert.equal(await readFile(`${disk}.lock`, 'utf8'), `${process.pid}\ttidemark backup\n`, 'the stale line was replaced');
  const b = await child(t, disk, 'shared', 'reader');
  assert.equal(b.line, `in-use ${disk} is in use by PID ${process.pid} (tidemark backup); stop it or talk to it through its control socket`);
  await mine.release();
  await mine.release();
  assert.equal(await readFile(`${disk}.lock`, 'utf8'), '', 'an exclusive release clears the file');
  const c = await child(t, disk, 'exclusive', 'tidemark restore');
  assert.equal(c.line, `locked ${c.proc.pid}`, 'released lock is free for others');
  c.proc.stdin!.end();
  await exited(c.proc);
  assert.equal(c.proc.exitCode, 0);
});

test('DiskLock: shared holders coexist and block writers; one writer per disk within a process too', async (t) => {
  const disk = join(await tempDir(t), 'disk.img');
  const r1 = await child(t, disk, 'shared', 'tidemark verify');
  const mine = await DiskLock.acquire(disk, { exclusive: false, holder: 'reader two' });
  const w = await child(t, disk, 'exclusive', 'writer');
  assert.match(w.line, new RegExp(`^in-use .* PID ${r1.proc.pid} \\(tidemark verify\\), PID ${process.pid} \\(reader two\\)`));
  await exited(w.proc);
  assert.equal(w.proc.exitCode, 5);
  r1.proc.stdin!.end();
  await exited(r1.proc);
  await assert.rejects(DiskLock.acquire(disk, { exclusive: true }), InUseError, 'our own shared lock still blocks a writer');
  await mine.release();
  const writer = await DiskLock.acquire(disk, { exclusive: true });
  await assert.rejects(DiskLock.acquire(disk, { exclusive: true }), (err: unknown) => err instanceof InUseError && err.message.includes(`PID ${process.pid} (this process)`), 'a second writer in the same process is refused');
  await writer.release();
});

test('DiskLock: a process that released its shared lock and lives on is not named as a holder (the kernel says who holds it)', async (t) => {
  const disk = join(await tempDir(t), 'disk.raw');
  const gone = await child(t, disk, 'shared', 'tidemark vm run');
  const stays = await child(t, disk, 'shared', 'tidemark verify');
  assert.equal(stays.line, `locked ${stays.proc.pid}`);
  const released = new Promise<void>((resolve) => gone.proc.stdout!.on('data', (d: Buffer) => d.toString().includes('released') && resolve()));
  gone.proc.stdin!.write('release\n');
  await released;
  assert.match(await readFile(`${disk}.lock`, 'utf8'), new RegExp(`^${gone.proc.pid}\ttidemark vm run$`, 'm'), 'its line is still in the file');
  await assert.rejects(DiskLock.acquire(disk, { exclusive: true }), (err: unknown) => {
    assert.ok(err instanceof InUseError);
    assert.equal(err.data.holder, `PID ${stays.proc.pid} (tidemark verify)`, 'only the process that holds the lock');
    return true;
  });
  stays.proc.stdin!.end();
  await exited(stays.proc);
  const mine = await DiskLock.acquire(disk, { exclusive: true, holder: 'tidemark backup' });
  await mine.release();
  gone.proc.stdin!.end();
  await exited(gone.proc);
});
