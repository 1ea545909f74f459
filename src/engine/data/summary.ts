// What the user is told about their data before any long work: which shape each record was read as, what in it is
// supervised, and how many tokens that is. The CLI and the extension print these lines; the engine only writes them.
import * as path from 'node:path';
import type { Dataset } from './read';
import type { TokenizeResult } from './tokenize';
import { SHAPES } from './shapes';

const n = (x: number) => x.toLocaleString('en-US');

/**
 * One line per shape found in the file (most common first), then its warnings. For example:
 * `HumanEval.jsonl.gz (gzip): 164 records, shape humaneval {prompt, canonical_solution} (HumanEval): supervised: ...`.
 */
export function describeDataset(ds: Dataset): string[] {
  const name = `${path.basename(ds.file)}${ds.compression ? ` (${ds.compression})` : ''}`;
  const lines = ds.shapes.map((s, i) => {
    const info = SHAPES[s.format];
    const what = `shape ${s.format} ${info.keys} (${info.examples}); supervised: ${info.supervised}`;
    return i === 0 && ds.shapes.length === 1
      ? `${name}: ${n(s.count)} record${s.count === 1 ? '' : 's'}, ${what}`
      : `${name}: ${n(s.count)} of ${n(ds.count)} records, ${what}`;
  });
  return [...lines, ...ds.warnings.map((w) => `warning: ${w}`)];
}

/** How many tokens the kept records hold and how many of them are supervised, in total and per shape when mixed. */
export function describeTokens(t: TokenizeResult): string {
  const pct = (a: number, b: number) => (b ? `${((100 * a) / b).toFixed(1)}%` : '0%');
  const total = `${n(t.supervisedTokens)} of ${n(t.tokens)} tokens supervised (${pct(t.supervisedTokens, t.tokens)}) in ` +
    `${n(t.records.length)} record${t.records.length === 1 ? '' : 's'}`;
  if (t.byFormat.length < 2) return total;
  return `${total}: ${t.byFormat.map((f) => `${f.format} ${n(f.supervisedTokens)} of ${n(f.tokens)} in ${n(f.records)}`).join(', ')}`;
}
