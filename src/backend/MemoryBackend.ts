import { copyInto } from './copyInto.js';
import { OBJECT_TYPES, type Backend, type ObjectInfo, type ObjectType, type ObjectWriter } from './Backend.js';
import { bufferedWriter } from './bufferedWriter.js';
import { checkName, checkType } from './checkName.js';
import { ObjectNotFoundError } from './errors.js';

interface Stored {
  data: Buffer;
  mtimeMs: number;
}

/**
 * Objects in a Map. First-class for tests: same contract as LocalBackend, plus `clock` to fake object
 * ages (prune's grace period) and `objects` to look inside (tamper tests).
 */
export class MemoryBackend implements Backend {
  readonly location: string;
  private readonly store = new Map<ObjectType, Map<string, Stored>>(OBJECT_TYPES.map((t) => [t, new Map()]));

  constructor(opts: { location?: string; clock?: () => number } = {}) {
    this.location = opts.location ?? 'memory:';
    if (opts.clock) this.clock = opts.clock;
  }

  clock: () => number = () => Date.now();

  async put(type: ObjectType, name: string, data: Uint8Array): Promise<boolean> {
    checkName(type, name);
    const m = this.store.get(type)!;
    if (m.has(name)) return false;
    m.set(name, { data: Buffer.from(data), mtimeMs: this.clock() });
    return true;
  }

  /** Pieces kept in memory, stored at commit (the same contract as LocalBackend's streaming writer). */
  openWriter(type: ObjectType): ObjectWriter {
    checkType(type);
    return bufferedWriter((name, data) => this.put(type, name, data));
  }

  async get(type: ObjectType, name: string): Promise<Buffer> {
    return Buffer.from(this.entry(type, name).data);
  }

  async getRange(type: ObjectType, name: string, offset: number, length: number, into?: Uint8Array): Promise<Buffer> {
    const slice = this.entry(type, name).data.subarray(offset, offset + length);
    if (into && into.length < length) throw new RangeError(`getRange: target of ${into.length} bytes cannot hold ${length}`);
    return into ? copyInto(slice, into) : Buffer.from(slice); // never a view of the stored object
  }

  async has(type: ObjectType, name: string): Promise<boolean> {
    checkName(type, name);
    return this.store.get(type)!.has(name);
  }

  async *list(type: ObjectType): AsyncIterable<string> {
    checkType(type);
    for (const name of [...this.store.get(type)!.keys()]) yield name;
  }

  async remove(type: ObjectType, name: string): Promise<void> {
    checkName(type, name);
    this.store.get(type)!.delete(name);
  }

  async stat(type: ObjectType, name: string): Promise<ObjectInfo> {
    const e = this.entry(type, name);
    return { type, name, size: e.data.length, mtimeMs: e.mtimeMs };
  }

  /** The stored bytes themselves (not a copy): tests flip bits in them to simulate corruption. */
  raw(type: ObjectType, name: string): Buffer {
    return this.entry(type, name).data;
  }

  private entry(type: ObjectType, name: string): Stored {
    checkName(type, name);
    const e = this.store.get(type)!.get(name);
    if (!e) throw new ObjectNotFoundError(this.location, type, name);
    return e;
  }
}
