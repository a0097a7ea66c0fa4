import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { NbdServer } from '../../src/nbd/NbdServer.js';
import * as P from '../../src/nbd/protocol.js';
import { VhdxDevice } from '../../src/vhdx/VhdxDevice.js';
import { RawFileDevice } from '../../src/blockdev/RawFileDevice.js';
import { RawClient } from './helpers/RawClient.js';
import { tempDir } from '../helpers/tools.js';

const MiB = 1024 * 1024;

/**
 * The server reads into recycled (dirty) buffers and no longer zeroes them: a sparse disk's holes must still
 * arrive as zeros, because readInto fills every byte (BlockDevice contract).
 */
for (const kind of ['vhdx', 'raw'] as const) {
  test(`${kind}: holes of a sparse disk read as zeros through recycled READ buffers`, async (t) => {
    const dir = await tempDir(t);
    const path = join(dir, `sparse.${kind}`);
    const size = 16 * MiB;
    const dev = kind === 'vhdx' ? await VhdxDevice.create(path, { size, blockSize: MiB }) : await RawFileDevice.create(path, size);
    assert.equal(typeof dev.readInto, 'function');
    // Blocks 0, 2, 4, ... hold 0xc7; odd blocks are never written (VHDX: not allocated; raw: holes).
    for (let b = 0; b < 16; b += 2) await dev.write(b * MiB, Buffer.alloc(MiB, 0xc7));
    // A trimmed range inside written data reads as zeros too.
    await dev.trim(4 * MiB, MiB);
    const srv = new NbdServer({ exports: [{ name: 'd', device: dev }] });
    const { port } = (await srv.listen({ port: 0 })) as { port: number };
    t.after(async () => {
      await srv.close();
      await dev.close();
    });
    for (const structured of [false, true]) {
      const c = await RawClient.open({ port }, { name: 'd', structured });
      t.after(() => c.close());
      for (let round = 0; round < 3; round++) {
        // Dirty the pool with data, then read spans that cross holes into (possibly) the same buffers.
        const full = await Promise.all([0, 2, 6, 8].map((b) => c.request(P.CMD_READ, { offset: b * MiB, length: MiB })));
        full.forEach((r, i) => assert.ok(r.data!.equals(Buffer.alloc(MiB, 0xc7)), `round ${round}: data block ${i}`));
        const spans = await Promise.all([1, 3, 4, 9].map((b) => c.request(P.CMD_READ, { offset: b * MiB - 4096, length: MiB + 8192 })));
        spans.forEach((r, i) => {
          const b = [1, 3, 4, 9][i]!;
          const expect = Buffer.alloc(MiB + 8192);
          const written = (x: number): boolean => x % 2 === 0 && x !== 4;
          if (written(b - 1)) expect.fill(0xc7, 0, 4096);
          if (written(b + 1)) expect.fill(0xc7, MiB + 4096);
          assert.ok(r.data!.equals(expect), `round ${round} structured=${structured}: span over block ${b} reads zeros where unwritten`);
        });
      }
    }
  });
}
