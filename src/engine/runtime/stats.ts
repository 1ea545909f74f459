// Small statistics shared by the comparison of reports and the placement check: ranks with ties, Spearman's rank
// correlation, and the mean and spread of a figure over seeds. Pure functions on plain numbers.
import type { Spread } from '../../protocol/messages';

/**
 * The rank of each value, 1 for the largest (`descending`, the default) or the smallest; tied values share the mean
 * of the ranks they span (1, 2.5, 2.5, 4), which is what Spearman's coefficient needs to stay exact with ties.
 */
export function averageRanks(values: readonly number[], descending = true): number[] {
  const order = values.map((v, i) => [v, i] as const).sort((a, b) => (descending ? b[0] - a[0] : a[0] - b[0]));
  const ranks = new Array<number>(values.length);
  for (let i = 0; i < order.length;) {
    let j = i + 1;
    while (j < order.length && order[j][0] === order[i][0]) j++;
    const mean = (i + 1 + j) / 2; // ranks i+1 .. j, averaged
    for (let k = i; k < j; k++) ranks[order[k][1]] = mean;
    i = j;
  }
  return ranks;
}

/** Pearson's correlation of two equally long series; null when either does not vary (or fewer than two points). */
export function pearson(x: readonly number[], y: readonly number[]): number | null {
  if (x.length !== y.length) throw new RangeError(`pearson: ${x.length} values against ${y.length}`);
  const n = x.length;
  if (n < 2) return null;
  const mx = x.reduce((a, b) => a + b, 0) / n;
  const my = y.reduce((a, b) => a + b, 0) / n;
  let sxy = 0, sxx = 0, syy = 0;
  for (let i = 0; i < n; i++) {
    sxy += (x[i] - mx) * (y[i] - my);
    sxx += (x[i] - mx) ** 2;
    syy += (y[i] - my) ** 2;
  }
  if (sxx === 0 || syy === 0) return null;
  // Rounding can put a perfect correlation a hair outside [-1, 1].
  return Math.max(-1, Math.min(1, sxy / Math.sqrt(sxx * syy)));
}

/**
 * Spearman's rank correlation: Pearson's correlation of the average ranks, exact with ties (the closed form
 * 1 - 6 sum d^2 / (n (n^2 - 1)) holds only without them). Null when a series is constant or has fewer than 2 values.
 */
export function spearman(x: readonly number[], y: readonly number[]): number | null {
  return pearson(averageRanks(x), averageRanks(y));
}

/** The mean, the sample standard deviation (n - 1; only from two values on), the minimum and the maximum. */
export function spreadOf(xs: readonly number[]): Spread {
  if (!xs.length) throw new RangeError('spreadOf: no values');
  const n = xs.length;
  const mean = xs.reduce((a, b) => a + b, 0) / n;
  const out: Spread = { mean, min: Math.min(...xs), max: Math.max(...xs), n };
  if (n >= 2) out.sd = Math.sqrt(xs.reduce((a, b) => a + (b - mean) ** 2, 0) / (n - 1));
  return out;
}

/**
 * Whether two figures measured over seeds cannot be told apart: their means differ by no more than the sum of their
 * standard deviations (the intervals mean ± sd overlap). Undefined when either has a single value: no spread was
 * measured, so nothing can be said either way.
 */
export function insideSpread(a: Spread, b: Spread): boolean | undefined {
  if (a.sd === undefined || b.sd === undefined) return undefined;
  return Math.abs(a.mean - b.mean) <= a.sd + b.sd;
}
