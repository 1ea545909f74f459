// Comparing two probe reports of the same model (e.g. two tasks): is the dominant module the same, and how similar
// are the two module orderings (Spearman rank correlation)?
import type { ProbeReport } from '../../protocol/messages';
import { badInput } from '../runtime/errors';

export interface Comparison { sameDominant: boolean; otherDominant: string; spearman: number; top10Overlap: number; modules: number }

export function compareReports(a: ProbeReport, b: ProbeReport): Comparison {
  const rankB = new Map(b.modules.map((m) => [m.name, m.rank]));
  const common = a.modules.filter((m) => rankB.has(m.name));
  if (common.length !== a.modules.length || common.length !== b.modules.length) {
    throw badInput(`the reports cover different modules (${a.modules.length} vs ${b.modules.length}): are they of the same model?`);
  }
  const n = common.length;
  // Ranks are a permutation of 1..n (no ties), so the closed form applies.
  const d2 = common.reduce((s, m) => s + (m.rank - rankB.get(m.name)!) ** 2, 0);
  const spearman = n > 1 ? 1 - (6 * d2) / (n * (n * n - 1)) : 1;
  const topA = new Set(a.modules.filter((m) => m.rank <= 10).map((m) => m.name));
  const top10Overlap = b.modules.filter((m) => m.rank <= 10 && topA.has(m.name)).length;
  return { sameDominant: a.dominant.name === b.dominant.name, otherDominant: b.dominant.name, spearman, top10Overlap, modules: n };
}
