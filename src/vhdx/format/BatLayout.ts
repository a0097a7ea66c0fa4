import { SECTORS_PER_BITMAP_BLOCK } from './constants.js';

/**
 * How payload and sector bitmap entries interleave in the BAT.
 * chunkRatio = 2^23 * logicalSectorSize / blockSize payload blocks share one sector bitmap block;
 * the BAT holds, per chunk, chunkRatio payload entries followed by one sector bitmap entry.
 *   payload block i  -> BAT index i + floor(i / chunkRatio)
 *   bitmap of chunk c -> BAT index c * (chunkRatio + 1) + chunkRatio
 * Entry count: non-differencing = dataBlocks + floor((dataBlocks - 1) / chunkRatio)
 *              differencing     = ceil(dataBlocks / chunkRatio) * (chunkRatio + 1)
 */
export class BatLayout {
  readonly chunkRatio: number;
  readonly dataBlocks: number;
  readonly bitmapBlocks: number;
  readonly totalEntries: number;
  readonly sectorsPerBlock: number;

  constructor(readonly size: number, readonly blockSize: number, readonly logicalSectorSize: number, readonly differencing: boolean) {
    this.chunkRatio = (SECTORS_PER_BITMAP_BLOCK * logicalSectorSize) / blockSize;
    this.dataBlocks = Math.ceil(size / blockSize);
    this.bitmapBlocks = Math.ceil(this.dataBlocks / this.chunkRatio);
    this.sectorsPerBlock = blockSize / logicalSectorSize;
    this.totalEntries = differencing
      ? this.bitmapBlocks * (this.chunkRatio + 1)
      : this.dataBlocks + Math.floor((this.dataBlocks - 1) / this.chunkRatio);
  }

  payloadIndex(block: number): number {
    return block + Math.floor(block / this.chunkRatio);
  }

  bitmapIndex(chunk: number): number {
    return chunk * (this.chunkRatio + 1) + this.chunkRatio;
  }

  /** Is BAT index `i` a sector bitmap entry? */
  isBitmapIndex(i: number): boolean {
    return i % (this.chunkRatio + 1) === this.chunkRatio;
  }

  /** The payload block number for a payload BAT index. */
  blockOfIndex(i: number): number {
    return i - Math.floor(i / (this.chunkRatio + 1));
  }
}
