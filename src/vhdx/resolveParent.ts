import { access } from 'node:fs/promises';
import { dirname, isAbsolute, resolve } from 'node:path';
import type { ParentLocator } from './format/ParentLocator.js';

/** Parent locator keys Tidemark reads and writes (the first four are MS-VHDX's; the last is ours). */
export const KEY_LINKAGE = 'parent_linkage';
export const KEY_LINKAGE2 = 'parent_linkage2';
export const KEY_RELATIVE = 'relative_path';
export const KEY_WIN32 = 'absolute_win32_path';
export const KEY_VOLUME = 'volume_path';
export const KEY_LINUX = 'absolute_linux_path';

/** Candidate parent paths in the order they are tried: relative_path (from the child's folder), Linux path, win32 path if POSIX-like. */
export function parentCandidates(childPath: string, loc: ParentLocator): string[] {
  const out: string[] = [];
  const rel = loc.entries.get(KEY_RELATIVE);
  if (rel) {
    const p = rel.replace(/\\/g, '/');
    out.push(isAbsolute(p) ? p : resolve(dirname(childPath), p));
  }
  const lin = loc.entries.get(KEY_LINUX);
  if (lin) out.push(lin);
  const win = loc.entries.get(KEY_WIN32);
  if (win && win.startsWith('/')) out.push(win);
  return [...new Set(out)];
}

/** The first candidate that exists, plus the list tried. */
export async function findParent(childPath: string, loc: ParentLocator): Promise<{ found?: string; tried: string[] }> {
  const tried = parentCandidates(childPath, loc);
  for (const p of tried) {
    try {
      await access(p);
      return { found: resolve(p), tried };
    } catch {
      // try the next one
    }
  }
  return { tried };
}
