/**
 * Worker-thread side of CodecPool: encodes chunks (digest + zstd + AES-GCM) or decodes a restore's
 * read window (decodeBlobs: AES-GCM + zstd + digest check) off the main thread.
 * Receives { id, data } -> { id, digest, bytes }; { id, op: 'decode', window, plain, blobs } -> { id, decoded }
 * (window and plain are shared memory: plaintexts are written into plain in place);
 * any failure -> { id, error }.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { ObjectKind } from './constants.js';
import { decodeBlobs, type WindowBlob } from './decodeBlobs.js';
import { encodeObject, objectDigest, type RepoKeys } from './ObjectCodec.js';

const init = workerData as { encKey?: Uint8Array; idKey?: Uint8Array; zstdLevel: number };
const keys: RepoKeys | null = init.encKey && init.idKey ? { encKey: Buffer.from(init.encKey), idKey: Buffer.from(init.idKey) } : null;

parentPort!.on('message', (msg: { id: number; data?: Uint8Array; op?: 'decode'; window?: Uint8Array; plain?: Uint8Array; blobs?: WindowBlob[] }) => {
  try {
    if (msg.op === 'decode') {
      parentPort!.postMessage({ id: msg.id, decoded: decodeBlobs(msg.window!, msg.blobs!, msg.plain!, ObjectKind.chunk, keys) });
      return;
    }
    const plain = Buffer.from(msg.data!.buffer, msg.data!.byteOffset, msg.data!.byteLength);
    const digest = objectDigest(plain, keys);
    const bytes = encodeObject(ObjectKind.chunk, plain, { keys, zstdLevel: init.zstdLevel });
    parentPort!.postMessage({ id: msg.id, digest, bytes });
  } catch (err) {
    parentPort!.postMessage({ id: msg.id, error: String(err) });
  }
});
