import { CorruptError } from '../errors.js';
import { guidFromBuffer, guidToBuffer } from './guid.js';

/**
 * The parent locator metadata item of a differencing disk:
 *   0 LocatorType GUID | 16 u16 reserved | 18 u16 KeyValueCount
 *   20 + 12*i: u32 KeyOffset | u32 ValueOffset | u16 KeyLength | u16 ValueLength
 * Offsets are relative to the start of the item; keys and values are UTF-16LE without terminators,
 * lengths in bytes, never zero. Keys are unique.
 */
export interface ParentLocator {
  locatorType: string;
  entries: Map<string, string>;
}

export function parentLocatorToBuffer(p: ParentLocator): Buffer {
  const pairs = [...p.entries];
  const head = 20 + pairs.length * 12;
  const strings: Buffer[] = [];
  const b = Buffer.alloc(head);
  guidToBuffer(p.locatorType).copy(b, 0);
  b.writeUInt16LE(pairs.length, 18);
  let off = head;
  pairs.forEach(([k, v], i) => {
    const kb = Buffer.from(k, 'utf16le');
    const vb = Buffer.from(v, 'utf16le');
    if (kb.length === 0 || vb.length === 0 || kb.length > 0xffff || vb.length > 0xffff) throw new RangeError(`parent locator entry "${k}" has an empty or oversized key/value`);
    const o = 20 + i * 12;
    b.writeUInt32LE(off, o);
    b.writeUInt32LE(off + kb.length, o + 4);
    b.writeUInt16LE(kb.length, o + 8);
    b.writeUInt16LE(vb.length, o + 10);
    strings.push(kb, vb);
    off += kb.length + vb.length;
  });
  return Buffer.concat([b, ...strings]);
}

export function parentLocatorFromBuffer(b: Buffer, file = 'vhdx'): ParentLocator {
  const s = 'parent locator';
  if (b.length < 20) throw new CorruptError(file, s, `item is ${b.length} bytes, too short`);
  const count = b.readUInt16LE(18);
  if (20 + count * 12 > b.length) throw new CorruptError(file, s, `${count} entries do not fit in ${b.length} bytes`);
  const entries = new Map<string, string>();
  for (let i = 0; i < count; i++) {
    const o = 20 + i * 12;
    const ko = b.readUInt32LE(o);
    const vo = b.readUInt32LE(o + 4);
    const kl = b.readUInt16LE(o + 8);
    const vl = b.readUInt16LE(o + 10);
    const name = `${s} entry ${i}`;
    if (kl === 0 || vl === 0) throw new CorruptError(file, name, 'empty key or value');
    if (kl % 2 !== 0 || vl % 2 !== 0) throw new CorruptError(file, name, 'key/value length is not a whole number of UTF-16 units');
    if (ko + kl > b.length || vo + vl > b.length) throw new CorruptError(file, name, 'key or value runs past the end of the item');
    const key = b.toString('utf16le', ko, ko + kl);
    if (entries.has(key)) throw new CorruptError(file, name, `duplicate key "${key}"`);
    entries.set(key, b.toString('utf16le', vo, vo + vl));
  }
  return { locatorType: guidFromBuffer(b, 0), entries };
}
