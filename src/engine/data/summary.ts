// What the user is told about their data before any long work: which shape each record was read as, what in it is
// supervised, and how many tokens that is. The CLI and the extension print these lines; the engine only writes them.
import * as path from 'node:path';
import { DATA_PREFIX, type DataSummary } from '../../protocol/messages';
import type { JobHooks } from '../runtime/jobs';
import type { Dataset } from './read';
import type { TokenizeResult } from './tokenize';
import { SHAPES } from './shapes';
import { skippedWarning } from './warnings';

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

/**
 * The data of a job in one line, with its warnings (mixed record shapes, records dropped for length), for every job
 * alike: eval, probe and train (and its --eval-data) call it once their data is tokenized, before the weights load.
 */
export function summariseData(ds: Dataset, t: TokenizeResult, seqLen: number): DataSummary {
  const shapes = ds.shapes.map((s) => ({ format: s.format, keys: SHAPES[s.format].keys, count: s.count }));
  const used = t.records.length;
  const skipped = skippedWarning(t, seqLen, ds.file);
  const warnings = [...ds.warnings.map((w) => `${ds.file}: ${w}`), ...(skipped ? [skipped] : [])];
  const records = used === ds.count ? `${n(used)} record${used === 1 ? '' : 's'}` : `${n(used)} of ${n(ds.count)} records`;
  const shape = shapes.length === 1 ? `shape ${shapes[0]!.format} ${shapes[0]!.keys}`
    : `mixed shapes (${shapes.map((s) => `${n(s.count)} ${s.format}`).join(', ')})`;
  const line = `${DATA_PREFIX}${ds.file}${ds.compression ? ` (${ds.compression})` : ''} — ${records}, ${shape}, ` +
    `${n(t.supervisedTokens)} supervised tokens of ${n(t.tokens)}`;
  return { file: ds.file, ...(ds.compression ? { compression: ds.compression } : {}), records: ds.count, used, skipped: t.skipped, shapes,
    tokens: t.tokens, supervisedTokens: t.supervisedTokens, warnings, line };
}

/** Says the summary through the job's log: the line as information, each warning as a warning. */
export function announceData(s: DataSummary, hooks: JobHooks): void {
  hooks.log?.('info', s.line);
  for (const w of s.warnings) hooks.log?.('warn', `${DATA_PREFIX}${w}`);
}
