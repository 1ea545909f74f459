// The one warning every job gives when tokenization dropped records (eval, probe, train and its --eval-data alike),
// so a dataset that mostly does not fit the sequence length is never trained or measured on silently: the data
// summary (summary.ts) carries it, and announceData says it.
import type { TokenizeResult } from './tokenize';

/** How many records were skipped, why the first one was, and how many are left; undefined when none was skipped. */
export function skippedWarning(tok: TokenizeResult, seqLen: number, file: string): string | undefined {
  if (!tok.skipped) return undefined;
  return `${file}: ${tok.skipped} record(s) skipped, no supervised token within --seq-len ${seqLen}` +
    `${tok.skippedReasons.length ? ` (first: ${tok.skippedReasons[0]})` : ''}; ${tok.records.length} record(s) used`;
}
