import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { RawFileDevice } from '../../src/blockdev/RawFileDevice.js';
import { mountXfs, xfsSkipReason } from '../native/xfsMount.js';
import { runContract } from './contract.js';

/**
 * The raw-device contract on XFS (reflink-capable, different SEEK_DATA and unwritten-extent behaviour
 * than ext4), on a small loop-mounted image set up before the tests are registered. Skipped with a
 * note where mounting is not possible, failing under CI=true.
 */
const xfs = mountXfs();
if ('why' in xfs) {
  test('RawFileDevice on XFS', (t) => void t.skip(xfsSkipReason(xfs.why)));
} else {
  after(() => xfs.unmount());
  let n = 0;
  runContract(
    'RawFileDevice on XFS',
    async (_t, size) => {
      const path = join(xfs.mnt, `disk-${n++}.img`);
      return { device: await RawFileDevice.create(path, size), reopen: () => RawFileDevice.open(path), cleanup: () => rm(path, { force: true }) };
    },
    { sizes: [1024 * 1024 + 12345] },
  );
}
