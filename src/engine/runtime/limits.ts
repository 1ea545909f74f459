// The engine's side of the parameter table (src/protocol/params.ts): every job checks the numbers it receives before
// any work, whoever sent them (the CLI checks its flags first; the extension's settings and scripts reach the
// engine unchecked), and sizes its records to the model's context.
import { DEFAULTS, limitProblem, type LimitKey } from '../../protocol/params';
import type { ModelConfig } from '../hf/config';
import { badInput } from './errors';
import type { JobHooks } from './jobs';

/** Throws a bad-input error naming the flag (and the setting) of the first parameter out of its range. */
export function checkLimits(params: object, keys: readonly LimitKey[]): void {
  const values = params as Record<string, unknown>;
  for (const key of keys) {
    if (values[key] === undefined) continue;
    const problem = limitProblem(key, values[key], true);
    if (problem) throw badInput(problem);
  }
}

/**
 * The sequence length a job runs at: the one asked for, else the smaller of the default (512) and the model's
 * context (`max_position_embeddings`; a sliding window limits what a query sees, not where a record may go). A longer
 * explicit one is refused where positions are a learned table (GPT-2 has no row for position 1024 of a 1024-token
 * model), and warned about where they are rotary: RoPE computes any position, and scaled RoPE (dynamic, YaRN) is
 * built to run past the trained length, but beyond it the model is measured and trained where it never learned.
 */
export function jobSeqLen(cfg: ModelConfig, configFile: string, requested: number | undefined, hooks: JobHooks = {}): number {
  const context = cfg.maxPositionEmbeddings;
  if (requested === undefined) return Math.min(DEFAULTS.seqLen, context);
  checkLimits({ seqLen: requested }, ['seqLen']);
  if (requested <= context) return requested;
  if (cfg.positions === 'learned') {
    throw badInput(`--seq-len ${requested} is longer than the model's context: max_position_embeddings is ${context} and its ` +
      `learned position table has no row beyond that; use --seq-len ${context} or less`, configFile);
  }
  hooks.log?.('warn', `--seq-len ${requested} is longer than the model's context (max_position_embeddings ${context} in ${configFile}): ` +
    `tokens past position ${context} are where the model was never trained`);
  return requested;
}
