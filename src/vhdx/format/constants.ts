/**
 * VHDX constants (MS-VHDX v1.0). Every magic number Tidemark's VHDX code uses lives here.
 */
export const KiB = 1024;
export const MiB = 1024 * 1024;
export const GiB = 1024 * MiB;
export const TiB = 1024 * GiB;

/** The header section: file identifier, two headers, two region tables, each in its own 64 KiB. */
export const FILE_ID_OFFSET = 0;
export const HEADER_OFFSETS = [64 * KiB, 128 * KiB] as const;
export const REGION_TABLE_OFFSETS = [192 * KiB, 256 * KiB] as const;
export const HEADER_SECTION_SIZE = 1 * MiB;
/** Headers are checksummed over their first 4 KiB. */
export const HEADER_SIZE = 4 * KiB;
/** Region tables are checksummed over 64 KiB. */
export const REGION_TABLE_SIZE = 64 * KiB;

export const SIG_FILE = 'vhdxfile';
export const SIG_HEADER = 'head';
export const SIG_REGION = 'regi';
export const SIG_METADATA = 'metadata';
export const SIG_LOG_ENTRY = 'loge';
export const SIG_LOG_ZERO = 'zero';
export const SIG_LOG_DESC = 'desc';
export const SIG_LOG_DATA = 'data';

export const REGION_BAT = '2dc27766-f623-4200-9d64-115e9bfd4a08';
export const REGION_METADATA = '8b7ca206-4790-4b9a-b8fe-575f050f886e';

export const META_FILE_PARAMETERS = 'caa16737-fa36-4d43-b3b6-33f0aa44e76b';
export const META_VIRTUAL_DISK_SIZE = '2fa54224-cd1b-4876-b211-5dbed83bf4b8';
export const META_PAGE83 = 'beca12ab-b2e6-4523-93ef-c309e000c746';
export const META_LOGICAL_SECTOR_SIZE = '8141bf1d-a96f-4709-ba47-f233a8faab5f';
export const META_PHYSICAL_SECTOR_SIZE = 'cda348c7-445d-4471-9cc9-e9885251c556';
export const META_PARENT_LOCATOR = 'a8d35f2d-b30b-454d-abf7-d3d84834ab0c';

/** Parent locator type for a VHDX parent. */
export const LOCATOR_TYPE_VHDX = 'b04aefb7-d19e-4a81-b789-25b8e9445913';

/** Metadata table entry flags. */
export const META_FLAG_IS_USER = 1;
export const META_FLAG_IS_VIRTUAL_DISK = 2;
export const META_FLAG_IS_REQUIRED = 4;
/** File parameter flags. */
export const PARAM_LEAVE_BLOCKS_ALLOCATED = 1;
export const PARAM_HAS_PARENT = 2;
/** Region table entry flag. */
export const REGION_REQUIRED = 1;

/** The metadata table occupies the first 64 KiB of the metadata region; items follow. */
export const METADATA_TABLE_SIZE = 64 * KiB;
export const METADATA_MAX_ENTRIES = 2047;

export const BLOCK_SIZE_MIN = 1 * MiB;
export const BLOCK_SIZE_MAX = 256 * MiB;
export const MAX_DISK_SIZE = 64 * TiB;
/** One sector bitmap block covers 2^23 sectors (1 MiB of bits). */
export const SECTORS_PER_BITMAP_BLOCK = 2 ** 23;
export const BITMAP_BLOCK_SIZE = 1 * MiB;

export const LOG_SECTOR_SIZE = 4 * KiB;
export const LOG_ENTRY_HEADER_SIZE = 64;
export const LOG_DESCRIPTOR_SIZE = 32;

/** Payload block states (low 3 bits of a BAT entry). */
export const PAYLOAD_NOT_PRESENT = 0;
export const PAYLOAD_UNDEFINED = 1;
export const PAYLOAD_ZERO = 2;
export const PAYLOAD_UNMAPPED = 3;
export const PAYLOAD_FULLY_PRESENT = 6;
export const PAYLOAD_PARTIALLY_PRESENT = 7;
/** Sector bitmap block states. */
export const SB_NOT_PRESENT = 0;
export const SB_PRESENT = 6;

/** Layout Tidemark uses when creating files (qemu-img uses the same). */
export const DEFAULT_LOG_SIZE = 1 * MiB;
export const DEFAULT_BLOCK_SIZE = 32 * MiB;
