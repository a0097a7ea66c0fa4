import type { DiskEntry, Snapshot } from '../repo/Manifest.js';
import { SnapshotDiskError } from './errors.js';

/** The disk `name` of a snapshot, or its only disk when `name` is omitted. Throws SnapshotDiskError. */
export function selectDisk(snap: Snapshot, name?: string): DiskEntry {
  const names = snap.disks.map((d) => d.name);
  if (name !== undefined) {
    const d = snap.disks.find((x) => x.name === name);
    if (!d) throw new SnapshotDiskError(`snapshot ${snap.id.slice(0, 12)} has no disk "${name}" (it has: ${names.join(', ') || 'none'})`, { snapshot: snap.id, disks: names });
    return d;
  }
  if (snap.disks.length !== 1) throw new SnapshotDiskError(`snapshot ${snap.id.slice(0, 12)} has ${snap.disks.length} disks (${names.join(', ')}); choose one with --disk NAME`, { snapshot: snap.id, disks: names });
  return snap.disks[0]!;
}
