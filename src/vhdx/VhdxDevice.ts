/**
 * VHDX as a BlockDevice: fixed, dynamic and differencing disks, read/write.
 *
 * How this works:
 * - Open: file identifier -> headers (current slot = valid one with the higher sequence number) -> log
 *   (replayed when read-write; a dirty log makes a read-only open fail) -> region table -> metadata -> BAT.
 *   The whole BAT is cached in memory; sector bitmaps (differencing disks) are cached per chunk on first use.
 * - First modification of an open: one header update sets a new FileWriteGuid and the DataWriteGuid this
 *   open announced as `identity().next`; it is durable before any other byte changes. The session's LogGuid
 *   is published by a second header update once its first log entry is durable (see VhdxLog.ts).
 * - Writes: payload bytes go straight to their block. A block that is not allocated gets new space at the
 *   end of the file (1 MiB aligned; space is never reused and the file only grows by ftruncate, so new
 *   space always reads as zeros; the file grows in 16 MiB steps and close() trims the excess). BAT and
 *   sector bitmap changes stay in memory, marked dirty, and are committed through the log on flush/close
 *   (or when many are pending): fdatasync (data) -> log entry -> fdatasync -> apply. So data is durable
 *   before any on-disk BAT entry points at it, and every metadata update is atomic.
 * - Reads are lock-free; every mutation (write/zero/trim/flush/close) runs under one FIFO mutex.
 */
import { link, mkdir, open as fsOpen, stat, unlink, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join, relative, resolve } from 'node:path';
import { randomBytes } from 'node:crypto';
import type { BlockDevice, Capabilities, Extent, WriteIdentity, WriteOptions, ZeroOptions } from '../blockdev/BlockDevice.js';
import { checkRange, checkTarget } from '../blockdev/checkRange.js';
import { pushExtent } from '../blockdev/mergeExtents.js';
import { ClosedError, NotFoundError, NotSupportedError, ReadOnlyError, UsageError } from '../errors.js';
import { CorruptError, VhdxDirtyLogError, VhdxParentMismatchError, VhdxParentMissingError, VhdxUnsupportedError } from './errors.js';
import { BAT_ENTRY_SIZE, batEntryFromBuffer, batEntryToBuffer, type BatEntry } from './format/BatEntry.js';
import {
  BITMAP_BLOCK_SIZE, BLOCK_SIZE_MAX, BLOCK_SIZE_MIN, DEFAULT_BLOCK_SIZE, HEADER_OFFSETS, LOG_SECTOR_SIZE, MAX_DISK_SIZE, MiB,
  PAYLOAD_FULLY_PRESENT, PAYLOAD_NOT_PRESENT, PAYLOAD_PARTIALLY_PRESENT, PAYLOAD_UNMAPPED, PAYLOAD_ZERO, SB_PRESENT,
} from './format/constants.js';
import { ZERO_GUID, guidEq, newGuid } from './format/guid.js';
import { headerToBuffer, type VhdxHeader } from './format/Header.js';
import { isVhdxSignature } from './format/FileIdentifier.js';
import { buildVhdxLayout } from './buildVhdxLayout.js';
import { Mutex } from './Mutex.js';
import { KEY_LINKAGE, KEY_LINKAGE2, KEY_LINUX, KEY_RELATIVE, findParent } from './resolveParent.js';
import { applyLogEntries, findActiveLog, LogWriter } from './VhdxLog.js';
import { readHeaders, readStructure, type Reader, type VhdxStructure } from './VhdxStructure.js';

export interface VhdxCreateOptions {
  size: number;
  type?: 'dynamic' | 'fixed';
  blockSize?: number;
  logicalSectorSize?: 512 | 4096;
  physicalSectorSize?: 512 | 4096;
  /** Parent path: makes a differencing disk; size/sector sizes come from the parent. */
  parent?: string;
}

export interface VhdxInfo {
  type: 'fixed' | 'dynamic' | 'differencing';
  size: number;
  blockSize: number;
  logicalSectorSize: number;
  physicalSectorSize: number;
  diskId: string;
  dataWriteGuid: string;
  fileWriteGuid: string;
  allocatedBytes: number;
  fileSize: number;
  logDirty: boolean;
  parent?: { linkage: string; relativePath?: string; absolutePath?: string; resolvedPath: string };
}

export interface VhdxOpenOptions {
  readOnly?: boolean;
}

/** Internal open options (merge opens a child whose parent was already partly rewritten). */
export interface VhdxInternalOpenOptions extends VhdxOpenOptions {
  /** Do not open the parent; reads of parent-backed sectors fail. */
  skipParent?: boolean;
  /** Resolved paths already in the chain (cycle detection). */
  seen?: Set<string>;
}

/** "vhdxfile" signature at offset 0. */
export function isVhdx(head: Buffer): boolean {
  return isVhdxSignature(head);
}

const roundUp = (n: number, m: number): number => Math.ceil(n / m) * m;
/** Commit pending metadata when this many 4 KiB sectors are dirty, even without a flush. */
const COMMIT_THRESHOLD = 192;
const ZERO_CHUNK = Buffer.alloc(MiB);
/** The file grows in steps of this many bytes; space past the allocation end is never written. */
const GROW_STEP = 16 * MiB;

export class VhdxDevice implements BlockDevice {
  readonly capabilities: Capabilities;
  private closed = false;
  private readonly mutex = new Mutex();
  private touched = false;
  /** The session's DataWriteGuid has been written to the header (before the first data change). */
  private dataAnnounced = false;
  private needSync = false;
  private readonly dirtyBat = new Set<number>();
  private readonly bitmaps = new Map<number, Buffer>();
  /** Dirty bitmap sectors: file offset -> [chunk, byte offset in the bitmap block]. */
  private readonly dirtyBitmap = new Map<number, [number, number]>();
  private log?: LogWriter;
  private readonly sessionFileWriteGuid = newGuid();
  private readonly sessionLogGuid = newGuid();
  private readonly nextDataWriteGuid = newGuid();

  private constructor(
    readonly path: string,
    private readonly fh: FileHandle,
    private readonly readOnly: boolean,
    private header: VhdxHeader,
    private headerSlot: 0 | 1,
    private st: VhdxStructure,
    private fileEnd: number,
    private fileSize: number,
    private readonly parent: VhdxDevice | undefined,
    private readonly parentResolved: string | undefined,
    private readonly logWasDirty: boolean,
  ) {
    const fixed = st.params.leaveBlocksAllocated;
    this.capabilities = { readOnly, trim: !fixed, fastZero: !fixed, fua: true, extents: true };
  }

  get size(): number {
    return this.st.size;
  }
  get logicalSectorSize(): number {
    return this.st.logicalSectorSize;
  }
  get physicalSectorSize(): number {
    return this.st.physicalSectorSize;
  }
  private get blockSize(): number {
    return this.st.params.blockSize;
  }
  private get differencing(): boolean {
    return this.st.params.hasParent;
  }
  private get fixed(): boolean {
    return this.st.params.leaveBlocksAllocated;
  }

  // ---------------------------------------------------------------- create / open

  /** Create a new VHDX at `path` (fails if it exists) and open it read-write. */
  static async create(path: string, opts: VhdxCreateOptions): Promise<VhdxDevice> {
    const type = opts.type ?? 'dynamic';
    let blockSize = opts.blockSize ?? DEFAULT_BLOCK_SIZE;
    let size = opts.size;
    let lss = opts.logicalSectorSize ?? 512;
    let pss = opts.physicalSectorSize ?? 4096;
    let parentEntries: Map<string, string> | undefined;
    let diskId = newGuid();
    if (opts.parent !== undefined) {
      if (type === 'fixed') throw new UsageError('a differencing disk cannot be fixed');
      const parent = await VhdxDevice.open(opts.parent, { readOnly: true }).catch((e: unknown) => {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new NotFoundError(`parent disk ${opts.parent}`);
        throw e;
      });
      try {
        const pi = parent.info();
        size = pi.size;
        lss = pi.logicalSectorSize as 512 | 4096;
        pss = pi.physicalSectorSize as 512 | 4096;
        blockSize = opts.blockSize ?? pi.blockSize;
        // Forking copies the virtual-disk metadata (size, sector sizes, disk id) from the parent.
        diskId = pi.diskId;
        const abs = resolve(opts.parent);
        let rel = relative(dirname(resolve(path)), abs);
        if (!rel.startsWith('..')) rel = `./${rel}`;
        parentEntries = new Map([
          [KEY_LINKAGE, `{${pi.dataWriteGuid.toLowerCase()}}`],
          [KEY_RELATIVE, rel.replace(/\//g, '\\')],
          [KEY_LINUX, abs],
        ]);
      } finally {
        await parent.close();
      }
    }
    if (!Number.isSafeInteger(size) || size <= 0 || size > MAX_DISK_SIZE) throw new UsageError(`VHDX size ${size} must be between 1 byte and 64 TiB`);
    if (lss !== 512 && lss !== 4096) throw new UsageError(`logical sector size ${lss} must be 512 or 4096`);
    if (pss !== 512 && pss !== 4096) throw new UsageError(`physical sector size ${pss} must be 512 or 4096`);
    if (size % lss !== 0) throw new UsageError(`VHDX size ${size} is not a multiple of the logical sector size ${lss}`);
    if (!Number.isInteger(blockSize) || blockSize < BLOCK_SIZE_MIN || blockSize > BLOCK_SIZE_MAX || (blockSize & (blockSize - 1)) !== 0) {
      throw new UsageError(`block size ${blockSize} must be a power of two between 1 MiB and 256 MiB`);
    }
    const built = buildVhdxLayout({
      size, blockSize, logicalSectorSize: lss, physicalSectorSize: pss, fixed: type === 'fixed', diskId,
      fileWriteGuid: newGuid(), dataWriteGuid: newGuid(), parentEntries,
    });
    // Write a temporary file, make it durable, then link it into place (fails if `path` exists).
    const tmp = join(dirname(path), `.${basename(path)}.${randomBytes(6).toString('hex')}.tmp`);
    const fh = await fsOpen(tmp, 'wx').catch((e: unknown) => {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new NotFoundError(`directory ${dirname(path)}`);
      throw e;
    });
    try {
      for (const [off, buf] of built.writes) await fh.write(buf, 0, buf.length, off);
      await fh.truncate(built.fileSize);
      await fh.sync();
    } finally {
      await fh.close();
    }
    try {
      await link(tmp, path);
    } catch (e) {
      await unlink(tmp).catch(() => undefined);
      if ((e as NodeJS.ErrnoException).code === 'EEXIST') throw new UsageError(`${path} already exists`);
      throw e;
    }
    await unlink(tmp);
    await syncDir(dirname(path));
    return VhdxDevice.open(path);
  }

  /** Open a VHDX (and, read-only, every parent in its chain). Replays a dirty log when read-write. */
  static async open(path: string, opts: VhdxOpenOptions = {}): Promise<VhdxDevice> {
    return VhdxDevice.openInternal(path, opts);
  }

  /** @internal */
  static async openInternal(path: string, opts: VhdxInternalOpenOptions = {}): Promise<VhdxDevice> {
    const readOnly = !!opts.readOnly;
    const name = path;
    const fh = await fsOpen(path, readOnly ? 'r' : 'r+').catch((e: unknown) => {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new NotFoundError(`VHDX ${path}`);
      throw e;
    });
    let parent: VhdxDevice | undefined;
    try {
      let fileSize = (await fh.stat()).size;
      const read: Reader = (off, len) => preadFull(fh, off, len);
      let { header, slot } = await readHeaders(read, name);
      const entries = await findActiveLog(read, header, name, fileSize);
      const logWasDirty = entries.length > 0;
      if (!guidEq(header.logGuid, ZERO_GUID) && !readOnly) {
        // Replay (if anything is there) and mark the log empty: FileWriteGuid changes, DataWriteGuid does not
        // (the replay completes changes the crashed session already announced).
        if (logWasDirty) fileSize = await applyLogEntries(fh, entries, fileSize);
        const fwg = newGuid();
        for (let k = 0; k < 2; k++) {
          // Both slots, so that neither can fall back to a header naming the replayed log.
          const h: VhdxHeader = { ...header, sequenceNumber: header.sequenceNumber + 1n, logGuid: ZERO_GUID, fileWriteGuid: fwg };
          const s = (1 - slot) as 0 | 1;
          await fh.write(headerToBuffer(h), 0, 4096, HEADER_OFFSETS[s]);
          await fh.datasync();
          header = h;
          slot = s;
        }
      } else if (logWasDirty) {
        throw new VhdxDirtyLogError(name);
      }
      const st = await readStructure(read, name, fileSize, header);
      let fileEnd = roundUp(fileSize, MiB);
      for (let i = 0; i < st.layout.totalEntries; i++) {
        const e = batEntryFromBuffer(st.bat, i * BAT_ENTRY_SIZE);
        const sb = st.layout.isBitmapIndex(i);
        const allocated = sb ? e.state === SB_PRESENT : e.state === PAYLOAD_FULLY_PRESENT || e.state === PAYLOAD_PARTIALLY_PRESENT;
        if (allocated) fileEnd = Math.max(fileEnd, e.fileOffset + (sb ? BITMAP_BLOCK_SIZE : st.params.blockSize));
      }
      for (const r of [st.batRegion, st.metadataRegion]) fileEnd = Math.max(fileEnd, r.fileOffset + r.length);
      let parentResolved: string | undefined;
      if (st.params.hasParent && !opts.skipParent) {
        const loc = st.parentLocator!;
        const { found, tried } = await findParent(resolve(path), loc);
        if (!found) throw new VhdxParentMissingError(name, tried);
        const seen = new Set(opts.seen ?? []);
        seen.add(resolve(path));
        if (seen.has(found)) throw new CorruptError(name, 'parent locator', `the parent chain loops back to ${found}`);
        parent = await VhdxDevice.openInternal(found, { readOnly: true, seen });
        const actual = parent.header.dataWriteGuid;
        const links = [loc.entries.get(KEY_LINKAGE), loc.entries.get(KEY_LINKAGE2)].filter((x): x is string => !!x);
        if (!links.some((l) => guidEq(l, actual))) {
          const pending = await stat(`${path}.merge.json`).then(() => true, () => false);
          throw new VhdxParentMismatchError(name, found, (links[0] ?? '').replace(/[{}]/g, '').toLowerCase(), actual, pending);
        }
        if (parent.size !== st.size) throw new CorruptError(name, 'parent locator', `parent ${found} is ${parent.size} bytes but this disk is ${st.size}`);
        if (parent.logicalSectorSize !== st.logicalSectorSize) throw new CorruptError(name, 'parent locator', `parent ${found} has ${parent.logicalSectorSize}-byte sectors, this disk ${st.logicalSectorSize}`);
        parentResolved = found;
      }
      return new VhdxDevice(resolve(path), fh, readOnly, header, slot, st, fileEnd, fileSize, parent, parentResolved, logWasDirty && readOnly);
    } catch (e) {
      await parent?.close().catch(() => undefined);
      await fh.close().catch(() => undefined);
      throw e;
    }
  }

  // ---------------------------------------------------------------- info

  info(): VhdxInfo {
    let allocated = 0;
    const L = this.st.layout;
    for (let i = 0; i < L.totalEntries; i++) {
      const e = this.entryAt(i);
      if (L.isBitmapIndex(i)) continue;
      if (e.state === PAYLOAD_FULLY_PRESENT || e.state === PAYLOAD_PARTIALLY_PRESENT) allocated += this.blockSize;
    }
    const loc = this.st.parentLocator;
    return {
      type: this.differencing ? 'differencing' : this.fixed ? 'fixed' : 'dynamic',
      size: this.size,
      blockSize: this.blockSize,
      logicalSectorSize: this.logicalSectorSize,
      physicalSectorSize: this.physicalSectorSize,
      diskId: this.st.diskId,
      dataWriteGuid: this.header.dataWriteGuid,
      fileWriteGuid: this.header.fileWriteGuid,
      allocatedBytes: allocated,
      fileSize: this.fileEnd,
      logDirty: this.logWasDirty,
      parent: loc
        ? {
            linkage: (loc.entries.get(KEY_LINKAGE) ?? '').replace(/[{}]/g, '').toLowerCase(),
            relativePath: loc.entries.get(KEY_RELATIVE),
            absolutePath: loc.entries.get(KEY_LINUX),
            resolvedPath: this.parentResolved ?? '',
          }
        : undefined,
    };
  }

  /** Resolved paths: [this, parent, grandparent, ...]. */
  parentChain(): string[] {
    return [this.path, ...(this.parent ? this.parent.parentChain() : [])];
  }

  async identity(): Promise<WriteIdentity> {
    this.assertOpen();
    return { current: this.header.dataWriteGuid, next: this.readOnly ? this.header.dataWriteGuid : this.nextDataWriteGuid };
  }

  // ---------------------------------------------------------------- BlockDevice

  async read(offset: number, length: number): Promise<Buffer> {
    this.assertOpen();
    checkRange(offset, length, this.size);
    const out = Buffer.allocUnsafe(length); // fillFrom writes every byte, zeros included
    await this.fillFrom(out, 0, offset, length);
    return out;
  }

  async write(offset: number, data: Uint8Array, opts?: WriteOptions): Promise<void> {
    this.assertWritable();
    checkRange(offset, data.length, this.size);
    const buf = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    await this.mutex.run(async () => {
      this.assertWritable();
      if (buf.length === 0) return;
      await this.beginWrite();
      await this.writeLocked(offset, buf);
      await this.afterMutation(opts?.fua);
    });
  }

  async zero(offset: number, length: number, opts: ZeroOptions = {}): Promise<void> {
    this.assertWritable();
    checkRange(offset, length, this.size);
    if (opts.fast && (this.fixed || opts.noHole)) throw new NotSupportedError(`fast zero on ${this.fixed ? 'a fixed VHDX' : 'VHDX with noHole'}`);
    await this.mutex.run(async () => {
      this.assertWritable();
      if (length === 0) return;
      await this.beginWrite();
      await this.zeroLocked(offset, length, !!opts.noHole, false);
      await this.afterMutation(opts.fua);
    });
  }

  async trim(offset: number, length: number, opts?: WriteOptions): Promise<void> {
    this.assertWritable();
    checkRange(offset, length, this.size);
    await this.mutex.run(async () => {
      this.assertWritable();
      if (length === 0) return;
      await this.beginWrite();
      await this.zeroLocked(offset, length, false, true);
      await this.afterMutation(opts?.fua);
    });
  }

  async flush(): Promise<void> {
    this.assertOpen();
    if (this.readOnly) return;
    await this.mutex.run(() => this.flushLocked());
  }

  async extents(offset: number, length: number): Promise<Extent[]> {
    this.assertOpen();
    checkRange(offset, length, this.size);
    const out: Extent[] = [];
    const bs = this.blockSize;
    let pos = offset;
    const end = offset + length;
    while (pos < end) {
      const b = Math.floor(pos / bs);
      const n = Math.min((b + 1) * bs, end) - pos;
      const e = this.payloadEntry(b);
      if (e.state === PAYLOAD_FULLY_PRESENT) pushExtent(out, { offset: pos, length: n, type: 'data' });
      else if (e.state === PAYLOAD_PARTIALLY_PRESENT) {
        for (const [runPos, runLen, present] of await this.sectorRuns(b, pos, n)) {
          if (present) pushExtent(out, { offset: runPos, length: runLen, type: 'data' });
          else for (const x of await this.parentExtents(runPos, runLen)) pushExtent(out, x);
        }
      } else if (e.state === PAYLOAD_NOT_PRESENT) {
        // One parent query for the whole run of not-present blocks.
        let runEnd = pos + n;
        while (runEnd < end && this.payloadEntry(Math.floor(runEnd / bs)).state === PAYLOAD_NOT_PRESENT) runEnd = Math.min(runEnd + bs, end);
        for (const x of await this.parentExtents(pos, runEnd - pos)) pushExtent(out, x);
        pos = runEnd;
        continue;
      } else if (e.state === PAYLOAD_ZERO) pushExtent(out, { offset: pos, length: n, type: 'zero' });
      else pushExtent(out, { offset: pos, length: n, type: 'hole' });
      pos += n;
    }
    return out;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    await this.mutex.run(async () => {
      if (this.closed) return;
      try {
        if (!this.readOnly && this.touched) {
          await this.flushLocked();
          if (this.fileSize > this.fileEnd) {
            await this.fh.truncate(this.fileEnd);
            this.fileSize = this.fileEnd;
          }
          await this.fh.datasync();
          if (!guidEq(this.header.logGuid, ZERO_GUID)) await this.writeHeader({ logGuid: ZERO_GUID }, true);
        }
      } finally {
        this.closed = true;
        await this.fh.close();
        await this.parent?.close();
      }
    });
  }

  // ---------------------------------------------------------------- internals: read

  /**
   * BlockDevice.readInto: fill target[targetOffset, +length) with [offset, +length) of the virtual disk,
   * zeros included (whatever the target held before).
   */
  async readInto(target: Uint8Array, targetOffset: number, offset: number, length: number): Promise<void> {
    this.assertOpen();
    checkRange(offset, length, this.size);
    checkTarget(target, targetOffset, length);
    await this.fillFrom(target, targetOffset, offset, length);
  }

  /** readInto without the checks: writes every byte of out[outOff, +length). */
  private async fillFrom(out: Uint8Array, outOff: number, offset: number, length: number): Promise<void> {
    const bs = this.blockSize;
    let pos = offset;
    const end = offset + length;
    while (pos < end) {
      const b = Math.floor(pos / bs);
      const inBlock = pos - b * bs;
      const n = Math.min(bs - inBlock, end - pos);
      const e = this.payloadEntry(b);
      const at = outOff + (pos - offset);
      if (e.state === PAYLOAD_FULLY_PRESENT) {
        await preadInto(this.fh, out, at, n, e.fileOffset + inBlock);
      } else if (e.state === PAYLOAD_PARTIALLY_PRESENT) {
        for (const [runPos, runLen, present] of await this.sectorRuns(b, pos, n)) {
          const o = outOff + (runPos - offset);
          if (present) await preadInto(this.fh, out, o, runLen, e.fileOffset + (runPos - b * bs));
          else await this.parentRead(out, o, runPos, runLen);
        }
      } else if (e.state === PAYLOAD_NOT_PRESENT) {
        await this.parentRead(out, at, pos, n);
      } else {
        out.fill(0, at, at + n); // ZERO, UNMAPPED, UNDEFINED
      }
      pos += n;
    }
  }

  /** Sectors not present here: the parent's bytes (differencing), else zeros. */
  private async parentRead(out: Uint8Array, at: number, pos: number, n: number): Promise<void> {
    if (!this.differencing) {
      out.fill(0, at, at + n);
      return;
    }
    if (!this.parent) throw new VhdxUnsupportedError(this.path, 'reading parent-backed sectors without the parent open');
    await this.parent.fillFrom(out, at, pos, n);
  }

  private async parentExtents(pos: number, n: number): Promise<Extent[]> {
    if (!this.differencing) return [{ offset: pos, length: n, type: 'hole' }];
    if (!this.parent) throw new VhdxUnsupportedError(this.path, 'reading parent-backed sectors without the parent open');
    return this.parent.extents(pos, n);
  }

  /** Runs of sectors within block b over [pos, pos+n): [start, length, presentInThisFile]. */
  private async sectorRuns(b: number, pos: number, n: number): Promise<Array<[number, number, boolean]>> {
    const lss = this.logicalSectorSize;
    const L = this.st.layout;
    const chunk = Math.floor(b / L.chunkRatio);
    const bitmap = await this.getBitmap(chunk);
    const base = (b % L.chunkRatio) * L.sectorsPerBlock;
    const blockStart = b * this.blockSize;
    const runs: Array<[number, number, boolean]> = [];
    const end = pos + n;
    let p = pos;
    while (p < end) {
      const s = Math.floor((p - blockStart) / lss);
      const idx = base + s;
      const present = bitmap ? ((bitmap[idx >> 3]! >> (idx & 7)) & 1) === 1 : false;
      const next = Math.min(blockStart + (s + 1) * lss, end);
      const last = runs[runs.length - 1];
      if (last && last[2] === present) last[1] += next - p;
      else runs.push([p, next - p, present]);
      p = next;
    }
    return runs;
  }

  private async getBitmap(chunk: number): Promise<Buffer | undefined> {
    const cached = this.bitmaps.get(chunk);
    if (cached) return cached;
    const e = this.entryAt(this.st.layout.bitmapIndex(chunk));
    if (e.state !== SB_PRESENT) return undefined;
    const buf = await preadFull(this.fh, e.fileOffset, BITMAP_BLOCK_SIZE);
    // Another reader may have raced us; keep the first copy (it may hold dirty bits).
    const again = this.bitmaps.get(chunk);
    if (again) return again;
    this.bitmaps.set(chunk, buf);
    return buf;
  }

  // ---------------------------------------------------------------- internals: write

  private async writeLocked(offset: number, data: Buffer): Promise<void> {
    const bs = this.blockSize;
    let pos = offset;
    const end = offset + data.length;
    while (pos < end) {
      const b = Math.floor(pos / bs);
      const inBlock = pos - b * bs;
      const n = Math.min(bs - inBlock, end - pos);
      await this.writePiece(b, inBlock, data.subarray(pos - offset, pos - offset + n));
      pos += n;
    }
  }

  private async writePiece(b: number, inBlock: number, data: Buffer): Promise<void> {
    const e = this.payloadEntry(b);
    const blockLen = Math.min(this.blockSize, this.size - b * this.blockSize);
    this.needSync = true;
    if (e.state === PAYLOAD_FULLY_PRESENT) {
      await pwriteAll(this.fh, data, e.fileOffset + inBlock);
    } else if (e.state === PAYLOAD_PARTIALLY_PRESENT) {
      await this.writeSectors(b, e.fileOffset, inBlock, data);
    } else if (e.state === PAYLOAD_NOT_PRESENT && this.differencing && !(inBlock === 0 && data.length === blockLen)) {
      const off = await this.allocate(this.blockSize);
      await this.ensureBitmap(Math.floor(b / this.st.layout.chunkRatio));
      this.setPayload(b, { state: PAYLOAD_PARTIALLY_PRESENT, fileOffset: off });
      await this.writeSectors(b, off, inBlock, data);
    } else {
      // Not allocated (or a differencing block that is wholly overwritten / hides its parent): new zeroed space.
      const off = await this.allocate(this.blockSize);
      await pwriteAll(this.fh, data, off + inBlock);
      this.setPayload(b, { state: PAYLOAD_FULLY_PRESENT, fileOffset: off });
    }
  }

  /** Differencing partial write: whole sectors (edges read through the chain), then mark them present. */
  private async writeSectors(b: number, blockOff: number, inBlock: number, data: Buffer): Promise<void> {
    const lss = this.logicalSectorSize;
    const a0 = Math.floor(inBlock / lss) * lss;
    const a1 = Math.ceil((inBlock + data.length) / lss) * lss;
    let buf = data;
    if (a0 !== inBlock || a1 !== inBlock + data.length) {
      buf = Buffer.allocUnsafe(a1 - a0);
      await this.fillFrom(buf, 0, b * this.blockSize + a0, a1 - a0);
      data.copy(buf, inBlock - a0);
    }
    await pwriteAll(this.fh, buf, blockOff + a0);
    const L = this.st.layout;
    const chunk = Math.floor(b / L.chunkRatio);
    const bitmap = (await this.getBitmap(chunk))!;
    const sbOff = this.entryAt(L.bitmapIndex(chunk)).fileOffset;
    const i0 = (b % L.chunkRatio) * L.sectorsPerBlock + a0 / lss;
    const i1 = i0 + (a1 - a0) / lss;
    for (let i = i0; i < i1; i++) bitmap[i >> 3]! |= 1 << (i & 7);
    for (let k = Math.floor((i0 >> 3) / LOG_SECTOR_SIZE); k <= Math.floor(((i1 - 1) >> 3) / LOG_SECTOR_SIZE); k++) {
      this.dirtyBitmap.set(sbOff + k * LOG_SECTOR_SIZE, [chunk, k * LOG_SECTOR_SIZE]);
    }
  }

  private async ensureBitmap(chunk: number): Promise<void> {
    const idx = this.st.layout.bitmapIndex(chunk);
    if (this.entryAt(idx).state === SB_PRESENT) return;
    const off = await this.allocate(BITMAP_BLOCK_SIZE);
    this.bitmaps.set(chunk, Buffer.alloc(BITMAP_BLOCK_SIZE));
    this.setEntryAt(idx, { state: SB_PRESENT, fileOffset: off });
  }

  private async zeroLocked(offset: number, length: number, noHole: boolean, trim: boolean): Promise<void> {
    const bs = this.blockSize;
    let pos = offset;
    const end = offset + length;
    while (pos < end) {
      const b = Math.floor(pos / bs);
      const inBlock = pos - b * bs;
      const blockLen = Math.min(bs, this.size - b * bs);
      const n = Math.min(blockLen - inBlock, end - pos);
      const e = this.payloadEntry(b);
      const whole = inBlock === 0 && n === blockLen;
      const allocated = e.state === PAYLOAD_FULLY_PRESENT || e.state === PAYLOAD_PARTIALLY_PRESENT;
      if (noHole || (this.fixed && allocated)) {
        await this.writeZeros(b, inBlock, n);
      } else if (this.fixed) {
        // A fixed disk's block that is not allocated (qemu-img marks them ZERO) already reads as zeros.
      } else if (whole) {
        const state = trim && !this.differencing ? PAYLOAD_UNMAPPED : PAYLOAD_ZERO;
        if (e.state !== state || e.fileOffset !== 0) this.setPayload(b, { state, fileOffset: 0 });
      } else if (allocated || (e.state === PAYLOAD_NOT_PRESENT && this.differencing)) {
        await this.writeZeros(b, inBlock, n);
      }
      pos += n;
    }
  }

  private async writeZeros(b: number, inBlock: number, n: number): Promise<void> {
    for (let o = 0; o < n; o += ZERO_CHUNK.length) {
      await this.writePiece(b, inBlock + o, ZERO_CHUNK.subarray(0, Math.min(ZERO_CHUNK.length, n - o)));
    }
  }

  private async afterMutation(fua?: boolean): Promise<void> {
    if (fua) await this.flushLocked();
    else if (this.dirtyBat.size + this.dirtyBitmap.size >= COMMIT_THRESHOLD) await this.commitLocked();
  }

  private async flushLocked(): Promise<void> {
    if (this.closed) return;
    if (this.dirtyBat.size + this.dirtyBitmap.size > 0) await this.commitLocked();
    else if (this.needSync) await this.fh.datasync();
    this.needSync = false;
  }

  /** Commit dirty BAT and bitmap sectors through the log (LogWriter fdatasyncs data first). */
  private async commitLocked(): Promise<void> {
    const writes = new Map<number, Buffer>();
    for (const k of this.dirtyBat) {
      writes.set(this.st.batRegion.fileOffset + k * LOG_SECTOR_SIZE, Buffer.from(this.st.bat.subarray(k * LOG_SECTOR_SIZE, (k + 1) * LOG_SECTOR_SIZE)));
    }
    for (const [off, [chunk, at]] of this.dirtyBitmap) {
      writes.set(off, Buffer.from(this.bitmaps.get(chunk)!.subarray(at, at + LOG_SECTOR_SIZE)));
    }
    if (writes.size === 0) return;
    await this.commitWrites(writes);
    this.dirtyBat.clear();
    this.dirtyBitmap.clear();
    this.needSync = false;
  }

  /** @internal Log and apply arbitrary 4 KiB-aligned metadata sectors (resize uses it). */
  async commitWrites(writes: Map<number, Buffer>): Promise<void> {
    if (!this.log) this.log = new LogWriter(this.fh, this.header.logOffset, this.header.logLength, this.sessionLogGuid);
    const publish = guidEq(this.header.logGuid, this.sessionLogGuid) ? undefined : () => this.writeHeader({ logGuid: this.sessionLogGuid });
    // FlushedFileOffset: a size the file is durably at least as large as, now and after close() trims it.
    const flushed = Math.floor(Math.min(this.fileSize, this.fileEnd) / MiB) * MiB;
    await this.log.commit(writes, flushed, this.fileEnd, publish);
  }

  /**
   * First modification of this open: new FileWriteGuid and the announced DataWriteGuid. With `data` false
   * (a metadata-only change such as relinkVhdx's parent locator) the DataWriteGuid stays: the content a
   * reader sees, and so every child's parent_linkage, is unchanged. A later data write still announces it.
   */
  private async beginWrite(data = true): Promise<void> {
    if (this.touched && (this.dataAnnounced || !data)) return;
    if (this.header.logLength < 2 * LOG_SECTOR_SIZE) throw new VhdxUnsupportedError(this.path, 'writing to a VHDX without a log');
    await this.writeHeader({ fileWriteGuid: this.sessionFileWriteGuid, ...(data ? { dataWriteGuid: this.nextDataWriteGuid } : {}) });
    this.touched = true;
    if (data) this.dataAnnounced = true;
  }

  /**
   * Write `change` as a new header into the inactive slot (sequence + 1) and fdatasync. With `both`, write it
   * again into the other slot (sequence + 2), so that a later bad slot falls back to this same state.
   */
  private async writeHeader(change: Partial<VhdxHeader>, both = false): Promise<void> {
    for (let k = 0; k < (both ? 2 : 1); k++) {
      const h: VhdxHeader = { ...this.header, ...change, sequenceNumber: this.header.sequenceNumber + 1n };
      const slot = (1 - this.headerSlot) as 0 | 1;
      await this.fh.write(headerToBuffer(h), 0, 4096, HEADER_OFFSETS[slot]);
      await this.fh.datasync();
      this.header = h;
      this.headerSlot = slot;
    }
  }

  /** New space at the end of the file (1 MiB aligned, zero-filled). */
  private async allocate(len: number): Promise<number> {
    const off = this.fileEnd;
    this.fileEnd = off + roundUp(len, MiB);
    if (this.fileEnd > this.fileSize) {
      // Grow the file in steps (one ftruncate per block is slow); close() trims it back to fileEnd.
      const size = roundUp(this.fileEnd, GROW_STEP);
      await this.fh.truncate(size);
      this.fileSize = size;
    }
    return off;
  }

  // ---------------------------------------------------------------- BAT access

  private entryAt(i: number): BatEntry {
    return batEntryFromBuffer(this.st.bat, i * BAT_ENTRY_SIZE);
  }

  private setEntryAt(i: number, e: BatEntry): void {
    batEntryToBuffer(e, this.st.bat, i * BAT_ENTRY_SIZE);
    this.dirtyBat.add(Math.floor((i * BAT_ENTRY_SIZE) / LOG_SECTOR_SIZE));
  }

  private payloadEntry(b: number): BatEntry {
    return this.entryAt(this.st.layout.payloadIndex(b));
  }

  private setPayload(b: number, e: BatEntry): void {
    this.setEntryAt(this.st.layout.payloadIndex(b), e);
  }

  /** @internal For merge/resize: the structure, the open parent, and helpers. */
  get internals(): { st: VhdxStructure; fh: FileHandle; parent?: VhdxDevice; header: VhdxHeader } {
    return { st: this.st, fh: this.fh, parent: this.parent, header: this.header };
  }

  /** @internal Payload block state and file offset. */
  blockEntry(b: number): BatEntry {
    return this.payloadEntry(b);
  }

  /** @internal Runs of present sectors of a partially present block over [pos, +n). */
  presentRuns(b: number, pos: number, n: number): Promise<Array<[number, number, boolean]>> {
    return this.sectorRuns(b, pos, n);
  }

  /**
   * @internal Run `fn` under the mutation lock after the first-write header update (resize). With
   * `metadataOnly` the DataWriteGuid is kept (relinkVhdx: only the parent locator changes).
   */
  async mutate<T>(fn: () => Promise<T>, opts: { metadataOnly?: boolean } = {}): Promise<T> {
    this.assertWritable();
    return this.mutex.run(async () => {
      await this.beginWrite(!opts.metadataOnly);
      await this.flushLocked();
      return fn();
    });
  }

  /** @internal Replace the structure after a resize committed through the log. */
  replaceStructure(st: VhdxStructure, fileEnd: number): void {
    this.st = st;
    this.fileEnd = Math.max(this.fileEnd, fileEnd);
    this.bitmaps.clear();
  }

  /** @internal Reserve space at the end of the file (resize). */
  allocateSpace(len: number): Promise<number> {
    return this.allocate(len);
  }

  private assertOpen(): void {
    if (this.closed) throw new ClosedError(`VHDX ${this.path}`);
  }

  private assertWritable(): void {
    this.assertOpen();
    if (this.readOnly) throw new ReadOnlyError(`VHDX ${this.path}`);
  }
}

/** Read exactly `len` bytes at `off` (zeros past end of file). */
export async function preadFull(fh: FileHandle, off: number, len: number): Promise<Buffer> {
  const b = Buffer.allocUnsafe(len); // preadInto writes every byte
  await preadInto(fh, b, 0, len, off);
  return b;
}

/** Fill buf[at, +len) from the file at `off`; bytes past the end of the file are zeros. */
async function preadInto(fh: FileHandle, buf: Uint8Array, at: number, len: number, off: number): Promise<void> {
  let done = 0;
  while (done < len) {
    const { bytesRead } = await fh.read(buf, at + done, len - done, off + done);
    if (bytesRead === 0) {
      buf.fill(0, at + done, at + len);
      return;
    }
    done += bytesRead;
  }
}

async function pwriteAll(fh: FileHandle, buf: Buffer, off: number): Promise<void> {
  let done = 0;
  while (done < buf.length) {
    const { bytesWritten } = await fh.write(buf, done, buf.length - done, off + done);
    done += bytesWritten;
  }
}

/** fsync a directory so a rename/link/unlink in it is durable. */
export async function syncDir(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true });
  const d = await fsOpen(dir, 'r');
  try {
    await d.sync();
  } finally {
    await d.close();
  }
}
