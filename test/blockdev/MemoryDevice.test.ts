import { MemoryDevice } from '../../src/blockdev/MemoryDevice.js';
import { runContract } from './contract.js';

runContract('MemoryDevice', async (_t, size) => ({ device: new MemoryDevice(size) }), { sizes: [1024 * 1024, 1024 * 1024 + 12345] });
runContract('MemoryDevice (read-only)', async (_t, size) => ({ device: new MemoryDevice(size, 512, 4096, { readOnly: true }) }), { readOnly: true });
