/**
 * Where an export's `tidemark:changes:<ID>` meta context gets its answers: the RCT change tracker of the
 * device being served. The NBD server only reads from it.
 */
export interface ChangeRange {
  offset: number;
  length: number;
}

export interface ChangeSource {
  /**
   * Ranges changed since change ID `id`, restricted to [offset, offset+length): sorted, non-overlapping.
   * Rejects when `id` is not (or no longer) a valid change ID.
   */
  changesSince(id: string, offset: number, length: number): Promise<ChangeRange[]>;
  /** Whether `id` can be answered. Without it the server probes with a zero-length changesSince. */
  hasId?(id: string): Promise<boolean>;
  /** The live change IDs, listed by NBD_OPT_LIST_META_CONTEXT. Optional: not every source can list. */
  listIds?(): Promise<string[]>;
}
