/**
 * The VHDX metadata log: finding the active sequence to replay, and writing new entries.
 *
 * How Tidemark writes the log: the header's LogGuid stays zero until the session's first entry is durable
 * (then one header update publishes it), so a header never names a log that holds no valid entry.
 * Every commit is one or more self-contained entries, each written at
 * the start of the log (offset 0, tail 0), made durable (fdatasync), then applied to its final
 * locations. The next entry is only written after another fdatasync, which also makes the previous
 * entry's applied writes durable; so at most one entry is ever un-applied and overwriting an applied
 * one loses nothing. A torn entry fails its checksum and is ignored: the metadata it carried was
 * never applied, and nothing on disk referenced the data it described.
 *
 * Replay (ours and foreign files): scan every 4 KiB sector for a valid entry of the header's LogGuid;
 * the entry with the highest sequence number is the head; replay from the head's tail when a chain of
 * consecutive sequence numbers leads from there to the head, else the longest such run ending at the head.
 */
import type { FileHandle } from 'node:fs/promises';
import { CorruptError } from './errors.js';
import { LOG_SECTOR_SIZE, MiB } from './format/constants.js';
import { descriptorSectors, type LogEntry, logEntryFromBuffer, logEntryToBuffer, peekLogEntryLength } from './format/LogEntry.js';
import { ZERO_GUID, guidEq } from './format/guid.js';
import type { VhdxHeader } from './format/Header.js';
import type { Reader } from './VhdxStructure.js';

interface Found { pos: number; length: number; entry: LogEntry }

/** The entries to replay, oldest first; [] when the log is clean (zero LogGuid or no valid entry). */
export async function findActiveLog(read: Reader, header: VhdxHeader, file: string, fileSize: number): Promise<LogEntry[]> {
  if (guidEq(header.logGuid, ZERO_GUID) || header.logLength === 0) return [];
  if (header.logOffset + header.logLength > fileSize) throw new CorruptError(file, 'log', `log region [${header.logOffset}, +${header.logLength}) runs past the end of the file`);
  const log = await read(header.logOffset, header.logLength);
  const L = header.logLength;
  const found = new Map<number, Found>();
  for (let pos = 0; pos < L; pos += LOG_SECTOR_SIZE) {
    const len = peekLogEntryLength(log.subarray(pos, pos + LOG_SECTOR_SIZE), header.logGuid, L);
    if (len === undefined) continue;
    const buf = pos + len <= L ? log.subarray(pos, pos + len) : Buffer.concat([log.subarray(pos), log.subarray(0, pos + len - L)]);
    try {
      found.set(pos, { pos, length: len, entry: logEntryFromBuffer(buf, header.logGuid, file) });
    } catch {
      // Not a valid entry (torn write or stale data): skip.
    }
  }
  if (found.size === 0) return [];
  let head: Found | undefined;
  for (const f of found.values()) if (!head || f.entry.sequenceNumber > head.entry.sequenceNumber) head = f;
  const h = head!;
  // Try the chain from the head's tail.
  const chain: Found[] = [];
  let cur = found.get(h.entry.tail);
  while (cur && chain.length <= found.size) {
    chain.push(cur);
    if (cur === h) break;
    const next = found.get((cur.pos + cur.length) % L);
    if (!next || next.entry.sequenceNumber !== cur.entry.sequenceNumber + 1n) { cur = undefined; break; }
    cur = next;
  }
  let seq: Found[];
  if (cur === h) seq = chain;
  else {
    // The longest run of consecutive entries ending at the head.
    seq = [h];
    for (;;) {
      const first = seq[0]!;
      const prev = [...found.values()].find((f) => (f.pos + f.length) % L === first.pos && f.entry.sequenceNumber + 1n === first.entry.sequenceNumber);
      if (!prev || seq.includes(prev)) break;
      seq.unshift(prev);
    }
  }
  for (const f of seq) {
    if (f.entry.flushedFileOffset > fileSize) {
      throw new CorruptError(file, `log entry ${f.entry.sequenceNumber}`, `the file is shorter (${fileSize} bytes) than when the log entry was written (${f.entry.flushedFileOffset} bytes): it was truncated`);
    }
  }
  return seq.map((f) => f.entry);
}

/** Apply entries in order to the file, extend it to LastFileOffset if shorter, and fdatasync. Idempotent. */
export async function applyLogEntries(fh: FileHandle, entries: LogEntry[], fileSize: number): Promise<number> {
  let size = fileSize;
  const zeros = Buffer.alloc(MiB);
  for (const e of entries) {
    for (const z of e.zeros) {
      for (let o = 0; o < z.length; o += zeros.length) {
        const n = Math.min(zeros.length, z.length - o);
        await fh.write(zeros, 0, n, z.fileOffset + o);
      }
      size = Math.max(size, z.fileOffset + z.length);
    }
    for (const w of e.writes) {
      await fh.write(w.data, 0, w.data.length, w.fileOffset);
      size = Math.max(size, w.fileOffset + w.data.length);
    }
    if (size < e.lastFileOffset) {
      size = Math.ceil(e.lastFileOffset / MiB) * MiB;
      await fh.truncate(size);
    }
  }
  await fh.datasync();
  return size;
}

/** Writes Tidemark's log entries (see the file comment for the scheme). */
export class LogWriter {
  private seq: bigint;

  constructor(private readonly fh: FileHandle, private readonly logOffset: number, private readonly logLength: number, readonly logGuid: string, startSeq = 1n) {
    this.seq = startSeq;
  }

  /** How many data sectors fit in one entry of this log. */
  get maxSectorsPerEntry(): number {
    const sectors = this.logLength / LOG_SECTOR_SIZE;
    let n = sectors - 1;
    while (n > 0 && n + descriptorSectors(n) > sectors) n--;
    return n;
  }

  /**
   * Make `writes` (4 KiB-aligned file offset -> 4096 bytes) durable through the log, then apply them.
   * Caller guarantees that data the new metadata points at was written before; this fdatasyncs first.
   * `onFirstDurable` runs once the first entry is durable and before anything is applied: the device uses
   * it to publish the LogGuid in the header, so an entry only becomes valid once it is complete.
   */
  async commit(writes: Map<number, Buffer>, flushedFileOffset: number, lastFileOffset: number, onFirstDurable?: () => Promise<void>): Promise<void> {
    const all = [...writes]; // insertion order: callers order dependent updates
    const per = this.maxSectorsPerEntry;
    if (per <= 0) throw new Error('log too small');
    for (let i = 0; i < all.length; i += per) {
      const part = all.slice(i, i + per);
      const entry = logEntryToBuffer({
        sequenceNumber: this.seq++, tail: 0, logGuid: this.logGuid, flushedFileOffset, lastFileOffset,
        zeros: [], writes: part.map(([fileOffset, data]) => ({ fileOffset, data })),
      });
      await this.fh.datasync();
      await this.fh.write(entry, 0, entry.length, this.logOffset);
      await this.fh.datasync();
      if (i === 0 && onFirstDurable) await onFirstDurable();
      for (const [off, data] of part) await this.fh.write(data, 0, data.length, off);
    }
  }
}
