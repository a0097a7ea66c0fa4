/**
 * Recognise a disk format from the bytes of a file, never from its name. Pure: bytes in, verdict out.
 *
 * - VHDX: the file type identifier "vhdxfile" at byte 0 (MS-VHDX 2.2.1).
 * - A file whose first 8 bytes are not "vhdxfile" but which has VHDX headers ("head" at 64 KiB and
 *   128 KiB) and a region table ("regi" at 192 KiB) is a VHDX with a damaged identifier: reading it
 *   as raw would silently expose VHDX metadata as disk content, so it is reported as damaged.
 * - Formats Tidemark does not read (qcow, QED, VMDK, VHD, VDI) are named so callers can refuse them
 *   instead of presenting their metadata as disk content.
 * - Everything else is raw.
 */
export type DiskFormat = 'vhdx' | 'raw';

export type Sniffed =
  | { kind: 'vhdx' }
  | { kind: 'raw' }
  | { kind: 'foreign'; format: string }
  | { kind: 'damaged-vhdx' };

/** Bytes of the file start that `sniffFormat` looks at (it also works with fewer, for small files). */
export const SNIFF_HEAD_BYTES = 0x30000 + 8;
/** Bytes of the file end that `sniffFormat` looks at (the VHD footer). */
export const SNIFF_TAIL_BYTES = 512;

const VHDX_SIGNATURE = Buffer.from('vhdxfile', 'latin1');

function at(buf: Buffer, offset: number, text: string | Buffer): boolean {
  const sig = typeof text === 'string' ? Buffer.from(text, 'latin1') : text;
  return buf.length >= offset + sig.length && buf.compare(sig, 0, sig.length, offset, offset + sig.length) === 0;
}

/** `head`: the first up to SNIFF_HEAD_BYTES bytes; `tail`: the last up to 512 bytes (may overlap head). */
export function sniffFormat(head: Buffer, tail: Buffer = Buffer.alloc(0)): Sniffed {
  if (at(head, 0, VHDX_SIGNATURE)) return { kind: 'vhdx' };
  if (at(head, 0x10000, 'head') && at(head, 0x20000, 'head') && at(head, 0x30000, 'regi')) return { kind: 'damaged-vhdx' };
  if (at(head, 0, Buffer.from([0x51, 0x46, 0x49, 0xfb]))) return { kind: 'foreign', format: 'qcow2' };
  if (at(head, 0, Buffer.from([0x51, 0x45, 0x44, 0x00]))) return { kind: 'foreign', format: 'QED' };
  if (at(head, 0, 'KDMV') || at(head, 0, 'COWD') || at(head, 0, '# Disk DescriptorFile')) return { kind: 'foreign', format: 'VMDK' };
  if (at(head, 0, 'conectix')) return { kind: 'foreign', format: 'VHD' };
  if (head.length >= 0x44 && head.readUInt32LE(0x40) === 0xbeda107f) return { kind: 'foreign', format: 'VDI' };
  if (tail.length >= 512 && at(tail, tail.length - 512, 'conectix')) return { kind: 'foreign', format: 'VHD' };
  return { kind: 'raw' };
}
