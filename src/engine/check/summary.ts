// What a check's numbers say: each placement's mean and spread over seeds, where the dominant module ranks among the
// single placements, Spearman's correlation of PAGE share with loss reduction, and sentences that say plainly when a
// difference is inside the spread over seeds, or when one seed cannot tell. Pure: numbers in, figures and words out.
import type { CheckPlacement, CheckResult, CheckRun, PlacementKind } from '../../protocol/messages';
import { insideSpread, spearman, spreadOf } from '../runtime/stats';

/** A placement's fixed facts and its finished runs, before the figures over seeds. */
export interface PlacementRuns {
  id: string; spec: string; kind: PlacementKind; label: string; modules: string[];
  trainableParams: number; share: number; pageRank?: number; runs: CheckRun[];
}

const fmt = (x: number) => x.toFixed(4);
const pct = (x: number) => `${(100 * x).toFixed(x >= 0.1 ? 1 : 2)}%`;
const int = (n: number) => n.toLocaleString('en-US');

/** Figures per placement, the ranks of the single placements by mean reduction, and the correlation. */
export function summarise(items: readonly PlacementRuns[]): { placements: CheckPlacement[]; correlation: CheckResult['correlation'] } {
  const placements: CheckPlacement[] = items.map((p) => ({
    id: p.id, spec: p.spec, kind: p.kind, label: p.label, modules: p.modules, trainableParams: p.trainableParams, share: p.share,
    ...(p.pageRank !== undefined ? { pageRank: p.pageRank } : {}),
    runs: p.runs,
    evalLossBefore: p.runs[0]?.evalLossBefore ?? NaN,
    evalLossAfter: spreadOf(p.runs.map((r) => r.evalLossAfter)),
    reduction: spreadOf(p.runs.map((r) => r.reduction)),
    seconds: p.runs.reduce((s, r) => s + r.seconds, 0),
  }));
  const singles = placements.filter((p) => p.kind !== 'vanilla');
  for (const p of singles) p.reductionRank = 1 + singles.filter((q) => q.reduction.mean > p.reduction.mean).length;
  const rho = singles.length >= 3 ? spearman(singles.map((p) => p.share), singles.map((p) => p.reduction.mean)) : null;
  const dom = singles.find((p) => p.kind === 'dominant');
  return { placements, correlation: { spearman: rho, singles: singles.length, ...(dom ? { dominantRank: dom.reductionRank } : {}) } };
}

/** The sentences under the table: what the check found, including what it cannot tell. */
export function findings(placements: readonly CheckPlacement[], correlation: CheckResult['correlation'], seeds: number): string[] {
  const out: string[] = [];
  const singles = placements.filter((p) => p.kind !== 'vanilla');
  const dom = singles.find((p) => p.kind === 'dominant');
  const vanilla = placements.find((p) => p.kind === 'vanilla');
  const best = [...singles].sort((a, b) => b.reduction.mean - a.reduction.mean);
  const spreadWord = `the spread over ${seeds} seeds`;
  const sdText = (p: CheckPlacement) => (p.reduction.sd !== undefined ? ` ± ${fmt(p.reduction.sd)}` : '');
  const vs = (a: CheckPlacement, b: CheckPlacement) => {
    const inside = insideSpread(a.reduction, b.reduction);
    const diff = a.reduction.mean - b.reduction.mean;
    if (inside === undefined) return '';
    return inside
      ? ` The difference from ${b.id} (${diff >= 0 ? '+' : ''}${fmt(diff)}) is inside ${spreadWord} (${fmt(a.reduction.mean)}${sdText(a)} vs ` +
        `${fmt(b.reduction.mean)}${sdText(b)}): these runs cannot tell the two placements apart.`
      : ` The difference from ${b.id} (${diff >= 0 ? '+' : ''}${fmt(diff)}) is larger than ${spreadWord} (${fmt(a.reduction.mean)}${sdText(a)} vs ` +
        `${fmt(b.reduction.mean)}${sdText(b)}).`;
  };
  if (dom && singles.length > 1) {
    if (dom.reductionRank === 1) {
      const next = best.find((p) => p !== dom)!;
      out.push(`The dominant module ranks 1 of ${singles.length} single placements by loss reduction (${fmt(dom.reduction.mean)}; next ` +
        `${next.id}, ${fmt(next.reduction.mean)}).${vs(dom, next)}`);
    } else {
      const top = best[0];
      out.push(`The dominant module ranks ${dom.reductionRank} of ${singles.length} single placements by loss reduction: ${top.label} lowered the held-out loss most (${fmt(top.reduction.mean)} vs the dominant's ${fmt(dom.reduction.mean)}).${vs(top, dom)}`);
    }
  } else if (dom) {
    out.push(`The dominant module lowered the held-out loss by ${fmt(dom.reduction.mean)}; no other single placement was trained to compare it with.`);
  }
  if (seeds < 2) {
    out.push('One seed per placement: no spread was measured, so a small difference may be noise; run with --seeds 3 to see the spread.');
  } else if (singles.length > 1) {
    // Every pair of single placements within each other's spread: the placement made no difference these runs can see.
    const allInside = singles.every((a) => singles.every((b) => a === b || insideSpread(a.reduction, b.reduction) === true));
    if (allInside) out.push(`Every single placement is inside the others' spread over ${seeds} seeds: on this data and budget, these runs cannot tell the placements apart.`);
  }
  if (vanilla && dom) {
    const ratioParams = dom.trainableParams / vanilla.trainableParams;
    const v = vanilla.reduction.mean;
    const d = dom.reduction.mean;
    if (v > 0 && d >= 0) {
      out.push(`Vanilla LoRA (${int(vanilla.trainableParams)} parameters) lowered the loss by ${fmt(v)}; the dominant module reached ` +
        `${pct(d / v)} of that with ${pct(ratioParams)} of its parameters (${int(dom.trainableParams)}).${vs(dom, vanilla).replace(' cannot tell the two placements apart', ' cannot tell it from vanilla LoRA')}`);
    } else {
      out.push(`Vanilla LoRA (${int(vanilla.trainableParams)} parameters) changed the held-out loss by ${fmt(-v)}, the dominant module ` +
        `(${int(dom.trainableParams)}) by ${fmt(-d)}: at this budget training did not lower the loss, so the placements cannot be compared; ` +
        'try more steps or a higher learning rate.');
    }
  }
  if (correlation.spearman !== null) {
    const few = correlation.singles < 5 ? ` With ${correlation.singles} placements, a rank correlation is weak evidence either way.` : '';
    out.push(`Spearman's rank correlation of PAGE share and loss reduction over ${correlation.singles} single placements: ` +
      `${correlation.spearman.toFixed(3)}.${few}`);
  } else if (correlation.singles >= 3) {
    out.push('Spearman\'s rank correlation is undefined: the shares or the reductions do not vary across the single placements.');
  }
  return out;
}
