/**
 * Worker-thread side of CodecPool: encodes chunks (digest + zstd + AES-GCM) off the main thread.
 * Receives { id, data }, answers { id, digest, bytes } or { id, error }.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { ObjectKind } from './constants.js';
import { encodeObject, objectDigest, type RepoKeys } from './ObjectCodec.js';

const init = workerData as { encKey?: Uint8Array; idKey?: Uint8Array; zstdLevel: number };
const keys: RepoKeys | null = init.encKey && init.idKey ? { encKey: Buffer.from(init.encKey), idKey: Buffer.from(init.idKey) } : null;

parentPort!.on('message', (msg: { id: number; data: Uint8Array }) => {
  try {
    const plain = Buffer.from(msg.data.buffer, msg.data.byteOffset, msg.data.byteLength);
    const digest = objectDigest(plain, keys);
    const bytes = encodeObject(ObjectKind.chunk, plain, { keys, zstdLevel: init.zstdLevel });
    parentPort!.postMessage({ id: msg.id, digest, bytes });
  } catch (err) {
    parentPort!.postMessage({ id: msg.id, error: String(err) });
  }
});
