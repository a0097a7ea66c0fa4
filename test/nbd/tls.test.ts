import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { copyFile, readFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { NbdServer } from '../../src/nbd/NbdServer.js';
import { MemoryDevice } from '../../src/blockdev/MemoryDevice.js';
import { requireTools, tempDir } from '../helpers/tools.js';
import { exec } from './helpers/exec.js';
import { RawClient } from './helpers/RawClient.js';
import * as P from '../../src/nbd/protocol.js';

const MiB = 1024 * 1024;

/** A self-signed certificate valid for 127.0.0.1/localhost, laid out as qemu and libnbd expect (ca-cert.pem). */
async function makeCert(t: TestContext): Promise<{ dir: string; cert: Buffer; key: Buffer }> {
  const dir = await tempDir(t);
  await exec('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem'), '-days', '2', '-subj', '/CN=localhost',
    '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1',
    '-addext', 'basicConstraints=critical,CA:TRUE',
    '-addext', 'keyUsage=critical,digitalSignature,keyEncipherment,keyCertSign',
  ]);
  await copyFile(join(dir, 'cert.pem'), join(dir, 'ca-cert.pem'));
  return { dir, cert: await readFile(join(dir, 'cert.pem')), key: await readFile(join(dir, 'key.pem')) };
}

async function serveTls(t: TestContext, mode: 'allowed' | 'required', cert: Buffer, key: Buffer): Promise<{ port: number; dev: MemoryDevice }> {
  const dev = new MemoryDevice(8 * MiB);
  const srv = new NbdServer({ exports: [{ name: 'disk', device: dev }], tls: { cert, key, mode } });
  const a = (await srv.listen({ port: 0 })) as AddressInfo;
  t.after(() => srv.close());
  return { port: a.port, dev };
}

test('TLS required: qemu-io and nbdinfo work over STARTTLS; plaintext clients are refused', async (t) => {
  if (!requireTools(t, 'openssl', 'qemu-io', 'nbdinfo')) return;
  const { dir, cert, key } = await makeCert(t);
  const { port, dev } = await serveTls(t, 'required', cert, key);
  await exec('qemu-io', [
    '--object', `tls-creds-x509,id=tls0,dir=${dir},endpoint=client`,
    '--image-opts', `driver=nbd,host=127.0.0.1,port=${port},export=disk,tls-creds=tls0`,
    '-c', 'write -P 0x33 0 1M', '-c', 'read -P 0x33 0 1M',
  ]);
  assert.ok((await dev.read(0, MiB)).equals(Buffer.alloc(MiB, 0x33)));
  const info = await exec('nbdinfo', ['--json', `nbds://127.0.0.1:${port}/disk?tls-certificates=${dir}`]);
  assert.equal((JSON.parse(info.stdout) as { TLS: boolean }).TLS, true);
  const plain = await exec('nbdinfo', [`nbd://127.0.0.1:${port}/disk`], { allowFail: true });
  assert.notEqual(plain.status, 0);
  // A raw client: everything but STARTTLS is TLS_REQD, EXPORT_NAME drops the connection.
  const c = await RawClient.connect({ port });
  await c.greet();
  assert.equal((await c.option(P.OPT_LIST))[0]!.type, P.REP_ERR_TLS_REQD);
  c.write(Buffer.concat([Buffer.from('IHAVEOPT'), Buffer.from([0, 0, 0, 1, 0, 0, 0, 4]), Buffer.from('disk')]));
  await c.waitClosed();
});

test('TLS allowed: both plaintext and TLS clients work; a client that does not trust the cert fails alone', async (t) => {
  if (!requireTools(t, 'openssl', 'nbdinfo')) return;
  const { dir, cert, key } = await makeCert(t);
  const other = await makeCert(t);
  const { port } = await serveTls(t, 'allowed', cert, key);
  const plain = JSON.parse((await exec('nbdinfo', ['--json', `nbd://127.0.0.1:${port}/disk`])).stdout) as { TLS: boolean };
  assert.equal(plain.TLS, false);
  const secure = JSON.parse((await exec('nbdinfo', ['--json', `nbds://127.0.0.1:${port}/disk?tls-certificates=${dir}`])).stdout) as { TLS: boolean };
  assert.equal(secure.TLS, true);
  const untrusted = await exec('nbdinfo', [`nbds://127.0.0.1:${port}/disk?tls-certificates=${other.dir}`], { allowFail: true });
  assert.notEqual(untrusted.status, 0);
  assert.equal(JSON.parse((await exec('nbdinfo', ['--json', `nbd://127.0.0.1:${port}/disk`])).stdout).TLS, false, 'server still serves');
});
