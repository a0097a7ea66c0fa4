import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFile, open } from 'node:fs/promises';
import { join } from 'node:path';
import { ExitCode } from '../../src/errors.js';
import { requireTools, run, tempDir } from '../helpers/tools.js';
import { MiB, tidemark, tidemarkJson } from './cliHarness.js';
import { makeRaw } from './fixtures.js';

test('info/check on missing, foreign and corrupt files: exit codes and messages', async (t) => {
  const dir = await tempDir(t);
  const [missing, missingJson, missingCheck] = await Promise.all([
    tidemark('disk', 'info', join(dir, 'missing.vhdx')),
    tidemarkJson<{ error: { code: string } }>('disk', 'info', join(dir, 'missing.vhdx'), '--json'),
    tidemark('disk', 'check', join(dir, 'missing.vhdx')),
  ]);
  assert.equal(missing.status, ExitCode.NOT_FOUND);
  assert.match(missing.stderr, /not found/);
  assert.equal(missingJson.json.error.code, 'E_NOT_FOUND');
  assert.equal(missingCheck.status, ExitCode.NOT_FOUND);

  // A VHDX whose both headers and both region tables are destroyed.
  const v = join(dir, 'broken.raw');
  assert.equal((await tidemark('disk', 'create', v, '--size', '64M')).status, 0);
  const good = join(dir, 'good.vhdx');
  await copyFile(v, good);
  const fh = await open(v, 'r+');
  for (const off of [0x10000, 0x20000, 0x30000, 0x40000]) await fh.write(Buffer.alloc(4096, 0xee), 0, 4096, off);
  await fh.close();
  const [info, check, checkText, convert, ok] = await Promise.all([
    tidemark('disk', 'info', v),
    tidemarkJson<{ ok: boolean; problems: Array<{ structure: string; message: string }> }>('disk', 'check', v, '--json'),
    tidemark('disk', 'check', v),
    tidemark('disk', 'convert', v, join(dir, 'out.vhdx')),
    tidemarkJson<{ ok: boolean; format: string }>('disk', 'check', good, '--json'),
  ]);
  assert.equal(info.status, ExitCode.CORRUPT, info.stderr);
  assert.match(info.stderr, /broken\.raw/);
  assert.equal(check.status, ExitCode.DIFFERENT);
  assert.equal(check.json.ok, false);
  assert.ok(check.json.problems.length > 0);
  assert.equal(checkText.status, ExitCode.DIFFERENT);
  assert.match(checkText.stdout, /problem/);
  assert.equal(convert.status, ExitCode.CORRUPT);
  assert.equal(ok.status, 0);
  assert.deepEqual([ok.json.ok, ok.json.format], [true, 'vhdx']);

  // The "vhdxfile" signature alone destroyed: refused, not silently read as raw.
  const sig = join(dir, 'sig.vhdx');
  await copyFile(good, sig);
  const fh2 = await open(sig, 'r+');
  await fh2.write(Buffer.from('XXXXXXXX'), 0, 8, 0);
  await fh2.close();
  assert.equal((await tidemark('disk', 'info', sig)).status, ExitCode.CORRUPT);
  assert.equal((await tidemark('disk', 'check', sig)).status, ExitCode.DIFFERENT);

  const raw = join(dir, 'plain');
  await makeRaw(raw, 5 * MiB, [[0, 512]]);
  const rc = await tidemarkJson<{ ok: boolean; format: string; size: number }>('disk', 'check', raw, '--json');
  assert.equal(rc.status, 0);
  assert.deepEqual([rc.json.ok, rc.json.format, rc.json.size], [true, 'raw', 5 * MiB]);
});

test('info refuses formats Tidemark does not read (qcow2) instead of reading them as raw', async (t) => {
  if (!requireTools(t, 'qemu-img')) return;
  const dir = await tempDir(t);
  const q = join(dir, 'disk.img');
  run('qemu-img', ['create', '-q', '-f', 'qcow2', q, '1G']);
  const r = await tidemark('disk', 'info', q);
  assert.equal(r.status, ExitCode.UNSUPPORTED);
  assert.match(r.stderr, /qcow2.*convert/);
});

