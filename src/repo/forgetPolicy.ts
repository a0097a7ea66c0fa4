/**
 * Retention policy evaluation (pure). Like restic's `forget`: within each group (by default: host +
 * source id), walk snapshots newest first;
 * - keep-last N keeps the N newest;
 * - keep-hourly/daily/weekly/monthly/yearly N keep the newest snapshot of each of the N most recent
 *   hours/days/ISO weeks/months/years that have a snapshot.
 * A snapshot is kept if any rule keeps it (reasons list them all). Buckets use UTC so the result does
 * not depend on the machine's time zone. An empty policy keeps everything (never "remove all").
 */

export interface ForgetPolicy {
  last?: number;
  hourly?: number;
  daily?: number;
  weekly?: number;
  monthly?: number;
  yearly?: number;
}

export interface PolicySnapshot {
  id: string;
  time: string;
  host?: string;
  source?: { id: string };
}

export interface PolicyDecision<S extends PolicySnapshot> {
  keep: Array<{ snapshot: S; reasons: string[] }>;
  remove: S[];
}

type Rule = Exclude<keyof ForgetPolicy, 'last'>;

const BUCKET: Record<Rule, (d: Date) => string> = {
  hourly: (d) => d.toISOString().slice(0, 13),
  daily: (d) => d.toISOString().slice(0, 10),
  weekly: (d) => isoWeek(d),
  monthly: (d) => d.toISOString().slice(0, 7),
  yearly: (d) => d.toISOString().slice(0, 4),
};

/** ISO 8601 week "YYYY-Www" (weeks start Monday; week 1 holds the year's first Thursday). */
export function isoWeek(d: Date): string {
  const t = new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate()));
  const day = t.getUTCDay() || 7;
  t.setUTCDate(t.getUTCDate() + 4 - day); // the Thursday of this week
  const yearStart = Date.UTC(t.getUTCFullYear(), 0, 1);
  const week = Math.ceil(((t.getTime() - yearStart) / 86400000 + 1) / 7);
  return `${t.getUTCFullYear()}-W${String(week).padStart(2, '0')}`;
}

export function policyIsEmpty(p: ForgetPolicy): boolean {
  return !Object.values(p).some((n) => (n ?? 0) > 0);
}

export function defaultGroup(s: PolicySnapshot): string {
  return `${s.host ?? ''}\u0000${s.source?.id ?? ''}`;
}

export function applyForgetPolicy<S extends PolicySnapshot>(snapshots: readonly S[], policy: ForgetPolicy, groupBy: (s: S) => string = defaultGroup): PolicyDecision<S> {
  for (const [k, v] of Object.entries(policy)) {
    if (v !== undefined && (!Number.isInteger(v) || v < 0)) throw new RangeError(`keep-${k} must be a non-negative integer, got ${String(v)}`);
  }
  const keep: PolicyDecision<S>['keep'] = [];
  const remove: S[] = [];
  const groups = new Map<string, S[]>();
  for (const s of snapshots) {
    const g = groupBy(s);
    if (!groups.has(g)) groups.set(g, []);
    groups.get(g)!.push(s);
  }
  for (const group of groups.values()) {
    const sorted = [...group].sort((a, b) => Date.parse(b.time) - Date.parse(a.time) || b.id.localeCompare(a.id));
    if (policyIsEmpty(policy)) {
      for (const s of sorted) keep.push({ snapshot: s, reasons: ['no policy'] });
      continue;
    }
    const seen: Record<Rule, Set<string>> = { hourly: new Set(), daily: new Set(), weekly: new Set(), monthly: new Set(), yearly: new Set() };
    sorted.forEach((s, i) => {
      const reasons: string[] = [];
      if (i < (policy.last ?? 0)) reasons.push('last');
      const d = new Date(s.time);
      for (const rule of Object.keys(BUCKET) as Rule[]) {
        const n = policy[rule] ?? 0;
        if (n === 0) continue;
        const b = BUCKET[rule](d);
        if (!seen[rule].has(b) && seen[rule].size < n) {
          seen[rule].add(b);
          reasons.push(rule);
        }
      }
      if (reasons.length) keep.push({ snapshot: s, reasons });
      else remove.push(s);
    });
  }
  return { keep, remove };
}
