/**
 * Pure conversion of device extents and changed ranges into NBD block-status descriptors.
 * Descriptors cover [offset, offset + n) contiguously from `offset`, never past offset + length, each with a
 * non-zero length; consecutive descriptors have different flags.
 */
import type { Extent } from '../blockdev/BlockDevice.js';
import type { ChangeRange } from './ChangeSource.js';
import { STATE_CHANGED, STATE_HOLE, STATE_ZERO } from './protocol.js';

export interface Descriptor {
  length: number;
  flags: number;
}

/** The most descriptors sent in one chunk; the spec lets a server answer a shorter range. */
export const MAX_DESCRIPTORS = 65536;

function push(out: Descriptor[], length: number, flags: number): void {
  if (length <= 0) return;
  const last = out[out.length - 1];
  if (last && last.flags === flags) last.length += length;
  else out.push({ length, flags });
}

function finish(out: Descriptor[], reqOne: boolean): Descriptor[] {
  if (reqOne) return out.slice(0, 1);
  return out.length > MAX_DESCRIPTORS ? out.slice(0, MAX_DESCRIPTORS) : out;
}

/** base:allocation flags of one extent type: data -> 0, zero -> ZERO, hole -> HOLE|ZERO. */
export function allocationFlags(type: Extent['type']): number {
  return type === 'data' ? 0 : type === 'zero' ? STATE_ZERO : STATE_HOLE | STATE_ZERO;
}

/** base:allocation descriptors for [offset, offset+length) from the device's extents. */
export function allocationDescriptors(extents: Extent[], offset: number, length: number, reqOne = false): Descriptor[] {
  const out: Descriptor[] = [];
  let pos = offset;
  const end = offset + length;
  for (const e of extents) {
    if (pos >= end) break;
    const eEnd = Math.min(e.offset + e.length, end);
    if (e.offset > pos) push(out, Math.min(e.offset, end) - pos, 0); // a gap: unknown, report as data
    const start = Math.max(e.offset, pos);
    push(out, eEnd - start, allocationFlags(e.type));
    pos = Math.max(pos, eEnd);
  }
  push(out, end - pos, 0);
  return finish(out, reqOne);
}

/** tidemark:changes descriptors: CHANGED over changed ranges, 0 elsewhere. Tolerates unsorted input. */
export function changeDescriptors(changes: ChangeRange[], offset: number, length: number, reqOne = false): Descriptor[] {
  const out: Descriptor[] = [];
  const end = offset + length;
  const sorted = [...changes].sort((a, b) => a.offset - b.offset);
  let pos = offset;
  for (const c of sorted) {
    const s = Math.max(c.offset, pos);
    const e = Math.min(c.offset + c.length, end);
    if (e <= s) continue;
    push(out, s - pos, 0);
    push(out, e - s, STATE_CHANGED);
    pos = e;
    if (pos >= end) break;
  }
  push(out, end - pos, 0);
  return finish(out, reqOne);
}
