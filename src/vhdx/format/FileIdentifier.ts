import { CorruptError } from '../errors.js';
import { SIG_FILE } from './constants.js';

/** The file type identifier at offset 0: "vhdxfile" then an optional UTF-16LE creator string (512 bytes). */
export interface FileIdentifier {
  creator: string;
}

export const FILE_IDENTIFIER_SIZE = 8 + 512;

export function isVhdxSignature(head: Buffer): boolean {
  return head.length >= 8 && head.toString('latin1', 0, 8) === SIG_FILE;
}

export function fileIdentifierFromBuffer(buf: Buffer, file = 'vhdx'): FileIdentifier {
  if (buf.length < FILE_IDENTIFIER_SIZE) throw new CorruptError(file, 'file identifier', 'file is too short to be a VHDX');
  if (!isVhdxSignature(buf)) throw new CorruptError(file, 'file identifier', 'missing "vhdxfile" signature: not a VHDX file');
  const raw = buf.subarray(8, 8 + 512);
  let end = 0;
  while (end < raw.length && (raw[end] !== 0 || raw[end + 1] !== 0)) end += 2;
  return { creator: raw.subarray(0, end).toString('utf16le') };
}

export function fileIdentifierToBuffer(id: FileIdentifier): Buffer {
  const buf = Buffer.alloc(FILE_IDENTIFIER_SIZE);
  buf.write(SIG_FILE, 0, 'latin1');
  const creator = Buffer.from(id.creator, 'utf16le');
  if (creator.length > 510) throw new RangeError('creator string too long (max 255 UTF-16 code units)');
  creator.copy(buf, 8);
  return buf;
}
