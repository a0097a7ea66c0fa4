/**
 * A raw disk image: a regular file whose bytes are the device's bytes.
 *
 * How this works: all I/O goes through one fs/promises FileHandle (no sync calls); data reads and writes
 * use positional reads/writes on its descriptor through fs's callback API (cheaper per call, see readAll). Storage-level operations use the native addon on the same descriptor: zero/trim punch
 * holes or zero ranges with fallocate, extents walk SEEK_DATA/SEEK_HOLE. A Gate keeps the descriptor
 * open until every call using it has settled. Without the addon (non-Linux, not built) the device still
 * works with capabilities trim/fastZero/extents off: zero writes zeros and extents reports one data run.
 *
 * Opening never modifies the file, not even its timestamps: change tracking fingerprints raw disks by
 * stat (mtime/ctime), so an open that touched them would look like an outside write. Hole punching is
 * therefore not probed at open; it is assumed (trim/fastZero on when writable with the addon) and
 * decided by the first real punch: ENOTSUP/EOPNOTSUPP turns trim/fastZero off for the rest of the
 * session (that call falls back as documented on `zero`), success confirms it.
 */
import { writevAll } from '../util/writevAll.js';
import { constants, read as fsRead, write as fsWrite } from 'node:fs';
import { open, rm, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { BlockDevice, Capabilities, Extent, WriteIdentity, WriteOptions, ZeroOptions } from './BlockDevice.js';
import { checkRange, checkTarget } from './checkRange.js';
import { AlreadyExistsError, TruncatedFileError } from './errors.js';
import { Gate } from './Gate.js';
import { pushExtent } from './mergeExtents.js';
import { NotFoundError, NotSupportedError, ReadOnlyError, UsageError, withContext } from '../errors.js';
import { alignGap, isNotSupported, nativeAvailable, punchHole, seekData, seekHole, zeroRange } from '../native/native.js';

export interface RawOpenOptions {
  /** Open without write access; writes reject with ReadOnlyError and the file is never modified. */
  readOnly?: boolean;
  /** 512 (default) or 4096. Only advisory for a raw file: any byte range works. */
  logicalSectorSize?: number;
  /**
   * Write 4 KiB-aligned buffers at 4 KiB-aligned offsets with O_DIRECT, bypassing the page cache (a
   * restore streams GiBs to storage instead of filling the cache and flushing it at the end: on the
   * reference machine 3x faster and a tenth of the CPU). Other writes, and filesystems or buffers
   * O_DIRECT refuses (tmpfs; EINVAL), use the normal path, so results are identical. Reads and
   * `flush` are unchanged (fdatasync covers the direct writes' metadata and the device cache).
   */
  directWrites?: boolean;
}

/** O_DIRECT alignment used for offsets, lengths and buffer addresses (covers 512 and 4096-byte devices). */
const DIRECT_ALIGN = 4096;

/** Largest single read/write handed to the kernel (Linux caps one syscall near 2 GiB). */
const IO_CHUNK = 1 << 30;
const ZEROS = Buffer.alloc(1 << 20);

export class RawFileDevice implements BlockDevice {
  readonly physicalSectorSize = 4096;
  private readonly gate: Gate;
  private closing: Promise<void> | undefined;

  private constructor(
    /** The image file path (for messages). */
    readonly path: string,
    private readonly handle: FileHandle,
    private currentSize: number,
    readonly logicalSectorSize: number,
    private readonly caps: Capabilities,
    /** The native addon loaded (fallocate/lseek extras usable). */
    private readonly native: boolean,
  ) {
    this.gate = new Gate(`raw image ${path}`);
    this.capsView = Object.freeze({ ...caps });
  }

  /**
   * What the device can do. `trim`/`fastZero` start as "assumed" when writable with the addon, and turn
   * false for good once the filesystem refuses a hole punch (ENOTSUP/EOPNOTSUPP); they never turn on later.
   */
  get capabilities(): Capabilities {
    return this.capsView;
  }

  /** A frozen copy of `caps`, replaced when a capability turns off (hot paths read it per call). */
  private capsView: Capabilities;

  /**
   * Open an existing raw image. Rejects NotFoundError when the file does not exist, UsageError when it
   * is not a regular file or the sector size is not 512/4096, and Node's errno errors (EACCES, EROFS)
   * with the path in the message.
   */
  static async open(path: string, opts: RawOpenOptions = {}): Promise<RawFileDevice> {
    const sector = checkSectorSize(opts.logicalSectorSize);
    const handle = await withContext(`open ${path}`, open(path, opts.readOnly ? 'r' : 'r+')).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') throw new NotFoundError(path, 'check the path');
      if (err.code === 'EISDIR') throw new UsageError(`${path} is a directory, not a raw disk image`);
      throw err;
    });
    try {
      const dev = await RawFileDevice.fromHandle(path, handle, sector, !!opts.readOnly);
      if (opts.directWrites && !opts.readOnly) await dev.openDirect();
      return dev;
    } catch (err) {
      await handle.close();
      throw err;
    }
  }

  /**
   * Create a new sparse raw image of `size` bytes (no data allocated). Fails with AlreadyExistsError
   * when `path` exists; the file and its directory entry are synced before this resolves.
   */
  static async create(path: string, size: number, opts: Omit<RawOpenOptions, 'readOnly'> = {}): Promise<RawFileDevice> {
    if (!Number.isSafeInteger(size) || size < 0) throw new UsageError(`invalid size ${size} for ${path}: use a whole number of bytes`);
    const sector = checkSectorSize(opts.logicalSectorSize);
    const handle = await withContext(`create ${path}`, open(path, 'wx+', 0o644)).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'EEXIST') throw new AlreadyExistsError(path);
      if (err.code === 'ENOENT') throw new NotFoundError(dirname(path), 'the directory for the new image does not exist');
      throw err;
    });
    try {
      await withContext(`create ${path}: set size ${size}`, handle.truncate(size));
      await handle.sync();
      await syncDir(dirname(path));
      const dev = await RawFileDevice.fromHandle(path, handle, sector, false);
      if (opts.directWrites) await dev.openDirect();
      return dev;
    } catch (err) {
      await handle.close();
      await rm(path, { force: true });
      throw err;
    }
  }

  private static async fromHandle(path: string, handle: FileHandle, sector: number, readOnly: boolean): Promise<RawFileDevice> {
    const st = await handle.stat();
    if (!st.isFile()) throw new UsageError(`${path} is not a regular file; raw devices are image files`);
    const native = nativeAvailable();
    // No hole-punch probe here: even a punch past EOF updates mtime/ctime (see the note at the top).
    const punch = native && !readOnly;
    const seek = native && (await probe(() => seekData(handle.fd, 0)));
    return new RawFileDevice(path, handle, st.size, sector, { readOnly, trim: punch, fastZero: punch, fua: false, extents: seek }, native);
  }

  /** Current size in bytes (changes only through `resize`). */
  get size(): number {
    return this.currentSize;
  }

  async read(offset: number, length: number): Promise<Buffer> {
    return this.gate.run(async () => {
      checkRange(offset, length, this.currentSize);
      const buf = Buffer.allocUnsafe(length); // every byte is overwritten by readAll (or it throws)
      await this.readAll(buf, 0, offset, length);
      return buf;
    });
  }

  /** `read` into the caller's buffer: one positional read (per GiB) straight into `target`. */
  async readInto(target: Uint8Array, targetOffset: number, offset: number, length: number): Promise<void> {
    return this.gate.run(async () => {
      checkRange(offset, length, this.currentSize);
      checkTarget(target, targetOffset, length);
      await this.readAll(target, targetOffset, offset, length);
    });
  }

  async write(offset: number, data: Uint8Array, opts?: WriteOptions): Promise<void> {
    return this.gate.run(async () => {
      this.checkWritable(offset, data.length);
      await this.writeData(offset, [data], data.length);
      if (opts?.fua) await this.handle.datasync();
    });
  }

  async writev(offset: number, buffers: readonly Uint8Array[]): Promise<void> {
    let total = 0;
    for (const b of buffers) total += b.length;
    return this.gate.run(async () => {
      this.checkWritable(offset, total);
      await this.writeData(offset, buffers, total);
    });
  }

  /**
   * Zero a range. Without `noHole`: punch a hole, else fallocate ZERO_RANGE, else write zeros.
   * With `noHole`: ZERO_RANGE (storage stays allocated), else write zeros; never deallocates.
   * With `fast`: NotSupportedError instead of writing zeros (the range is then unchanged), and always
   * when `capabilities.fastZero` is false.
   */
  async zero(offset: number, length: number, opts: ZeroOptions = {}): Promise<void> {
    return this.gate.run(async () => {
      this.checkWritable(offset, length);
      if (opts.fast && !this.caps.fastZero) throw new NotSupportedError(`fast zeroing on ${this.path} (the filesystem cannot punch holes)`);
      if (length === 0) return;
      const done = (!opts.noHole && this.caps.trim && (await this.tryPunch(offset, length))) || (this.native && (await this.tryNative(zeroRange, offset, length)));
      if (!done) {
        if (opts.fast) throw new NotSupportedError(`fast zeroing${opts.noHole ? ' without deallocating' : ''} on ${this.path} (filesystem cannot)`);
        for (let pos = offset; pos < offset + length; pos += ZEROS.length) {
          await this.writeAll(pos, ZEROS.subarray(0, Math.min(ZEROS.length, offset + length - pos)));
        }
      }
      if (opts.fua) await this.handle.datasync();
    });
  }

  /** Deallocate a range (punch hole); where the filesystem can't, zero it. Reads as zeros afterwards. */
  async trim(offset: number, length: number, opts: WriteOptions = {}): Promise<void> {
    return this.zero(offset, length, { fua: opts.fua });
  }

  /** fdatasync the file. */
  async flush(): Promise<void> {
    return this.gate.run(() => this.handle.datasync());
  }

  /**
   * Allocation of [offset, offset+length) from SEEK_DATA/SEEK_HOLE: 'data' and 'hole' runs (never
   * 'zero'; unwritten extents left by ZERO_RANGE may show as holes). One 'data' run when the addon or
   * the filesystem can't tell.
   */
  async extents(offset: number, length: number): Promise<Extent[]> {
    return this.gate.run(async () => {
      checkRange(offset, length, this.currentSize);
      const out: Extent[] = [];
      const end = offset + length;
      if (!this.caps.extents) {
        pushExtent(out, { offset, length, type: 'data' });
        return out;
      }
      let pos = offset;
      while (pos < end) {
        const data = await seekData(this.handle.fd, pos);
        if (data < 0 || data >= end) {
          pushExtent(out, { offset: pos, length: end - pos, type: 'hole' });
          break;
        }
        pushExtent(out, { offset: pos, length: data - pos, type: 'hole' });
        const stop = Math.min(await seekHole(this.handle.fd, data), end);
        pushExtent(out, { offset: data, length: stop - data, type: 'data' });
        pos = stop;
      }
      return out;
    });
  }

  /** Flush (when writable) and close the file. Idempotent; waits for in-flight calls first. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      await this.gate.close();
      try {
        if (!this.caps.readOnly) await this.handle.datasync();
      } finally {
        for (const d of [this.direct, ...this.retiredDirect]) await d?.close().catch(() => undefined);
        this.direct = null;
        await this.handle.close();
      }
    })();
    return this.closing;
  }

  /**
   * A stat fingerprint `raw:<dev>:<ino>:<size>:<mtimeNs>`. A raw file has no write GUID, so `next`
   * equals `current`. Our own writes change mtime too: a tracker must re-record the identity after
   * writing through this device (and before trusting it again on the next open).
   */
  async identity(): Promise<WriteIdentity> {
    return this.gate.run(async () => {
      const st = await this.handle.stat({ bigint: true });
      const id = `raw:${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}`;
      return { current: id, next: id };
    });
  }

  /**
   * Grow (sparsely) or shrink the image to `newSize` bytes. The caller must not have I/O in flight
   * beyond the new size.
   */
  async resize(newSize: number): Promise<void> {
    return this.gate.run(async () => {
      if (this.caps.readOnly) throw new ReadOnlyError(`raw image ${this.path}`);
      if (!Number.isSafeInteger(newSize) || newSize < 0) throw new UsageError(`invalid size ${newSize} for ${this.path}: use a whole number of bytes`);
      await withContext(`resize ${this.path}`, this.handle.truncate(newSize));
      this.currentSize = newSize;
    });
  }

  /** Bytes of storage the file occupies (st_blocks * 512). */
  async allocatedBytes(): Promise<number> {
    return this.gate.run(async () => (await this.handle.stat()).blocks * 512);
  }

  private checkWritable(offset: number, length: number): void {
    if (this.caps.readOnly) throw new ReadOnlyError(`raw image ${this.path}`);
    checkRange(offset, length, this.currentSize);
  }

  /**
   * Fill target[at, at+length) from the file at `offset`; TruncatedFileError if the file ends first.
   * Hot path (every NBD READ): positional reads on the handle's descriptor through the callback API, one
   * promise per call, instead of FileHandle.read's promise, result object and wrappers per syscall
   * (measured: a sizeable part of the server's per-request CPU). The Gate keeps the descriptor open.
   */
  private readAll(target: Uint8Array, at: number, offset: number, length: number): Promise<void> {
    const fd = this.handle.fd;
    return new Promise((resolve, reject) => {
      let done = 0;
      const step = (): void => {
        if (done >= length) return resolve();
        fsRead(fd, target, at + done, Math.min(length - done, IO_CHUNK), offset + done, (err, bytesRead) => {
          if (err) return reject(err);
          if (bytesRead === 0) return reject(new TruncatedFileError(this.path, offset + done, this.currentSize));
          done += bytesRead;
          step();
        });
      };
      step();
    });
  }

  /** Write all of `data` at `offset` (the same descriptor-level fast path as readAll). */
  private writeAll(offset: number, data: Uint8Array): Promise<void> {
    const fd = this.handle.fd;
    return new Promise((resolve, reject) => {
      let done = 0;
      const step = (): void => {
        if (done >= data.length) return resolve();
        fsWrite(fd, data, done, Math.min(data.length - done, IO_CHUNK), offset + done, (err, bytesWritten) => {
          if (err) return reject(err);
          done += bytesWritten;
          step();
        });
      };
      step();
    });
  }

  /** A second descriptor opened O_DIRECT for aligned writes; none when the filesystem refuses it. */
  private direct: FileHandle | null = null;
  private retiredDirect: FileHandle[] = [];

  private async openDirect(): Promise<void> {
    if (!constants.O_DIRECT || !this.native) return; // the addon tells buffer addresses (alignGap)
    this.direct = await open(this.path, constants.O_WRONLY | constants.O_DIRECT).catch(() => null);
  }

  /** Write data through the direct descriptor when aligned (and still accepted), else the normal one. */
  private async writeData(offset: number, buffers: readonly Uint8Array[], total: number): Promise<void> {
    const direct = this.direct;
    if (direct && offset % DIRECT_ALIGN === 0 && buffers.every((b) => b.length % DIRECT_ALIGN === 0 && alignGap(b, DIRECT_ALIGN) === 0)) {
      try {
        return await this.writevAll(direct.fd, offset, buffers, total);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EINVAL') throw err;
        // This memory or filesystem does not take O_DIRECT: stop trying, redo the write normally.
        if (this.direct === direct) {
          this.direct = null;
          this.retiredDirect.push(direct);
        }
      }
    }
    return buffers.length === 1 ? this.writeAll(offset, buffers[0]) : this.writevAll(this.handle.fd, offset, buffers, total);
  }

  /** Write all of `buffers` from `offset` with pwritev on `fd`; a short write continues where it stopped. */
  private writevAll(fd: number, offset: number, buffers: readonly Uint8Array[], total: number): Promise<void> {
    return writevAll(fd, offset, buffers, total, this.path);
  }

  /** Punch a hole; the first refusal (not supported) turns trim/fastZero off for this session. */
  private async tryPunch(offset: number, length: number): Promise<boolean> {
    const ok = await this.tryNative(punchHole, offset, length);
    if (!ok) {
      this.caps.trim = false;
      this.caps.fastZero = false;
      this.capsView = Object.freeze({ ...this.caps });
    }
    return ok;
  }

  /** Run a native range op; false when the filesystem doesn't support it (other errors propagate). */
  private async tryNative(op: (fd: number, offset: number, length: number) => Promise<void>, offset: number, length: number): Promise<boolean> {
    try {
      await op(this.handle.fd, offset, length);
      return true;
    } catch (err) {
      if (isNotSupported(err)) return false;
      throw err;
    }
  }
}

function checkSectorSize(value: number | undefined): number {
  const sector = value ?? 512;
  if (sector !== 512 && sector !== 4096) throw new UsageError(`logical sector size must be 512 or 4096, got ${value}`);
  return sector;
}

/** True when `op` succeeds, false when it fails (used only for capability probes). */
async function probe(op: () => Promise<unknown>): Promise<boolean> {
  try {
    await op();
    return true;
  } catch {
    return false;
  }
}

async function syncDir(dir: string): Promise<void> {
  const h = await open(dir, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    await h.sync();
  } finally {
    await h.close();
  }
}
