import { MemoryBackend } from '../../src/backend/MemoryBackend.js';
import { LocalBackend } from '../../src/backend/LocalBackend.js';
import { withRetry } from '../../src/backend/withRetry.js';
import { withConcurrencyLimit } from '../../src/backend/withConcurrencyLimit.js';
import { tempDir } from '../helpers/tools.js';
import { backendContract } from './contract.js';

backendContract('MemoryBackend', async () => new MemoryBackend());
backendContract('LocalBackend', async (t) => new LocalBackend(await tempDir(t)));
backendContract('withRetry(LocalBackend)', async (t) => withRetry(new LocalBackend(await tempDir(t)), { baseDelayMs: 1 }));
backendContract('withConcurrencyLimit(MemoryBackend, 2)', async () => withConcurrencyLimit(new MemoryBackend(), 2));
backendContract('withConcurrencyLimit(withRetry(LocalBackend), 1)', async (t) => withConcurrencyLimit(withRetry(new LocalBackend(await tempDir(t))), 1));
