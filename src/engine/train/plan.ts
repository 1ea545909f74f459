// A training run's plan: everything the run depends on, from the flags (over the defaults) or, when resuming, from
// the checkpoint, so that --resume continues the same run. Also the schedule (warm-up then cosine), the seeded order
// of the records, which modules get adapters, and what a probe report passes on to the run it places.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { ProbeReport, TrainParams, TrainCurvePoint } from '../../protocol/messages';
import { DEFAULTS, limitProblem, type LimitKey } from '../../protocol/params';
import type { ModelConfig } from '../hf/config';
import type { ModuleSpec } from '../hf/modules';
import { badInput } from '../runtime/errors';
import type { JobHooks } from '../runtime/jobs';
import { checkLimits, jobSeqLen } from '../runtime/limits';
import { nearest } from '../../protocol/format';
import { permutation } from '../runtime/rng';

/** The defaults of a run: the protocol's (one source for the CLI, the extension and the demo), and AdamW's. */
export const TRAIN_DEFAULTS = {
  preset: 'domlora' as const, rank: DEFAULTS.rank, alpha: DEFAULTS.alpha, lr: DEFAULTS.lr, steps: DEFAULTS.steps,
  batchSize: DEFAULTS.batchSize, gradAccum: DEFAULTS.gradAccum, seqLen: DEFAULTS.seqLen, evalSplit: DEFAULTS.evalSplit,
  seed: DEFAULTS.seed, weightDecay: DEFAULTS.weightDecay, beta1: 0.9, beta2: 0.999, eps: 1e-8,
};

/** The numeric params of a run, checked against the protocol's table before anything starts. */
const TRAIN_LIMITS: readonly LimitKey[] = ['rank', 'alpha', 'lr', 'steps', 'epochs', 'batchSize', 'gradAccum', 'seqLen', 'seed',
  'evalSplit', 'evalEvery', 'checkpointEvery', 'warmupSteps', 'weightDecay', 'maxSamples', 'gpuMemoryGiB'];

/** Everything a run depends on; saved in the checkpoint so --resume continues the same run. */
export interface RunPlan {
  modelFingerprint: string; targets: string[]; preset: 'domlora' | 'vanilla'; rank: number; alpha: number; lr: number;
  steps: number; batchSize: number; gradAccum: number; seqLen: number; seed: number; weightDecay: number;
  warmupSteps: number; evalEvery: number; checkpointEvery: number; beta1: number; beta2: number; eps: number;
  data: string; dataSha256: string; evalData?: string; evalSplit: number; maxSamples?: number;
  /** The seed of the held-out split when it is not `seed` (the placement check holds it fixed across its seeds). */
  splitSeed?: number;
}

/** The trainer's state in a checkpoint: the plan, how far it got, and what it measured. */
export interface TrainerState { plan: RunPlan; step: number; curve: TrainCurvePoint[]; evalLossBefore?: number; trainLossFirst?: number; seconds: number }

/** What a run needs to know before it reads its data: the plan's settings that do not depend on the records. */
export type RunSettings = Pick<RunPlan, 'preset' | 'rank' | 'alpha' | 'lr' | 'batchSize' | 'gradAccum' | 'seqLen' | 'seed'
  | 'weightDecay' | 'beta1' | 'beta2' | 'eps' | 'evalSplit' | 'maxSamples' | 'evalData' | 'splitSeed'>;

/** The checks that need nothing but the params: every number in its range, and flags that cannot go together. */
export function checkTrainParams(params: TrainParams): void {
  checkLimits(params, TRAIN_LIMITS);
  const splitProblem = params.splitSeed === undefined ? undefined : limitProblem('seed', params.splitSeed);
  if (splitProblem) throw badInput(`the split seed: ${splitProblem}`);
  if (params.alpha !== undefined && !Number.isInteger(params.alpha)) {
    throw badInput(`--alpha must be an integer for training (PEFT and Ollama store lora_alpha as an integer), got ${params.alpha}`);
  }
  if (params.steps !== undefined && params.epochs !== undefined) throw badInput('give --steps or --epochs, not both');
  if (params.resume && params.epochs !== undefined) {
    throw badInput('--epochs cannot be combined with --resume: the checkpoint fixes the number of steps; give --steps N to extend the run');
  }
}

/** A fresh run's settings: the flags' over the defaults; the sequence length also from the report, and the model. */
export function runSettings(params: TrainParams, cfg: ModelConfig, configFile: string, report: ProbeReport | undefined, hooks: JobHooks): RunSettings {
  const d = TRAIN_DEFAULTS;
  return {
    preset: params.preset ?? d.preset, rank: params.rank ?? d.rank, alpha: params.alpha ?? d.alpha, lr: params.lr ?? d.lr,
    batchSize: params.batchSize ?? d.batchSize, gradAccum: params.gradAccum ?? d.gradAccum,
    // A placement measured at one sequence length is trained at the same one unless the user says otherwise.
    seqLen: jobSeqLen(cfg, configFile, params.seqLen ?? report?.config.seqLen, hooks),
    seed: params.seed ?? d.seed, weightDecay: params.weightDecay ?? d.weightDecay, beta1: d.beta1, beta2: d.beta2, eps: d.eps,
    evalSplit: params.evalSplit ?? d.evalSplit, maxSamples: params.maxSamples,
    evalData: params.evalData ? path.resolve(params.evalData) : undefined,
    ...(params.splitSeed !== undefined && params.splitSeed !== (params.seed ?? d.seed) ? { splitSeed: params.splitSeed } : {}),
  };
}

/** The flags a resumed run may repeat only with the checkpoint's value, by their key in the plan. */
const FIXED_ON_RESUME: readonly (keyof RunPlan & keyof TrainParams)[] = ['preset', 'rank', 'alpha', 'lr', 'batchSize', 'gradAccum',
  'seqLen', 'seed', 'weightDecay', 'warmupSteps', 'evalEvery', 'checkpointEvery', 'evalSplit', 'maxSamples'];
const FLAG: Partial<Record<keyof TrainParams, string>> = {
  batchSize: 'batch-size', gradAccum: 'grad-accum', seqLen: 'seq-len', weightDecay: 'weight-decay', warmupSteps: 'warmup-steps',
  evalEvery: 'eval-every', checkpointEvery: 'checkpoint-every', evalSplit: 'eval-split', maxSamples: 'max-samples', evalData: 'eval-data',
  targets: 'target', fromReport: 'from-report',
};
const flagOf = (k: keyof TrainParams) => `--${FLAG[k] ?? k}`;

/**
 * The plan of a resumed run: the checkpoint's. A flag that would change it is refused, naming the checkpoint's value,
 * rather than ignored; the one change allowed is more steps (`--steps N` above the checkpoint's), which extends the
 * run: its remaining steps follow the schedule of an N-step run. `stateFile` names the checkpoint in messages.
 */
export function resumePlan(params: TrainParams, state: TrainerState, stateFile: string, targetsOfReport?: string[]): RunPlan {
  const plan = state.plan;
  const conflict = (flag: string, given: unknown, theirs: unknown) => badInput(`${flag} ${String(given)} conflicts with the checkpoint's ` +
    `${String(theirs)}: --resume continues the same run; leave ${flag} out (or start a new run with another --out)`, stateFile);
  for (const k of FIXED_ON_RESUME) {
    const given = params[k];
    if (given !== undefined && given !== plan[k]) throw conflict(flagOf(k), given, plan[k] ?? 'none');
  }
  if (params.evalData !== undefined && path.resolve(params.evalData) !== plan.evalData) throw conflict('--eval-data', path.resolve(params.evalData), plan.evalData ?? 'none');
  const sameTargets = (t: string[]) => t.length === plan.targets.length && t.every((x) => plan.targets.includes(x));
  if (params.targets?.length && !sameTargets(params.targets)) throw conflict('--target', params.targets.join(','), plan.targets.join(','));
  if (targetsOfReport && !sameTargets(targetsOfReport)) throw conflict(`--from-report (dominant module)`, targetsOfReport.join(','), plan.targets.join(','));
  if (params.steps === undefined || params.steps === plan.steps) return plan;
  if (params.steps < plan.steps) {
    throw badInput(`--steps ${params.steps} is fewer than the checkpoint's ${plan.steps}: a resumed run can be extended, not shortened`, stateFile);
  }
  return { ...plan, steps: params.steps };
}

/** A resumed run must have steps left to take (checked once its flags and data are known to be the checkpoint's). */
export function checkStepsLeft(state: TrainerState, plan: RunPlan, stateFile: string): void {
  if (state.step >= plan.steps) {
    throw badInput(`the run is finished (${state.step} of ${plan.steps} steps); pass --steps N (more than ${plan.steps}) to extend it`, stateFile);
  }
}

/** The whole plan of a fresh run, once the training records are known (the number of steps may follow from them). */
export function completePlan(s: RunSettings, params: TrainParams, a: { fingerprint: string; targets: string[]; trainCount: number;
  data: string; dataSha256: string }): RunPlan {
  const perStep = s.batchSize * s.gradAccum;
  const steps = params.steps ?? (params.epochs !== undefined ? Math.max(1, Math.ceil((params.epochs * a.trainCount) / perStep)) : TRAIN_DEFAULTS.steps);
  return {
    ...s, modelFingerprint: a.fingerprint, targets: a.targets, steps,
    warmupSteps: params.warmupSteps ?? Math.min(Math.max(1, Math.round(0.05 * steps)), 100),
    evalEvery: params.evalEvery ?? Math.max(1, Math.round(steps / 10)),
    checkpointEvery: params.checkpointEvery ?? Math.max(1, Math.round(steps / 10)),
    data: path.resolve(a.data), dataSha256: a.dataSha256,
  };
}

/**
 * The learning rate of optimizer step `step` (0-based): a linear warm-up over the first `warmupSteps` steps, then
 * transformers' cosine decay (get_cosine_schedule_with_warmup). The warm-up counts the step being taken, lr (s + 1) / W,
 * so it ends at the full rate on step W - 1; transformers' lambda gives step s the rate lr s / W, which is 0 for the
 * first step (a 1-step run then changes nothing). The decay is transformers' own: lr at step W, falling towards 0,
 * which it would reach one step after the last, so every step of a run of any length moves the adapter.
 */
export function learningRate(plan: Pick<RunPlan, 'lr' | 'warmupSteps' | 'steps'>, step: number): number {
  if (step < plan.warmupSteps) return (plan.lr * (step + 1)) / plan.warmupSteps;
  const progress = (step - plan.warmupSteps) / Math.max(1, plan.steps - plan.warmupSteps);
  return plan.lr * Math.max(0, 0.5 * (1 + Math.cos(Math.PI * progress)));
}

/** The records of optimizer step `step` (0-based): epochs are seeded permutations, consumed in order. */
export function batchIndices(nTrain: number, perStep: number, seed: number, step: number): number[] {
  const out: number[] = [];
  let pos = step * perStep;
  let epoch = -1, perm: number[] = [];
  for (let k = 0; k < perStep; k++, pos++) {
    const e = Math.floor(pos / nTrain);
    if (e !== epoch) { epoch = e; perm = permutation(nTrain, seed * 1000003 + e); }
    out.push(perm[pos % nTrain]);
  }
  return out;
}

export function modelFingerprint(c: ModelConfig): string {
  return `${c.modelType}:L${c.numLayers}:H${c.hiddenSize}:I${c.intermediateSize}:h${c.numHeads}/${c.numKvHeads}x${c.headDim}:V${c.vocabSize}`;
}

/** Reads and checks a probe report named by --from-report (before any work: a bad one costs nothing). */
export function readProbeReport(file: string, layers: number, modelDir: string): ProbeReport {
  let report: ProbeReport;
  try { report = JSON.parse(fs.readFileSync(file, 'utf8')); } catch (e) { throw badInput(`cannot read the probe report (${(e as Error).message})`, file); }
  if (!report?.dominant?.name) throw badInput('is not a DomLoRA probe report (no "dominant")', file);
  if (report.model?.layers !== layers) throw badInput(`was made for a model with ${report.model?.layers} layers; ${modelDir} has ${layers}`, file);
  return report;
}

/**
 * What a report passes on to the run it places, said when it does not hold: a placement measured on other data, at
 * another sequence length, or one the probe's own bootstrap did not settle (the threshold --until-stable stops at).
 */
export function reportWarnings(report: ProbeReport, file: string, run: { seqLen: number; dataSha256: string; data: string; placedByReport: boolean },
  stableAt: number, hooks: JobHooks): void {
  const warn = (m: string) => hooks.log?.('warn', `${file}: ${m}`);
  if (report.config?.datasetSha256 && report.config.datasetSha256 !== run.dataSha256) {
    warn(`the probe measured ${report.config.dataset}, and this run trains on ${run.data} (another sha256): the dominant module of ` +
      'other data may not be this data\'s; probe this dataset to place the adapter for it');
  }
  if (report.config?.seqLen !== undefined && report.config.seqLen !== run.seqLen) {
    warn(`the probe measured records cut to ${report.config.seqLen} tokens, and this run trains on ${run.seqLen}: the placement may differ`);
  }
  const d = report.dominant;
  if (run.placedByReport && typeof d.stability === 'number' && d.stability < stableAt) {
    const pct = (x: number) => `${(100 * x).toFixed(1)}%`;
    warn(`the dominant module ${d.name} won only ${pct(d.stability)} of the probe's bootstrap resamples (runner-up ${d.runnerUp.name} ` +
      `won ${pct(d.runnerUp.wins)}): the placement is not settled; probe more records (--samples, --until-stable) or pick with --target`);
  }
}

/** Resolves which modules get adapters: --target names, the dominant module of a report, or all (vanilla). */
export function resolveTargets(modules: ModuleSpec[], p: { targets?: string[]; report?: ProbeReport; reportFile?: string; preset?: string; modelDir: string }): ModuleSpec[] {
  const byName = new Map(modules.map((m) => [m.name, m]));
  if (p.preset === 'vanilla') {
    if (p.targets?.length) throw badInput('--preset vanilla puts adapters on every module; do not combine it with --target');
    return modules;
  }
  if (p.targets?.length) {
    return p.targets.map((t) => {
      const m = byName.get(t);
      if (!m) {
        // The nearest names (a typo, a layer past the last), else a few of the same kind, else a few at all.
        const names = modules.map((x) => x.name);
        const sameKind = modules.filter((x) => x.name.endsWith(t.split('.').pop() ?? '')).map((x) => x.name);
        const near = nearest(t, names);
        const hint = near.length ? `; did you mean ${near.join(', ')}?` : `; e.g. ${(sameKind.length ? sameKind : names).slice(0, 3).join(', ')}`;
        throw badInput(`--target "${t}" is not a linear module of this model${hint} (it has ${names.length}, from ${names[0]} to ${names[names.length - 1]})`);
      }
      return m;
    });
  }
  if (p.report) {
    const m = byName.get(p.report.dominant.name);
    if (!m) throw badInput(`its dominant module "${p.report.dominant.name}" is not in ${p.modelDir}`, p.reportFile);
    return [m];
  }
  throw badInput('no placement: give --target MODULE or --from-report REPORT (run `domlora probe` first), or use --preset vanilla');
}
