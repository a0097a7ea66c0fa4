/**
 * mountSnapshot: serve one disk of a restore point over NBD.
 *
 * Read-only: a SnapshotDevice (chunks read from the repository by index, verified). Writable ("instant
 * recovery"): the SnapshotDevice under a copy-on-write overlay on a sparse temporary file, so writes
 * land in the overlay and the repository is never modified; the overlay is deleted on close.
 */
import { randomBytes } from 'node:crypto';
import { rm } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { BlockDevice } from '../blockdev/BlockDevice.js';
import { copyOnWrite } from '../blockdev/copyOnWrite.js';
import { RawFileDevice } from '../blockdev/RawFileDevice.js';
import { NbdServer, type ListenTarget } from '../nbd/NbdServer.js';
import { findSnapshot } from '../repo/Manifest.js';
import type { Repository } from '../repo/Repository.js';
import { selectDisk } from './selectDisk.js';
import { SnapshotDevice } from './SnapshotDevice.js';

export interface MountOptions {
  listen: ListenTarget;
  disk?: string;
  writable?: boolean;
  /** Directory for the writable overlay (default: the OS temp dir). */
  overlayDir?: string;
  /** Export name (default: the disk's name). */
  name?: string;
  log?: (line: string) => void;
}

export interface MountedSnapshot {
  snapshot: string;
  disk: string;
  exportName: string;
  address: AddressInfo | string;
  writable: boolean;
  overlay?: string;
  /** Stop serving, close the devices, delete the overlay. Idempotent. */
  close(): Promise<void>;
}

export async function mountSnapshot(repo: Repository, snapshotId: string, opts: MountOptions): Promise<MountedSnapshot> {
  const snap = await findSnapshot(repo, snapshotId);
  const entry = selectDisk(snap, opts.disk);
  const base = new SnapshotDevice(repo, entry);
  let device: BlockDevice = base;
  let overlay: string | undefined;
  if (opts.writable) {
    overlay = join(opts.overlayDir ?? tmpdir(), `tidemark-mount-${snap.id.slice(0, 12)}-${randomBytes(4).toString('hex')}.overlay`);
    const ov = await RawFileDevice.create(overlay, entry.size);
    device = copyOnWrite(base, ov);
  }
  const exportName = opts.name ?? entry.name;
  let server: NbdServer | undefined;
  try {
    server = new NbdServer({ exports: [{ name: exportName, description: `snapshot ${snap.id} disk ${entry.name}`, device, readOnly: !opts.writable }], log: opts.log });
    const address = await server.listen(opts.listen);
    let closing: Promise<void> | undefined;
    const srv = server;
    return {
      snapshot: snap.id,
      disk: entry.name,
      exportName,
      address,
      writable: !!opts.writable,
      ...(overlay ? { overlay } : {}),
      close() {
        closing ??= (async () => {
          try {
            await srv.close();
          } finally {
            await device.close().catch(() => undefined);
            if (overlay) await rm(overlay, { force: true });
          }
        })();
        return closing;
      },
    };
  } catch (err) {
    await server?.close().catch(() => undefined);
    await device.close().catch(() => undefined);
    if (overlay) await rm(overlay, { force: true });
    throw err;
  }
}
