import { join } from 'node:path';
import { VhdxDevice } from '../../src/vhdx/VhdxDevice.js';
import { runContract } from '../blockdev/contract.js';
import { tempDir } from '../helpers/tools.js';

const MiB = 1024 * 1024;
const KiB = 1024;

runContract('VhdxDevice dynamic 512', async (t, size) => {
  const path = join(await tempDir(t, 'vhdx-contract-'), 'disk.vhdx');
  const device = await VhdxDevice.create(path, { size, blockSize: size > 2 ** 40 ? 32 * MiB : MiB });
  return { device, reopen: () => VhdxDevice.open(path) };
}, { sizes: [MiB + 12 * KiB, 3 * MiB + 512] });

runContract('VhdxDevice dynamic 4096', async (t, size) => {
  const path = join(await tempDir(t, 'vhdx-contract-'), 'disk.vhdx');
  const device = await VhdxDevice.create(path, { size, blockSize: 2 * MiB, logicalSectorSize: 4096 });
  return { device, reopen: () => VhdxDevice.open(path) };
}, { sizes: [MiB + 12 * KiB, 5 * MiB], largeSize: 0 });

