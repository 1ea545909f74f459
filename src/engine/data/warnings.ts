// The one warning every job gives when tokenization dropped records (eval, probe, train and its --eval-data alike),
// so a dataset that mostly does not fit the sequence length is never trained or measured on silently.
import type { JobHooks } from '../runtime/jobs';
import type { TokenizeResult } from './tokenize';

/** Warns (through the job's log) how many records were skipped, why the first one was, and how many are left. */
export function warnSkipped(tok: TokenizeResult, seqLen: number, file: string, hooks: JobHooks): void {
  const w = skippedWarning(tok, seqLen, file);
  if (w) hooks.log?.('warn', w);
}

/** The sentence warnSkipped says, or undefined when no record was skipped (the data summary carries it too). */
export function skippedWarning(tok: TokenizeResult, seqLen: number, file: string): string | undefined {
  if (!tok.skipped) return undefined;
  return `${file}: ${tok.skipped} record(s) skipped, no supervised token within --seq-len ${seqLen}` +
    `${tok.skippedReasons.length ? ` (first: ${tok.skippedReasons[0]})` : ''}; ${tok.records.length} record(s) used`;
}
