/**
 * RCT IDs: `rct:<tracker 32 hex>:<generation>:<nonce 16 hex>`. Opaque to users; parsed only here.
 * The tracker part names one tracking instance of one disk (it changes when tracking restarts), the
 * generation is the one the seal ended, the nonce makes IDs unguessable and distinguishes re-issued
 * generations after a restart.
 */
export interface RctIdParts {
  tracker: string;
  gen: number;
  nonce: string;
}

const RE = /^rct:([0-9a-f]{32}):([1-9][0-9]{0,15}):([0-9a-f]{16})$/;

export function formatRctId(p: RctIdParts): string {
  return `rct:${p.tracker}:${p.gen}:${p.nonce}`;
}

/** Returns null when `text` is not an RCT ID. */
export function parseRctId(text: string): RctIdParts | null {
  const m = RE.exec(text.trim());
  if (!m) return null;
  const gen = Number(m[2]);
  if (!Number.isSafeInteger(gen)) return null;
  return { tracker: m[1]!, gen, nonce: m[3]! };
}
