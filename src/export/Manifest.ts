/**
 * `<export dir>/manifest.json`: written last (atomically), so an export directory with a manifest is
 * complete. Format and fields: docs/design.md (machines section).
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CorruptError, NotFoundError } from '../errors.js';
import type { MachineConfig } from '../vm/MachineConfig.js';
import type { ProviderName } from './providers/SnapshotProvider.js';

export const MANIFEST_FORMAT = 'tidemark-export';
export const MANIFEST_VERSION = 1;

export interface ManifestDisk {
  slot: number;
  /** File name inside the export directory. */
  file: string;
  /** full: a whole VHDX; differential: an .avhdx over `parent`. */
  mode: 'full' | 'differential';
  /** Differential: the parent file, relative to this export directory (the previous export's disk). */
  parent?: string;
  size: number;
  /** SHA-256 of the disk's whole virtual content (through its parent chain). */
  sha256: string;
  /** Bytes copied from the machine for this disk. */
  copied: number;
  /** Why a differential was asked for but a full one was written, or why a provider did not clone it. */
  fallback?: string;
  /** The snapshot provider that cloned this disk's file (absent when Tidemark copied it block by block). */
  provider?: ProviderName;
}

export interface ExportManifest {
  format: typeof MANIFEST_FORMAT;
  version: typeof MANIFEST_VERSION;
  kind: 'full' | 'differential' | 'synthetic-full';
  machine: { id: string; name: string };
  /** Disk paths replaced by the file names in this directory. */
  config: MachineConfig;
  configHash: string;
  /** The reference point this export ends with (pass it to `--since` for the next differential). */
  refpoint: { id: string; seq: number };
  /** The reference point and export this one is based on (differential / synthetic full). */
  since?: { refpoint: string; exportDir: string };
  disks: ManifestDisk[];
  warnings: string[];
  /** `export --provider`: storage cloned the disk files, Tidemark exported the configuration. */
  provider?: ProviderName;
  /** The backup checkpoint's consistency and quiesce method (src/checkpoint/quiesce.ts); absent in older exports. */
  consistency?: { level: 'application' | 'crash'; quiesce: 'guest-agent' | 'hooks' | 'none' };
}

export const manifestPath = (dir: string) => join(dir, 'manifest.json');

export async function readManifest(dir: string): Promise<ExportManifest> {
  let text: string;
  try {
    text = await readFile(manifestPath(dir), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new NotFoundError(manifestPath(dir), 'not a complete Tidemark export (no manifest.json)');
    throw err;
  }
  let m: ExportManifest;
  try {
    m = JSON.parse(text) as ExportManifest;
  } catch {
    throw new CorruptError(manifestPath(dir), 'export manifest', 'not valid JSON');
  }
  if (m?.format !== MANIFEST_FORMAT || m.version !== MANIFEST_VERSION || !Array.isArray(m.disks) || typeof m.machine?.id !== 'string') {
    throw new CorruptError(manifestPath(dir), 'export manifest', `not a version ${MANIFEST_VERSION} Tidemark export manifest`);
  }
  for (const d of m.disks) {
    if (typeof d.file !== 'string' || d.file.includes('/') || typeof d.sha256 !== 'string') throw new CorruptError(manifestPath(dir), 'export manifest', `disk entry for slot ${d.slot} is malformed`);
  }
  return m;
}
