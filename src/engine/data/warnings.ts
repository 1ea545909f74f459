// The one warning every job gives when tokenization dropped records (eval, probe, train and its --eval-data alike),
// so a dataset that mostly does not fit the sequence length is never trained or measured on silently.
import type { JobHooks } from '../runtime/jobs';
import type { TokenizeResult } from './tokenize';

/** Warns (through the job's log) how many records were skipped, why the first one was, and how many are left. */
export function warnSkipped(tok: TokenizeResult, seqLen: number, file: string, hooks: JobHooks): void {
  if (!tok.skipped) return;
  hooks.log?.('warn', `${file}: ${tok.skipped} record(s) skipped, no supervised token within --seq-len ${seqLen}` +
    `${tok.skippedReasons.length ? ` (first: ${tok.skippedReasons[0]})` : ''}; ${tok.records.length} record(s) used`);
}
