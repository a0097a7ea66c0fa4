import type { BlockDevice, Capabilities, Extent, WriteOptions, ZeroOptions } from './BlockDevice.js';
import { checkRange, checkTarget } from './checkRange.js';
import { pushExtent } from './mergeExtents.js';
import { ClosedError, ReadOnlyError } from '../errors.js';

const PAGE = 64 * 1024;

/**
 * A sparse in-memory device: pages of 64 KiB allocated on first write. First-class for tests and
 * for layers that need scratch space. Any size up to 2^53 works as long as little is written.
 */
export class MemoryDevice implements BlockDevice {
  readonly capabilities: Capabilities;
  private pages = new Map<number, Buffer>();
  private closed = false;

  constructor(
    readonly size: number,
    readonly logicalSectorSize = 512,
    readonly physicalSectorSize = 4096,
    opts: { readOnly?: boolean } = {},
  ) {
    this.capabilities = { readOnly: !!opts.readOnly, trim: true, fastZero: true, fua: true, extents: true };
  }

  /** Number of bytes of storage in use. */
  get allocatedBytes(): number {
    return this.pages.size * PAGE;
  }

  async read(offset: number, length: number): Promise<Buffer> {
    this.check(offset, length, false);
    const out = Buffer.allocUnsafe(length);
    this.copyOut(out, 0, offset, length);
    return out;
  }

  async readInto(target: Uint8Array, targetOffset: number, offset: number, length: number): Promise<void> {
    this.check(offset, length, false);
    checkTarget(target, targetOffset, length);
    this.copyOut(target, targetOffset, offset, length);
  }

  /** Copy [offset, +length) into target[at...]: page bytes where written, zeros elsewhere. */
  private copyOut(target: Uint8Array, at: number, offset: number, length: number): void {
    let pos = offset;
    while (pos < offset + length) {
      const idx = Math.floor(pos / PAGE);
      const inPage = pos - idx * PAGE;
      const n = Math.min(PAGE - inPage, offset + length - pos);
      const page = this.pages.get(idx);
      const to = at + (pos - offset);
      if (page) target.set(page.subarray(inPage, inPage + n), to);
      else target.fill(0, to, to + n);
      pos += n;
    }
  }

  async write(offset: number, data: Uint8Array, _opts?: WriteOptions): Promise<void> {
    this.check(offset, data.length, true);
    let pos = offset;
    const src = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    while (pos < offset + data.length) {
      const idx = Math.floor(pos / PAGE);
      const inPage = pos - idx * PAGE;
      const n = Math.min(PAGE - inPage, offset + data.length - pos);
      let page = this.pages.get(idx);
      if (!page) {
        page = Buffer.alloc(Math.min(PAGE, this.size - idx * PAGE));
        this.pages.set(idx, page);
      }
      src.copy(page, inPage, pos - offset, pos - offset + n);
      pos += n;
    }
  }

  async zero(offset: number, length: number, opts?: ZeroOptions): Promise<void> {
    this.check(offset, length, true);
    let pos = offset;
    while (pos < offset + length) {
      const idx = Math.floor(pos / PAGE);
      const inPage = pos - idx * PAGE;
      const n = Math.min(PAGE - inPage, offset + length - pos);
      const page = this.pages.get(idx);
      if (page) {
        if (n === page.length && !opts?.noHole) this.pages.delete(idx);
        else page.fill(0, inPage, inPage + n);
      } else if (opts?.noHole) {
        this.pages.set(idx, Buffer.alloc(Math.min(PAGE, this.size - idx * PAGE)));
      }
      pos += n;
    }
  }

  async trim(offset: number, length: number): Promise<void> {
    await this.zero(offset, length);
  }

  async flush(): Promise<void> {
    this.check(0, 0, false);
  }

  async extents(offset: number, length: number): Promise<Extent[]> {
    this.check(offset, length, false);
    const out: Extent[] = [];
    let pos = offset;
    while (pos < offset + length) {
      const idx = Math.floor(pos / PAGE);
      const n = Math.min((idx + 1) * PAGE, offset + length) - pos;
      pushExtent(out, { offset: pos, length: n, type: this.pages.has(idx) ? 'data' : 'hole' });
      pos += n;
    }
    return out;
  }

  async close(): Promise<void> {
    this.closed = true;
  }

  private check(offset: number, length: number, writing: boolean): void {
    if (this.closed) throw new ClosedError('memory device');
    if (writing && this.capabilities.readOnly) throw new ReadOnlyError('memory device');
    checkRange(offset, length, this.size);
  }
}
