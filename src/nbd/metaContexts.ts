/**
 * Meta-context query resolution for NBD_OPT_LIST_META_CONTEXT / NBD_OPT_SET_META_CONTEXT.
 *
 * Namespaces:
 * - `base:` — `base:allocation` (selectable); `base:` alone is a wildcard for LIST and ignored by SET.
 * - `tidemark:` — `tidemark:changes:<RCT ID>` (selectable when the export's change source knows the ID);
 *   `tidemark:` and `tidemark:changes:` are wildcards for LIST (they list live IDs when the source can,
 *   else return the `tidemark:changes:` template) and are ignored by SET.
 * - Anything else, and unknown leaf names, are ignored, as the spec requires.
 */
import type { ChangeSource } from './ChangeSource.js';
import { BASE_ALLOCATION, CHANGES_PREFIX } from './protocol.js';

async function knownId(source: ChangeSource, id: string): Promise<boolean> {
  if (id === '') return false;
  try {
    if (source.hasId) return await source.hasId(id);
    if (source.listIds) return (await source.listIds()).includes(id);
    await source.changesSince(id, 0, 0);
    return true;
  } catch {
    return false;
  }
}

async function listChanges(source: ChangeSource | undefined): Promise<string[]> {
  if (!source) return [];
  if (!source.listIds) return [CHANGES_PREFIX];
  try {
    return (await source.listIds()).filter((id) => id !== '').map((id) => CHANGES_PREFIX + id);
  } catch {
    return [];
  }
}

/** The context names a query list selects (`set`) or lists (`list`). Never throws. */
export async function resolveMetaContexts(mode: 'list' | 'set', queries: string[], source?: ChangeSource): Promise<string[]> {
  const out: string[] = [];
  if (queries.length === 0) {
    if (mode === 'set') return [];
    return [BASE_ALLOCATION, ...(await listChanges(source))];
  }
  for (const q of queries) {
    if (q === BASE_ALLOCATION) out.push(q);
    else if (q === 'base:') {
      if (mode === 'list') out.push(BASE_ALLOCATION);
    } else if (q === 'tidemark:' || q === CHANGES_PREFIX) {
      if (mode === 'list') out.push(...(await listChanges(source)));
    } else if (q.startsWith(CHANGES_PREFIX)) {
      if (source && (await knownId(source, q.slice(CHANGES_PREFIX.length)))) out.push(q);
    }
  }
  return [...new Set(out)];
}
