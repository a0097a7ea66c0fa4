/**
 * Magic numbers of change tracking, with their derivation. See docs/design.md (rct section).
 */

/** Default fine granularity: 64 KiB. 1 bit per block = 2 MiB of bitmap per TiB of disk. */
export const DEFAULT_BLOCK_SIZE = 64 * 1024;
/** Block sizes allowed: powers of two from one sector to 64 MiB. */
export const MIN_BLOCK_SIZE = 512;
export const MAX_BLOCK_SIZE = 64 * 1024 * 1024;

/** Bitmap page: 4096 bytes = 32768 blocks (2 GiB of disk at 64 KiB blocks). Pages are allocated on first set. */
export const PAGE_BYTES = 4096;
export const PAGE_BITS = PAGE_BYTES * 8;

/**
 * Coarse regions (.mrt): at least 64 MiB, and large enough that the table has at most 32768 regions
 * (a 4 KiB bitmap, so one .mrt slot is at most 8 KiB): 64 MiB up to 2 TiB disks, 1 GiB at 32 TiB,
 * 2 GiB at the 64 TiB VHDX maximum. One fsync per newly dirtied region per epoch: a guest writing
 * everywhere costs at most 32768 fsyncs per session, and a crash widens answers by at most one region
 * per dirtied region.
 */
export const MIN_REGION_SIZE = 64 * 1024 * 1024;
export const MAX_REGIONS = 32768;

export function autoRegionSize(diskSize: number): number {
  return effectiveRegionSize(0, diskSize);
}

/** The region size in use: the configured one (0 = 64 MiB), doubled until the table has at most MAX_REGIONS regions. */
export function effectiveRegionSize(configured: number, diskSize: number): number {
  let r = configured > 0 ? configured : MIN_REGION_SIZE;
  while (Math.ceil(diskSize / r) > MAX_REGIONS) r *= 2;
  return r;
}

/** .rct file: magic, version, fixed header size. */
export const RCT_MAGIC = 'TDMK-RCT';
export const RCT_VERSION = 1;
export const RCT_HEADER_SIZE = 128;
/** .mrt slot: magic, version, header size; slots are multiples of 4096 bytes. */
export const MRT_MAGIC = 'TDMK-MRT';
export const MRT_VERSION = 1;
export const MRT_HEADER_SIZE = 64;
export const MRT_SLOT_ALIGN = 4096;

/**
 * Raw disks have no content identity, only a stat fingerprint that our own writes change. While a
 * session writes, the .rct carries a lease: "this process may change the file until leaseUntil". After a
 * crash a raw disk is accepted only if its ctime is not later than the lease (and dev/inode are the
 * same). The write path renews the lease (one .rct persist) when less than LEASE_MARGIN_MS remains.
 */
export const LEASE_MS = 60_000;
export const LEASE_MARGIN_MS = 20_000;
/** Default period of the background .rct persist (only when bits changed). */
export const DEFAULT_PERSIST_INTERVAL_MS = 10_000;
/** A flush persists the .rct (when bits changed) at most this often. */
export const FLUSH_PERSIST_MIN_MS = 1_000;
