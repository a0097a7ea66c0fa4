import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { allocationDescriptors, changeDescriptors, MAX_DESCRIPTORS } from '../../src/nbd/blockStatus.js';
import { resolveMetaContexts } from '../../src/nbd/metaContexts.js';
import type { ChangeSource } from '../../src/nbd/ChangeSource.js';
import type { Extent } from '../../src/blockdev/BlockDevice.js';
import { fcSeed } from '../helpers/tools.js';

test('base:allocation maps data/zero/hole to 0/ZERO/HOLE|ZERO and merges equal neighbours', () => {
  const ex: Extent[] = [
    { offset: 0, length: 4096, type: 'data' },
    { offset: 4096, length: 4096, type: 'zero' },
    { offset: 8192, length: 8192, type: 'hole' },
    { offset: 16384, length: 4096, type: 'hole' },
  ];
  assert.deepEqual(allocationDescriptors(ex, 0, 20480), [
    { length: 4096, flags: 0 },
    { length: 4096, flags: 2 },
    { length: 12288, flags: 3 },
  ]);
  assert.deepEqual(allocationDescriptors(ex, 0, 20480, true), [{ length: 4096, flags: 0 }]);
});

test('change descriptors cover the window exactly, flag only changed bytes (property)', () => {
  fc.assert(
    fc.property(
      fc.array(fc.record({ offset: fc.integer({ min: 0, max: 10000 }), length: fc.integer({ min: 1, max: 3000 }) }), { maxLength: 10 }),
      fc.integer({ min: 0, max: 8000 }),
      fc.integer({ min: 1, max: 8000 }),
      (changes, offset, length) => {
        const d = changeDescriptors(changes, offset, length);
        assert.equal(d.reduce((s, x) => s + x.length, 0), length);
        let pos = offset;
        for (const x of d) {
          assert.ok(x.length > 0);
          for (const probe of [pos, pos + x.length - 1]) {
            const changed = changes.some((c) => probe >= c.offset && probe < c.offset + c.length);
            assert.equal(x.flags === 1, changed, `byte ${probe}`);
          }
          pos += x.length;
        }
        for (let i = 1; i < d.length; i++) assert.notEqual(d[i]!.flags, d[i - 1]!.flags);
        const one = changeDescriptors(changes, offset, length, true);
        assert.equal(one.length, 1);
        assert.ok(one[0]!.length <= length);
      },
    ),
    { seed: fcSeed() },
  );
});

test('descriptor lists are capped', () => {
  const changes = Array.from({ length: MAX_DESCRIPTORS + 10 }, (_, i) => ({ offset: i * 2, length: 1 }));
  assert.equal(changeDescriptors(changes, 0, changes.length * 2).length, MAX_DESCRIPTORS);
});

test('meta context resolution: base and tidemark namespaces, wildcards, unknown IDs ignored', async () => {
  const src: ChangeSource = {
    async changesSince(id) {
      if (id !== 'id1' && id !== 'id2') throw new Error('unknown');
      return [];
    },
    async listIds() {
      return ['id1', 'id2'];
    },
  };
  assert.deepEqual(await resolveMetaContexts('list', []), ['base:allocation']);
  assert.deepEqual(await resolveMetaContexts('list', [], src), ['base:allocation', 'tidemark:changes:id1', 'tidemark:changes:id2']);
  assert.deepEqual(await resolveMetaContexts('list', ['base:'], src), ['base:allocation']);
  assert.deepEqual(await resolveMetaContexts('set', ['base:'], src), []);
  assert.deepEqual(await resolveMetaContexts('list', ['tidemark:changes:'], src), ['tidemark:changes:id1', 'tidemark:changes:id2']);
  assert.deepEqual(await resolveMetaContexts('set', ['tidemark:changes:id2', 'tidemark:changes:nope', 'qemu:dirty-bitmap:x', 'base:other'], src), ['tidemark:changes:id2']);
  assert.deepEqual(await resolveMetaContexts('set', ['tidemark:changes:id1'], undefined), []);
  // A source without listIds: probed via changesSince; LIST offers the template.
  const probe: ChangeSource = { changesSince: async (id) => (id === 'ok' ? [] : Promise.reject(new Error('no'))) };
  assert.deepEqual(await resolveMetaContexts('set', ['tidemark:changes:ok', 'tidemark:changes:bad'], probe), ['tidemark:changes:ok']);
  assert.deepEqual(await resolveMetaContexts('list', ['tidemark:'], probe), ['tidemark:changes:']);
});
