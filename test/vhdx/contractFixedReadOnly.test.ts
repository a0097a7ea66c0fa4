import { join } from 'node:path';
import { VhdxDevice } from '../../src/vhdx/VhdxDevice.js';
import { runContract } from '../blockdev/contract.js';
import { tempDir } from '../helpers/tools.js';

const MiB = 1024 * 1024;
const KiB = 1024;

runContract('VhdxDevice fixed 512', async (t, size) => {
  const path = join(await tempDir(t, 'vhdx-contract-'), 'disk.vhdx');
  const device = await VhdxDevice.create(path, { size, type: 'fixed', blockSize: MiB, physicalSectorSize: 512 });
  return { device, reopen: () => VhdxDevice.open(path) };
}, { sizes: [MiB, MiB + 12 * KiB], largeSize: 0 });

runContract('VhdxDevice fixed 4096', async (t, size) => {
  const path = join(await tempDir(t, 'vhdx-contract-'), 'disk.vhdx');
  const device = await VhdxDevice.create(path, { size, type: 'fixed', blockSize: 2 * MiB, logicalSectorSize: 4096 });
  return { device, reopen: () => VhdxDevice.open(path) };
}, { sizes: [MiB + 12 * KiB], largeSize: 0 });

runContract('VhdxDevice read-only', async (t, size) => {
  const path = join(await tempDir(t, 'vhdx-contract-'), 'disk.vhdx');
  const w = await VhdxDevice.create(path, { size, blockSize: MiB });
  await w.write(4096, Buffer.alloc(10000, 7));
  await w.close();
  return { device: await VhdxDevice.open(path, { readOnly: true }) };
}, { readOnly: true, largeSize: 0 });
