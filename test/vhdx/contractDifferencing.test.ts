import { join } from 'node:path';
import { VhdxDevice } from '../../src/vhdx/VhdxDevice.js';
import { runContract } from '../blockdev/contract.js';
import { tempDir } from '../helpers/tools.js';

const MiB = 1024 * 1024;
const KiB = 1024;

runContract('VhdxDevice differencing 512', async (t, size) => {
  const dir = await tempDir(t, 'vhdx-contract-');
  const parent = await VhdxDevice.create(join(dir, 'parent.vhdx'), { size, blockSize: size > 2 ** 40 ? 32 * MiB : MiB });
  await parent.close();
  const path = join(dir, 'child.avhdx');
  const device = await VhdxDevice.create(path, { size, parent: join(dir, 'parent.vhdx') });
  return { device, reopen: () => VhdxDevice.open(path) };
}, { sizes: [MiB + 12 * KiB, 3 * MiB + 512] });

runContract('VhdxDevice differencing 4096', async (t, size) => {
  const dir = await tempDir(t, 'vhdx-contract-');
  const parent = await VhdxDevice.create(join(dir, 'parent.vhdx'), { size, blockSize: MiB, logicalSectorSize: 4096 });
  await parent.close();
  const path = join(dir, 'child.avhdx');
  const device = await VhdxDevice.create(path, { size, parent: join(dir, 'parent.vhdx') });
  return { device, reopen: () => VhdxDevice.open(path) };
}, { sizes: [MiB, MiB + 12 * KiB], largeSize: 0 });

