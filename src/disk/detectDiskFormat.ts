import { open } from 'node:fs/promises';
import { CorruptError, NotFoundError } from '../errors.js';
import { UnsupportedDiskFormatError } from './errors.js';
import { type DiskFormat, SNIFF_HEAD_BYTES, SNIFF_TAIL_BYTES, sniffFormat } from './sniffFormat.js';

/**
 * The format of the disk at `path`, read from its content (see sniffFormat), never from its name.
 * Throws NotFoundError when the file is missing, UnsupportedDiskFormatError for qcow2/VMDK/VHD/VDI/QED,
 * CorruptError for a VHDX whose file type identifier is damaged.
 */
export async function detectDiskFormat(path: string): Promise<DiskFormat> {
  let fh;
  try {
    fh = await open(path, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new NotFoundError(`disk ${path}`, 'check the path');
    throw err;
  }
  try {
    const st = await fh.stat();
    if (st.isDirectory()) throw new NotFoundError(`disk ${path}`, 'it is a directory; give the path of a disk file');
    const head = Buffer.alloc(Math.min(SNIFF_HEAD_BYTES, st.size));
    if (head.length > 0) await fh.read(head, 0, head.length, 0);
    const tail = Buffer.alloc(Math.min(SNIFF_TAIL_BYTES, st.size));
    if (tail.length > 0) await fh.read(tail, 0, tail.length, st.size - tail.length);
    const s = sniffFormat(head, tail);
    switch (s.kind) {
      case 'vhdx':
      case 'raw':
        return s.kind;
      case 'foreign':
        throw new UnsupportedDiskFormatError(path, s.format);
      case 'damaged-vhdx':
        throw new CorruptError(path, 'file type identifier', 'VHDX headers are present but the "vhdxfile" signature at byte 0 is damaged; restore the disk from a backup (reading it as raw would expose VHDX metadata as disk content)');
    }
  } finally {
    await fh.close();
  }
}
