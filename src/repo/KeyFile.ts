/**
 * Key files: the repository's random 64-byte master key (32 B AES key + 32 B HMAC id key), wrapped
 * with a key-encryption key derived from a passphrase by scrypt. JSON, so the parameters travel with
 * the key:
 *
 *   { "version": 1, "kdf": "scrypt", "N": 32768, "r": 8, "p": 1, "salt": "<base64 32 B>",
 *     "nonce": "<base64 12 B>", "wrapped": "<base64 64 B ciphertext + 16 B GCM tag>",
 *     "created": "<ISO time>", "host": "<hostname>" }
 *
 * AES-256-GCM authenticates the unwrap, so a wrong passphrase is detected (WrongPassphraseError) and
 * never yields a garbage key. Several key files may wrap the same master key (one per passphrase).
 */
import { createCipheriv, createDecipheriv, randomBytes, scrypt as scryptCb, type ScryptOptions } from 'node:crypto';
import { hostname } from 'node:os';
import { DEFAULT_SCRYPT, GCM_NONCE_SIZE, GCM_TAG_SIZE } from './constants.js';
import type { RepoKeys } from './ObjectCodec.js';

export interface ScryptParams {
  N: number;
  r: number;
  p: number;
}

interface KeyFileJson extends ScryptParams {
  version: 1;
  kdf: 'scrypt';
  salt: string;
  nonce: string;
  wrapped: string;
  created: string;
  host: string;
}

function scrypt(passphrase: string, salt: Buffer, params: ScryptParams): Promise<Buffer> {
  const opts: ScryptOptions = { N: params.N, r: params.r, p: params.p, maxmem: 256 * params.N * params.r + 1024 * 1024 };
  return new Promise((resolve, reject) => scryptCb(passphrase.normalize('NFC'), salt, 32, opts, (err, key) => (err ? reject(err) : resolve(key))));
}

export function newMasterKey(): Buffer {
  return randomBytes(64);
}

export function splitMasterKey(master: Buffer): RepoKeys {
  return { encKey: master.subarray(0, 32), idKey: master.subarray(32, 64) };
}

/** Wrap `master` under `passphrase`; returns the key file's bytes. */
export async function createKeyFile(master: Buffer, passphrase: string, params: ScryptParams = DEFAULT_SCRYPT): Promise<Buffer> {
  const salt = randomBytes(32);
  const kek = await scrypt(passphrase, salt, params);
  const nonce = randomBytes(GCM_NONCE_SIZE);
  const c = createCipheriv('aes-256-gcm', kek, nonce);
  const wrapped = Buffer.concat([c.update(master), c.final(), c.getAuthTag()]);
  const json: KeyFileJson = {
    version: 1,
    kdf: 'scrypt',
    N: params.N,
    r: params.r,
    p: params.p,
    salt: salt.toString('base64'),
    nonce: nonce.toString('base64'),
    wrapped: wrapped.toString('base64'),
    created: new Date().toISOString(),
    host: hostname(),
  };
  return Buffer.from(JSON.stringify(json, null, 2) + '\n');
}

/**
 * Unwrap a key file. Resolves the master key, `null` when the passphrase is wrong (GCM tag mismatch);
 * rejects with `Error` when the file is not a key file at all.
 */
export async function openKeyFile(bytes: Uint8Array, passphrase: string): Promise<Buffer | null> {
  let j: KeyFileJson;
  try {
    j = JSON.parse(Buffer.from(bytes).toString('utf8')) as KeyFileJson;
  } catch {
    throw new Error('not JSON');
  }
  if (j?.version !== 1 || j.kdf !== 'scrypt' || ![j.N, j.r, j.p].every((x) => Number.isInteger(x) && x > 0) || j.N > 2 ** 20 || j.r > 32 || j.p > 16) {
    throw new Error('unsupported key file (version/kdf/parameters)');
  }
  const salt = Buffer.from(j.salt, 'base64');
  const nonce = Buffer.from(j.nonce, 'base64');
  const wrapped = Buffer.from(j.wrapped, 'base64');
  if (nonce.length !== GCM_NONCE_SIZE || wrapped.length !== 64 + GCM_TAG_SIZE) throw new Error('malformed key file');
  const kek = await scrypt(passphrase, salt, j);
  try {
    const d = createDecipheriv('aes-256-gcm', kek, nonce);
    d.setAuthTag(wrapped.subarray(64));
    return Buffer.concat([d.update(wrapped.subarray(0, 64)), d.final()]);
  } catch {
    return null;
  }
}
