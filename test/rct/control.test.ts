import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { MemoryDevice } from '../../src/blockdev/MemoryDevice.js';
import { controlClient, controlSocketPath, startControlServer } from '../../src/rct/control.js';
import { enableTracking } from '../../src/rct/enableTracking.js';
import { TrackingInvalidError, UnknownRctIdError } from '../../src/rct/errors.js';
import { openTracked } from '../../src/rct/trackingLayer.js';
import { tempDir } from '../helpers/tools.js';
import { keepOpen } from './rctTestKit.js';

async function rawExchange(path: string, lines: string[]): Promise<Array<Record<string, unknown>>> {
  return new Promise((res, rej) => {
    const s = connect(path);
    let buf = '';
    const out: Array<Record<string, unknown>> = [];
    s.setEncoding('utf8');
    s.on('error', rej);
    s.on('data', (d: string) => {
      buf += d;
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        out.push(JSON.parse(buf.slice(0, nl)));
        buf = buf.slice(nl + 1);
        if (out.length === lines.length) {
          s.end();
          res(out);
        }
      }
    });
    s.on('connect', () => s.write(lines.join('\n') + '\n'));
  });
}

test('control socket: JSON lines, typed errors, bad requests answered not crashed', async (t) => {
  const dir = await tempDir(t, 'tidemark-rct-ctl-');
  const disk = join(dir, 'disk');
  await writeFile(disk, '');
  await enableTracking(disk, { blockSize: 4096, regionSize: 1 << 20 });
  assert.equal(await controlClient(disk), null, 'nobody serves the disk yet');
  const dev = await openTracked(keepOpen(new MemoryDevice(8 << 20)), disk, { persistIntervalMs: 0 });
  const server = await startControlServer(disk, dev);
  assert.equal(server.path, controlSocketPath(disk));

  const c = (await controlClient(disk))!;
  const id = await c.seal();
  await dev.write(4096 * 3, Buffer.alloc(5000, 1));
  assert.deepEqual(await c.changes(id), [{ offset: 4096 * 3, length: 8192 }]);
  assert.deepEqual(await c.changedIn(id, 4096 * 4, 100), [{ offset: 4096 * 4, length: 100 }]);
  assert.deepEqual((await c.status()).liveIds!.map((x) => x.id), [id]);
  await assert.rejects(c.changes(`rct:${'0'.repeat(32)}:1:${'0'.repeat(16)}`), TrackingInvalidError);
  await c.drop(id);
  await assert.rejects(c.changes(id), UnknownRctIdError);

  const answers = await rawExchange(server.path, ['{not json', '{"id":7,"op":"explode"}', '{"id":8,"op":"changes","since":5}', '{"id":9,"op":"status"}']);
  assert.equal((answers[0]!.error as { code: string }).code, 'E_USAGE');
  assert.deepEqual([answers[1]!.id, (answers[1]!.error as { code: string }).code], [7, 'E_USAGE']);
  assert.match((answers[2]!.error as { message: string }).message, /"since" must be a string/);
  assert.equal(answers[3]!.ok, true);

  c.close();
  await server.close();
  await dev.close();
  assert.equal(await controlClient(disk), null, 'closed server: the socket is gone');
  // long disk paths fall back to an abstract socket
  assert.ok(controlSocketPath(join(dir, 'x'.repeat(120))).startsWith('\0'));
});
