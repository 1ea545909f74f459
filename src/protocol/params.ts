// The numeric parameters of every job, declared once: their defaults and the values they may take, with the CLI flag
// and the VS Code setting that set them. The CLI checks its flags against this table before it starts anything, the
// engine checks the params it receives (from the CLI, the extension or a script) against the same table, and the
// extension's settings (package.json) declare the same defaults and bounds, which a test holds them to. It lives in the
// protocol because every side reads it and the extension host may not import the engine. Plain data and pure
// functions; it imports nothing.

/** The values one numeric parameter may take. */
export interface Limit {
  /** The CLI flag, without its dashes. */
  readonly flag: string;
  /** The VS Code setting, when the extension lets the user set it. */
  readonly setting?: string;
  readonly integer?: boolean;
  readonly min: number;
  readonly max: number;
  /** The bound itself is not allowed (a learning rate must be above 0, an eval split below 1). */
  readonly minExclusive?: boolean;
  readonly maxExclusive?: boolean;
}

/**
 * Every numeric parameter, keyed by its name in the params (ProbeParams, TrainParams, ...). The upper bounds are
 * where a value stops making sense, not what a machine can do: a learning rate above 1 wrecks AdamW's update (each
 * step moves every weight by about the learning rate), a rank above 1024 is no longer low-rank for any model we run.
 */
export const LIMITS = {
  rank: { flag: 'rank', setting: 'domlora.rank', integer: true, min: 1, max: 1024 },
  alpha: { flag: 'alpha', setting: 'domlora.alpha', min: 0, minExclusive: true, max: 65536 },
  lr: { flag: 'lr', setting: 'domlora.learningRate', min: 0, minExclusive: true, max: 1 },
  steps: { flag: 'steps', setting: 'domlora.steps', integer: true, min: 1, max: 10_000_000 },
  epochs: { flag: 'epochs', min: 0, minExclusive: true, max: 1000 },
  batchSize: { flag: 'batch-size', integer: true, min: 1, max: 1024 },
  gradAccum: { flag: 'grad-accum', integer: true, min: 1, max: 1024 },
  seqLen: { flag: 'seq-len', setting: 'domlora.seqLen', integer: true, min: 2, max: 1_048_576 },
  samples: { flag: 'samples', setting: 'domlora.samples', integer: true, min: 1, max: 65536 },
  maxSamples: { flag: 'max-samples', integer: true, min: 1, max: 100_000_000 },
  seed: { flag: 'seed', integer: true, min: 0, max: 2 ** 31 - 1 },
  /** Runs per placement in a placement check (seeds seed .. seed + N - 1). */
  seeds: { flag: 'seeds', integer: true, min: 1, max: 100 },
  bootstrap: { flag: 'bootstrap', integer: true, min: 1, max: 100_000 },
  evalSplit: { flag: 'eval-split', min: 0, max: 1, maxExclusive: true },
  evalEvery: { flag: 'eval-every', integer: true, min: 1, max: 10_000_000 },
  checkpointEvery: { flag: 'checkpoint-every', integer: true, min: 1, max: 10_000_000 },
  warmupSteps: { flag: 'warmup-steps', integer: true, min: 0, max: 10_000_000 },
  weightDecay: { flag: 'weight-decay', min: 0, max: 1 },
  maxNewTokens: { flag: 'max-new-tokens', integer: true, min: 1, max: 1_048_576 },
  threads: { flag: 'threads', integer: true, min: 1, max: 256 },
  gpus: { flag: 'gpus', integer: true, min: 1, max: 4096 },
  /** The GPU memory a webgpu job plans for (WebGPU does not report a device's memory). */
  gpuMemoryGiB: { flag: 'gpu-memory', setting: 'domlora.gpuMemoryGiB', min: 0, minExclusive: true, max: 4096 },
} as const satisfies Record<string, Limit>;

export type LimitKey = keyof typeof LIMITS;

/**
 * The defaults, one source for the CLI, the extension (package.json's settings, held to these by a test) and the
 * demo. `seqLen` is a ceiling: a job runs at the smaller of it and the model's context (max_position_embeddings).
 */
export const DEFAULTS: Readonly<Record<'rank' | 'alpha' | 'lr' | 'steps' | 'batchSize' | 'gradAccum' | 'seqLen' | 'evalSplit' | 'seed'
  | 'weightDecay' | 'samples' | 'bootstrap' | 'maxNewTokens' | 'gpus' | 'gpuMemoryGiB', number>> = {
  rank: 8, alpha: 16, lr: 2e-3, steps: 100, batchSize: 4, gradAccum: 1, seqLen: 512, evalSplit: 0.05, seed: 0, weightDecay: 0,
  samples: 32, bootstrap: 200, maxNewTokens: 20, gpus: 8, gpuMemoryGiB: 8,
};

/** The fewest held-out records an eval split may have: a loss over fewer says little about the adapter. */
export const MIN_EVAL_RECORDS = 4;

/** "an integer from 1 to 1024", "a number above 0 and at most 1", "a number from 0 to below 1". */
export function describeLimit(l: Limit): string {
  const kind = l.integer ? 'an integer' : 'a number';
  if (!l.minExclusive && !l.maxExclusive) return `${kind} from ${fmt(l.min)} to ${fmt(l.max)}`;
  const lower = l.minExclusive ? `above ${fmt(l.min)}` : `at least ${fmt(l.min)}`;
  const upper = l.maxExclusive ? `below ${fmt(l.max)}` : `at most ${fmt(l.max)}`;
  return `${kind} ${lower} and ${upper}`;
}

function fmt(n: number): string {
  return Number.isInteger(n) && Math.abs(n) >= 1e4 ? n.toLocaleString('en-US') : String(n);
}

/** Whether `value` is allowed for `key`. */
export function withinLimit(key: LimitKey, value: unknown): value is number {
  const l: Limit = LIMITS[key];
  if (typeof value !== 'number' || !Number.isFinite(value)) return false;
  if (l.integer && !Number.isInteger(value)) return false;
  if (l.minExclusive ? value <= l.min : value < l.min) return false;
  if (l.maxExclusive ? value >= l.max : value > l.max) return false;
  return true;
}

/**
 * What is wrong with `value` for `key`, or undefined when nothing is. Names the flag, and the setting too when
 * `withSetting` (the engine's message, which may be answering the extension): `--lr (setting domlora.learningRate)
 * must be a number above 0 and at most 1, got 0`.
 */
export function limitProblem(key: LimitKey, value: unknown, withSetting = false): string | undefined {
  if (withinLimit(key, value)) return undefined;
  const l: Limit = LIMITS[key];
  const name = `--${l.flag}${withSetting && l.setting ? ` (setting ${l.setting})` : ''}`;
  const got = typeof value === 'string' ? JSON.stringify(value) : String(value);
  return `${name} must be ${describeLimit(l)}, got ${got}`;
}
