import { CorruptError } from '../errors.js';
import { BLOCK_SIZE_MAX, BLOCK_SIZE_MIN, MAX_DISK_SIZE, PARAM_HAS_PARENT, PARAM_LEAVE_BLOCKS_ALLOCATED } from './constants.js';
import { guidFromBuffer, guidToBuffer } from './guid.js';

/**
 * The fixed-size system metadata items (all little-endian):
 *   File Parameters (8 bytes): u32 BlockSize | u32 flags (bit0 LeaveBlockAllocated, bit1 HasParent)
 *   Virtual Disk Size (8): u64, multiple of the logical sector size, <= 64 TiB
 *   Page 83 Data (16): a GUID (the virtual disk id)
 *   Logical Sector Size (4) and Physical Sector Size (4): u32, 512 or 4096
 */
export interface FileParameters {
  blockSize: number;
  leaveBlocksAllocated: boolean;
  hasParent: boolean;
}

function need(buf: Buffer, n: number, file: string, structure: string): void {
  if (buf.length < n) throw new CorruptError(file, structure, `item is ${buf.length} bytes, expected ${n}`);
}

export function fileParametersToBuffer(p: FileParameters): Buffer {
  const b = Buffer.alloc(8);
  b.writeUInt32LE(p.blockSize, 0);
  b.writeUInt32LE((p.leaveBlocksAllocated ? PARAM_LEAVE_BLOCKS_ALLOCATED : 0) | (p.hasParent ? PARAM_HAS_PARENT : 0), 4);
  return b;
}

export function fileParametersFromBuffer(b: Buffer, file = 'vhdx'): FileParameters {
  const s = 'file parameters';
  need(b, 8, file, s);
  const blockSize = b.readUInt32LE(0);
  const flags = b.readUInt32LE(4);
  if (blockSize < BLOCK_SIZE_MIN || blockSize > BLOCK_SIZE_MAX || (blockSize & (blockSize - 1)) !== 0) {
    throw new CorruptError(file, s, `block size ${blockSize} is not a power of two between 1 MiB and 256 MiB`);
  }
  return { blockSize, leaveBlocksAllocated: (flags & PARAM_LEAVE_BLOCKS_ALLOCATED) !== 0, hasParent: (flags & PARAM_HAS_PARENT) !== 0 };
}

export function u64ToBuffer(v: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(v));
  return b;
}

export function u32ToBuffer(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(v);
  return b;
}

export function virtualDiskSizeFromBuffer(b: Buffer, logicalSectorSize: number, file = 'vhdx'): number {
  const s = 'virtual disk size';
  need(b, 8, file, s);
  const v = b.readBigUInt64LE(0);
  if (v === 0n || v > BigInt(MAX_DISK_SIZE)) throw new CorruptError(file, s, `${v} is outside 1 byte .. 64 TiB`);
  const n = Number(v);
  if (n % logicalSectorSize !== 0) throw new CorruptError(file, s, `${n} is not a multiple of the logical sector size ${logicalSectorSize}`);
  return n;
}

export function sectorSizeFromBuffer(b: Buffer, which: 'logical' | 'physical', file = 'vhdx'): 512 | 4096 {
  const s = `${which} sector size`;
  need(b, 4, file, s);
  const v = b.readUInt32LE(0);
  if (v !== 512 && v !== 4096) throw new CorruptError(file, s, `${v} is neither 512 nor 4096`);
  return v;
}

export function page83FromBuffer(b: Buffer, file = 'vhdx'): string {
  need(b, 16, file, 'page 83 data');
  return guidFromBuffer(b, 0);
}

export function page83ToBuffer(guid: string): Buffer {
  return guidToBuffer(guid);
}
