import { join } from 'node:path';
import { openDisk } from '../disk/openDisk.js';
import { TidemarkError } from '../errors.js';
import { hashDevice } from './hashDevice.js';
import { readManifest } from './Manifest.js';

export interface VerifyResult {
  dir: string;
  ok: boolean;
  disks: Array<{ slot: number; file: string; ok: boolean; expected: string; actual?: string; error?: string }>;
}

/**
 * Re-hash every disk of an export (through its parent chain: a differential needs its base exports in
 * place) and compare with the manifest. Never throws for a bad disk: reports it (`ok: false`).
 * Throws NotFoundError/CorruptError for a missing or unreadable manifest.
 */
export async function verifyExport(dir: string): Promise<VerifyResult> {
  const m = await readManifest(dir);
  const disks: VerifyResult['disks'] = [];
  for (const d of m.disks) {
    try {
      const dev = await openDisk(join(dir, d.file), { readOnly: true });
      try {
        const actual = await hashDevice(dev);
        disks.push({ slot: d.slot, file: d.file, ok: actual === d.sha256 && dev.size === d.size, expected: d.sha256, actual });
      } finally {
        await dev.close();
      }
    } catch (err) {
      if (!(err instanceof TidemarkError) && !(err as NodeJS.ErrnoException).code) throw err;
      disks.push({ slot: d.slot, file: d.file, ok: false, expected: d.sha256, error: (err as Error).message });
    }
  }
  return { dir, ok: disks.every((d) => d.ok), disks };
}
