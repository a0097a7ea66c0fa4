import { randomBytes } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import type { BlockDevice } from '../blockdev/BlockDevice.js';
import { ClosedError, CorruptError } from '../errors.js';
import { atomicWriteFile } from '../util/atomicWriteFile.js';
import { DEFAULT_BLOCK_SIZE, DEFAULT_PERSIST_INTERVAL_MS, FLUSH_PERSIST_MIN_MS, LEASE_MARGIN_MS, LEASE_MS, effectiveRegionSize } from './constants.js';
import { TrackingNotEnabledError } from './errors.js';
import { fileFingerprint, parseFingerprint } from './fileFingerprint.js';
import { GenerationStore } from './GenerationStore.js';
import { MrtFile } from './MrtFile.js';
import type { MrtSlot } from './mrtCodec.js';
import type { Range } from './Range.js';
import { decodeRct, encodeRct, type IdentityKind, type RctFileState } from './rctCodec.js';
import { SparseBitmap } from './SparseBitmap.js';

/** `<disk>.rct`, `<disk>.mrt`. */
export const rctPathOf = (diskPath: string) => `${diskPath}.rct`;
export const mrtPathOf = (diskPath: string) => `${diskPath}.mrt`;

/** How the last open found the tracking state. */
export type OpenVerdict =
  | 'clean' /** last close was clean: answers are exact */
  | 'recovered' /** after a crash: persisted bits plus every region the .mrt marks */
  | 'bound' /** first open after enable */
  | 'restarted'; /** tracking was invalid and restarted: older IDs fail with TrackingInvalidError */

export interface RctStatus {
  enabled: boolean;
  diskPath: string;
  /** Present when enabled. */
  blockSize?: number;
  regionSize?: number;
  diskSize?: number;
  /** The generation now accumulating changes. */
  generation?: number;
  liveIds?: Array<{ id: string; generation: number; createdAt: string }>;
  /** Whether the .rct was last written by a clean close (false: a session is running or crashed). */
  lastCloseClean?: boolean;
  /** How this open found the state (absent when only the files were read). */
  verdict?: OpenVerdict;
  /** Why tracking last restarted, if it did. */
  invalidation?: { reason: string; at: string; previousTracker: string | null } | null;
  /** Bytes of bitmap memory held for live IDs. */
  memoryBytes?: number;
}

export interface TrackerOptions {
  /** Period of the background .rct persist (default 10 s; 0 disables it). */
  persistIntervalMs?: number;
  /** Clock, for tests. */
  now?: () => number;
  /**
   * The disk file's `fileFingerprint()` taken before the device was opened. Opening a raw file for
   * writing may touch its timestamps (RawFileDevice probes hole punching), which would look like an
   * outside write; openTrackedDisk passes this. Without it the fingerprint is taken at tracker open.
   */
  fingerprintBeforeOpen?: string | null;
}

/** What opening is for: `write` starts an epoch (the disk will be written); `meta` never writes the disk. */
export type TrackerMode = 'write' | 'meta';

interface Loaded {
  store: GenerationStore;
  file: RctFileState | null;
  verdict: OpenVerdict;
  regionSize: number;
  configuredRegionSize?: number;
  reason?: string;
}

/**
 * The change-tracking state of one disk path: loads and verifies `<disk>.rct`/`<disk>.mrt`, recovers
 * after crashes, restarts tracking when it cannot vouch for it, and persists.
 *
 * Write ordering it keeps (docs/design.md (rct section)): on open, recovered .rct durable → .mrt reset; on a write,
 * bits set in memory → region marked durable in the .mrt → data write; on seal, .rct durable → ID
 * returned; on clean close, data flushed → .rct (clean) durable → .mrt reset.
 */
export class ChangeTracker {
  readonly rctPath: string;
  readonly mrtPath: string;
  private mrt: MrtFile | null = null;
  private identityKind: IdentityKind = 'none';
  private identities: string[] = [];
  private persistSeq: number;
  private createdAt: number;
  private durableLease = 0;
  private lastPersistAt = 0;
  /** Per region: writes in flight (their regions seed every .mrt rollover). */
  private inflightRegions = new Uint32Array(0);
  private dirty = false;
  private needsMrtReset: boolean;
  private timer: NodeJS.Timeout | null = null;
  private persistQueued: Promise<void> | null = null;
  private persistRunning: Promise<void> | null = null;
  private closed = false;
  /** Last background persist failure (reported in status, retried at the next persist). */
  lastPersistError: Error | null = null;

  private constructor(
    readonly diskPath: string,
    readonly mode: TrackerMode,
    /** Replaced only when tracking restarts during an operation (`beginOperation` of a shrink). */
    public store: GenerationStore,
    /** Changes only when an operation changes the disk size (`endOperation`). */
    public regionSize: number,
    readonly verdict: OpenVerdict,
    private readonly lastCloseClean: boolean,
    private readonly opts: TrackerOptions,
    file: RctFileState | null,
  ) {
    this.rctPath = rctPathOf(diskPath);
    this.mrtPath = mrtPathOf(diskPath);
    this.persistSeq = file?.persistSeq ?? 0;
    this.createdAt = file && verdict !== 'restarted' ? file.createdAt : this.now();
    this.needsMrtReset = verdict !== 'clean';
  }

  /**
   * Open the tracking state for `device` (the disk at `diskPath`). Never throws for invalid tracking:
   * it restarts (verdict 'restarted') and older IDs then fail with TrackingInvalidError. Throws
   * TrackingNotEnabledError when neither tracking file exists. In `write` mode the recovered state is
   * persisted and a new epoch begins before this resolves; in `meta` mode nothing is written until a
   * seal or drop (the disk itself is never written in `meta` mode).
   */
  static async open(diskPath: string, device: BlockDevice, mode: TrackerMode, opts: TrackerOptions = {}): Promise<ChangeTracker> {
    const now = opts.now ?? Date.now;
    const l = await load(diskPath, device, now, opts.fingerprintBeforeOpen);
    const t = new ChangeTracker(diskPath, mode, l.store, l.regionSize, l.verdict, l.file?.clean ?? false, opts, l.file);
    t.configuredRegionSize = l.configuredRegionSize ?? 0;
    if (mode === 'write') await t.beginEpoch(device);
    else {
      const o = await observeCleanIdentity(device, diskPath, l.file?.identityKind === 'device');
      t.identityKind = o.kind;
      t.identities = o.identities;
    }
    return t;
  }

  private now(): number {
    return (this.opts.now ?? Date.now)();
  }

  private async beginEpoch(device: BlockDevice): Promise<void> {
    // Record both the identity now and the one our first write will produce, before any write.
    if (device.identity) {
      const id = await device.identity();
      if (id.current !== id.next) {
        this.identityKind = 'device';
        this.identities = [id.current, id.next];
      }
    }
    if (this.identityKind === 'none') {
      const fp = await fileFingerprint(this.diskPath);
      if (fp) {
        this.identityKind = 'file';
        this.identities = [fp];
      } else if (device.identity) {
        const id = await device.identity();
        this.identityKind = 'device';
        this.identities = [id.current, id.next];
      }
    }
    await this.persistNow(false);
    this.mrt = await MrtFile.create(this.mrtPath, this.store.tracker, this.regionSize, Math.max(1, Math.ceil(this.store.diskSize / this.regionSize)), this.persistSeq * 2);
    this.needsMrtReset = false;
    this.inflightRegions = new Uint32Array(this.mrt.regionCount);
    const every = this.opts.persistIntervalMs ?? DEFAULT_PERSIST_INTERVAL_MS;
    if (every > 0) {
      this.timer = setInterval(() => {
        if (this.dirty) this.persist().catch(() => undefined);
      }, every);
      this.timer.unref();
    }
  }

  /** Record that [offset, offset+length) may change in the current generation. Synchronous. */
  record(offset: number, length: number): void {
    this.store.record(offset, length);
    this.dirty = true;
  }

  /** The generation now accumulating writes. */
  get generation(): number {
    return this.store.generation;
  }

  /**
   * Start a write to [offset, offset+length): records its bits and counts it in flight (one synchronous
   * step), and returns what the data write must wait for: the .mrt marks of its regions and, for raw
   * disks, a live lease — null in the common case (no allocation on that path). Read `generation`
   * just before, and always call `endWrite` with it afterwards.
   */
  beginWrite(offset: number, length: number): Promise<void> | null {
    const mrt = this.mrt;
    if (!mrt) throw new ClosedError(`change tracker of ${this.diskPath} (not open for writing)`);
    this.record(offset, length);
    const rs = this.regionSize;
    const first = Math.floor(offset / rs);
    const end = Math.min(Math.ceil((offset + Math.max(length, 1)) / rs), mrt.regionCount);
    for (let r = first; r < end; r++) this.inflightRegions[r]!++;
    const m = mrt.ensureMarked(first, end);
    if (this.identityKind === 'file' && this.now() > this.durableLease - LEASE_MARGIN_MS) {
      return Promise.all([m, this.persist()]).then(() => undefined);
    }
    return m;
  }

  /** The write finished or failed. If a seal ran meanwhile (generation changed), the write may have landed on either side: record it again. */
  endWrite(offset: number, length: number, generationBefore: number): void {
    const rs = this.regionSize;
    const first = Math.floor(offset / rs);
    const end = Math.min(Math.ceil((offset + Math.max(length, 1)) / rs), this.inflightRegions.length);
    for (let r = first; r < end; r++) this.inflightRegions[r]!--;
    if (this.store.generation !== generationBefore) this.record(offset, length);
  }

  /** Seal the current generation; resolves with the new ID once it is durable. */
  async seal(): Promise<string> {
    if (this.closed) throw new ClosedError(`change tracker of ${this.diskPath}`);
    const id = this.store.seal(randomBytes(8).toString('hex'), this.now());
    this.dirty = true;
    try {
      await this.persist();
    } catch (err) {
      this.store.drop(id); // never issued: fold its span back into the previous ID
      throw err;
    }
    return id;
  }

  /** Forget an ID (its span merges into the previous ID's); durable when this resolves. */
  async drop(id: string): Promise<void> {
    if (this.closed) throw new ClosedError(`change tracker of ${this.diskPath}`);
    this.store.drop(id);
    this.dirty = true;
    await this.persist();
  }

  changes(since: string, until?: string): Range[] {
    return this.store.changes(since, until);
  }

  changedIn(since: string, offset: number, length: number, until?: string): Range[] {
    return this.store.changedIn(since, offset, length, until);
  }

  status(): RctStatus {
    const inv = this.store.invalidation;
    return {
      enabled: true,
      diskPath: this.diskPath,
      blockSize: this.store.blockSize,
      regionSize: this.regionSize,
      diskSize: this.store.diskSize,
      generation: this.store.generation,
      liveIds: this.store.ids.map((x) => ({ id: this.store.idString(x), generation: x.gen, createdAt: new Date(x.createdAt).toISOString() })),
      lastCloseClean: this.lastCloseClean,
      verdict: this.verdict,
      invalidation: inv ? { reason: inv.reason, at: new Date(inv.at).toISOString(), previousTracker: inv.previousTracker } : null,
      memoryBytes: this.store.memoryBytes,
    };
  }

  /**
   * Persist the fine bits if they changed (called at flush), at most once per FLUSH_PERSIST_MIN_MS:
   * guests flush often and a persist rewrites the whole .rct. Correctness never depends on it (the .mrt
   * covers unpersisted bits); it only keeps crash answers fine-grained.
   */
  async flush(): Promise<void> {
    if (this.dirty && this.now() - this.lastPersistAt >= FLUSH_PERSIST_MIN_MS) await this.persist();
  }

  /**
   * Clean close. `identityAfter` is what the disk's identity is once all writes are flushed (device
   * identity before the device closes, or null for a file fingerprint taken now, after it closed).
   */
  async closeClean(identityAfter: string | null): Promise<void> {
    if (this.closed) return;
    this.stopTimer();
    // Let a persist already queued or running finish first: persists never overlap (one temp file).
    await this.persistQueued?.catch(() => undefined);
    await this.persistRunning?.catch(() => undefined);
    if (this.identityKind === 'device' && identityAfter !== null) this.identities = [identityAfter];
    else if (this.identityKind === 'file') {
      const fp = await fileFingerprint(this.diskPath);
      this.identities = fp ? [fp] : [];
    }
    await this.persistNow(true);
    if (this.mrt) await this.mrt.close();
    this.mrt = await MrtFile.create(this.mrtPath, this.store.tracker, this.regionSize, Math.max(1, Math.ceil(this.store.diskSize / this.regionSize)), this.persistSeq * 2);
    await this.mrt.close();
    this.mrt = null;
    this.closed = true;
  }

  /** Drop the in-memory state without persisting: what a crash leaves behind. For tests and fatal paths. */
  async abandon(): Promise<void> {
    this.stopTimer();
    this.closed = true;
    await this.persistRunning?.catch(() => undefined);
    if (this.mrt) await this.mrt.close();
    this.mrt = null;
  }

  private stopTimer(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  /** Single-flight persist: callers that arrive while one is queued share it; it encodes when it starts. */
  persist(): Promise<void> {
    if (this.persistQueued) return this.persistQueued;
    const before = this.persistRunning ?? Promise.resolve();
    const p: Promise<void> = before.catch(() => undefined).then(async () => {
      this.persistQueued = null;
      this.persistRunning = p;
      try {
        if (this.closed) return;
        await this.persistNow(false);
        this.lastPersistError = null;
      } catch (err) {
        this.lastPersistError = err as Error;
        throw err;
      } finally {
        if (this.persistRunning === p) this.persistRunning = null;
      }
    });
    this.persistQueued = p;
    return p;
  }

  /**
   * Meta mode: Tidemark itself is about to change the disk outside the tracking layer (resize, merge).
   * Durable before it resolves: the `ranges` are recorded as changed in the current generation and the
   * `.rct` is written *not clean*, with the identities a crash midway may leave behind — `file` kind: the
   * fingerprint now plus a write lease (the crash rule accepts ctime ≤ lease end); `device` kind: the
   * identity now plus `acceptTokens` (`journal:<path>`: any identity that JSON file's `accepted` array
   * lists, i.e. the VHDX merge journal). Size changes need no marks: `endOperation` (or, after a crash,
   * the next load) sees the new size — a grown area is recorded, a shrink restarts tracking.
   */
  async beginOperation(device: BlockDevice, kind: 'file' | 'device', plan: { ranges: Range[]; acceptTokens?: string[] }): Promise<void> {
    if (this.mode !== 'meta') throw new ClosedError(`change tracker of ${this.diskPath} (operations run on a meta tracker)`);
    if (this.closed) throw new ClosedError(`change tracker of ${this.diskPath}`);
    for (const r of plan.ranges) this.store.record(r.offset, r.length);
    if (kind === 'file') {
      const fp = await fileFingerprint(this.diskPath);
      this.identityKind = fp ? 'file' : 'none';
      this.identities = fp ? [fp] : [];
    } else {
      this.identityKind = 'device';
      this.identities = [(await device.identity!()).current, ...(plan.acceptTokens ?? [])];
    }
    await this.persistNow(false, true);
  }

  /**
   * Meta mode, after the operation (whether it succeeded or not): `device` is the disk reopened
   * read-only. A grown disk records its new area as changed (from the old last, possibly partial, block);
   * a shrunk one restarts tracking. Then the identity observed now is recorded as clean, so older IDs
   * stay valid, and the `.mrt` is recreated for the (new) geometry.
   */
  async endOperation(device: BlockDevice, kind: 'file' | 'device', what: string): Promise<{ grewFrom?: number }> {
    if (this.mode !== 'meta') throw new ClosedError(`change tracker of ${this.diskPath} (operations run on a meta tracker)`);
    const s = this.store;
    const out: { grewFrom?: number } = {};
    if (device.size < s.diskSize) this.restart(`the disk shrank from ${s.diskSize} to ${device.size} bytes (${what})`);
    else if (device.size > s.diskSize) {
      out.grewFrom = s.diskSize;
      const from = Math.floor(s.diskSize / s.blockSize) * s.blockSize;
      s.diskSize = device.size;
      s.record(from, device.size - from);
    }
    this.regionSize = effectiveRegionSize(this.configuredRegionSize, this.store.diskSize);
    if (kind === 'device' && device.identity) {
      this.identityKind = 'device';
      this.identities = [(await device.identity()).current];
    } else {
      const fp = await fileFingerprint(this.diskPath);
      this.identityKind = fp ? 'file' : 'none';
      this.identities = fp ? [fp] : [];
    }
    this.needsMrtReset = true;
    await this.persistNow(true, true);
    return out;
  }

  /** Restart tracking in memory (a shrink): new tracker, no live IDs, the reason kept for older IDs' errors. */
  private restart(reason: string): void {
    const old = this.store;
    this.store = new GenerationStore(this.diskPath, randomBytes(16).toString('hex'), old.blockSize, old.diskSize, old.generation + 1, [], {
      reason,
      at: this.now(),
      previousTracker: old.tracker,
    });
    this.createdAt = this.now();
    this.needsMrtReset = true;
  }

  /** `keepIdentity`: an operation set `identityKind`/`identities` itself (meta mode observes them otherwise). */
  private async persistNow(clean: boolean, keepIdentity = false): Promise<void> {
    if (this.mode === 'meta' && !keepIdentity) {
      clean = true;
    }
    const lease = clean ? 0 : this.now() + LEASE_MS;
    const s = this.store;
    this.persistSeq++;
    const state: RctFileState = {
      tracker: s.tracker,
      diskSize: s.diskSize,
      blockSize: s.blockSize,
      regionSize: this.configuredRegionSize,
      clean,
      unbound: false,
      generation: s.generation,
      persistSeq: this.persistSeq,
      leaseUntil: lease,
      createdAt: this.createdAt,
      identityKind: this.identityKind,
      identities: this.identities,
      invalidation: s.invalidation,
      ids: s.ids.map((x) => ({ gen: x.gen, nonce: x.nonce, createdAt: x.createdAt, pages: x.changes.pageEntries() })),
    };
    // Same synchronous section as the snapshot above: writes from here on are collected for the rollover.
    const rollover = !clean && this.mrt ? this.mrt : null;
    rollover?.startSnapshot(this.inflightRegions);
    const buf = encodeRct(state);
    this.dirty = false;
    try {
      await atomicWriteFile(this.rctPath, buf);
    } catch (err) {
      this.dirty = true;
      rollover?.cancelSnapshot();
      throw err;
    }
    this.durableLease = lease;
    if (rollover) await rollover.rollover();
    this.lastPersistAt = this.now();
    if (this.mode === 'meta' && this.needsMrtReset) {
      const m = await MrtFile.create(this.mrtPath, s.tracker, this.regionSize, Math.max(1, Math.ceil(s.diskSize / this.regionSize)), this.persistSeq * 2);
      await m.close();
      this.needsMrtReset = false;
    }
  }

  /** The region size as configured (0 = automatic), kept across restarts. */
  configuredRegionSize = 0;
}

/** Read `<disk>.rct`; null when missing. Throws CorruptError. */
export async function readRct(diskPath: string): Promise<RctFileState | null> {
  try {
    return decodeRct(await readFile(rctPathOf(diskPath)), rctPathOf(diskPath));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
}

async function readMrt(diskPath: string): Promise<MrtSlot | null> {
  try {
    return await MrtFile.read(mrtPathOf(diskPath));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code !== 'ENOENT';
  }
}

/** Load, verify and recover the tracking state of `diskPath` for `device`. Pure with respect to the files (reads only). */
async function load(diskPath: string, device: BlockDevice, now: () => number, fpBefore: string | null | undefined): Promise<Loaded> {
  let file: RctFileState | null = null;
  let reason: string | null = null;
  try {
    file = await readRct(diskPath);
    if (!file) {
      if (!(await exists(mrtPathOf(diskPath)))) throw new TrackingNotEnabledError(diskPath);
      reason = `the tracking file ${rctPathOf(diskPath)} is missing`;
    }
  } catch (err) {
    if (!(err instanceof CorruptError)) throw err;
    reason = `the tracking file is corrupt: ${err.message}`;
  }
  const regionSizeFor = (f: RctFileState | null, size: number) => effectiveRegionSize(f?.regionSize ?? 0, size);

  if (file && file.unbound) {
    const store = new GenerationStore(diskPath, file.tracker, file.blockSize, device.size, Math.max(1, file.generation), [], file.invalidation);
    const out: Loaded = { store, file, verdict: 'bound', regionSize: regionSizeFor(file, device.size) };
    return withConfigured(out, file);
  }

  let mrt: MrtSlot | null = null;
  if (file && !reason) {
    try {
      mrt = await readMrt(diskPath);
      if (!mrt) reason = `the region table ${mrtPathOf(diskPath)} is missing`;
    } catch (err) {
      if (!(err instanceof CorruptError)) throw err;
      reason = `the region table is corrupt: ${err.message}`;
    }
  }
  if (file && mrt && !reason) {
    const rs = regionSizeFor(file, file.diskSize);
    if (mrt.tracker !== file.tracker) reason = `the region table ${mrtPathOf(diskPath)} belongs to another tracking instance`;
    else if (mrt.regionSize !== rs || mrt.regionCount !== Math.max(1, Math.ceil(file.diskSize / rs))) reason = `the region table ${mrtPathOf(diskPath)} does not match the disk geometry`;
  }
  if (file && !reason) reason = await verifyIdentity(diskPath, file, device, fpBefore);
  if (file && !reason && device.size < file.diskSize) reason = `the disk shrank from ${file.diskSize} to ${device.size} bytes`;

  if (!file || reason) {
    const store = new GenerationStore(diskPath, randomBytes(16).toString('hex'), file?.blockSize ?? DEFAULT_BLOCK_SIZE, device.size, (file?.generation ?? 0) + 1, [], {
      reason: reason!,
      at: now(),
      previousTracker: file?.tracker ?? null,
    });
    return withConfigured({ store, file, verdict: 'restarted', reason: reason!, regionSize: regionSizeFor(file, device.size) }, file);
  }

  const ids = file.ids.map((x) => ({ gen: x.gen, nonce: x.nonce, createdAt: x.createdAt, changes: SparseBitmap.fromPages(x.pages) }));
  const store = new GenerationStore(diskPath, file.tracker, file.blockSize, file.diskSize, file.generation, ids, file.invalidation);
  if (!file.clean) {
    // Crash: every region the .mrt marks may hold writes the persisted bits missed.
    for (let r = 0; r < mrt!.regionCount; r++) if (mrt!.bits[r >> 3]! & (1 << (r & 7))) store.record(r * mrt!.regionSize, mrt!.regionSize);
  }
  if (device.size > file.diskSize) {
    // Grown: the new area is changed; record it with the new size (the partial last block included).
    const oldSize = file.diskSize;
    store.diskSize = device.size;
    store.record(Math.floor(oldSize / file.blockSize) * file.blockSize, device.size - Math.floor(oldSize / file.blockSize) * file.blockSize);
  }
  return withConfigured({ store, file, verdict: file.clean ? 'clean' : 'recovered', regionSize: regionSizeFor(file, device.size) }, file);
}

function withConfigured(l: Loaded, file: RctFileState | null): Loaded {
  l.configuredRegionSize = file?.regionSize ?? 0;
  return l;
}

/** The identity to record for a disk we are not writing: device content identity, else file stat. */
async function observeCleanIdentity(device: BlockDevice, diskPath: string, preferDevice: boolean): Promise<{ kind: IdentityKind; identities: string[] }> {
  if (device.identity) {
    const id = await device.identity();
    if (preferDevice || id.current !== id.next) return { kind: 'device', identities: [id.current] };
  }
  const fp = await fileFingerprint(diskPath);
  if (fp) return { kind: 'file', identities: [fp] };
  if (device.identity) return { kind: 'device', identities: [(await device.identity()).current] };
  return { kind: 'none', identities: [] };
}

/** Null when the disk is as we left it; otherwise why not. */
async function verifyIdentity(diskPath: string, file: RctFileState, device: BlockDevice, fpBefore: string | null | undefined): Promise<string | null> {
  const rec = file.identities;
  if (file.identityKind === 'none') return null;
  if (file.identityKind === 'device') {
    if (!device.identity) return 'the disk no longer reports a content identity';
    const cur = (await device.identity()).current;
    const ok = file.clean ? cur === rec[0] : rec.includes(cur) || (await acceptedByJournal(rec, cur));
    return ok ? null : `the disk was written outside Tidemark (its identity is ${cur}, expected ${file.clean ? rec[0] : rec.join(' or ')})`;
  }
  const fp = fpBefore !== undefined ? fpBefore : await fileFingerprint(diskPath);
  if (!fp) return `the disk file ${diskPath} is not a regular file any more`;
  if (file.clean) return fp === rec[0] ? null : `the disk file was modified outside Tidemark (stat ${fp}, recorded ${rec[0]})`;
  const now = parseFingerprint(fp)!;
  const was = rec[0] ? parseFingerprint(rec[0]) : null;
  if (!was || was.dev !== now.dev || was.ino !== now.ino) return 'the disk file was replaced (device/inode changed) after a crash';
  if (now.ctimeNs > BigInt(file.leaseUntil) * 1_000_000n) {
    return `the disk file changed at ${new Date(Number(now.ctimeNs / 1_000_000n)).toISOString()}, after the crashed session's write lease ended (${new Date(file.leaseUntil).toISOString()}): it may have been written outside Tidemark`;
  }
  return null;
}

/** Prefix of an accept token in a not-clean device-kind `.rct` (see `beginOperation`). */
export const JOURNAL_TOKEN = 'journal:';

/**
 * True when a `journal:<path>` token among the recorded identities names a JSON file whose `accepted`
 * array lists `identity` (GUIDs compared without braces, case-insensitively). A Tidemark operation that
 * was interrupted (the VHDX merge) lists there, before changing the disk, every identity it may leave.
 */
async function acceptedByJournal(recorded: string[], identity: string): Promise<boolean> {
  const norm = (g: string) => g.replace(/[{}]/g, '').toLowerCase();
  for (const r of recorded) {
    if (!r.startsWith(JOURNAL_TOKEN)) continue;
    try {
      const j = JSON.parse(await readFile(r.slice(JOURNAL_TOKEN.length), 'utf8')) as { accepted?: unknown };
      if (Array.isArray(j.accepted) && j.accepted.some((g) => typeof g === 'string' && norm(g) === norm(identity))) return true;
    } catch {
      // Missing or unreadable: it vouches for nothing.
    }
  }
  return false;
}
