// A training run's plan: everything the run depends on, from the flags (over the defaults) or, when resuming, from
// the checkpoint, so that --resume continues the same run. Also the schedule (warm-up then cosine), the seeded order
// of the records, and which modules get adapters.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { ProbeReport, TrainParams, TrainCurvePoint } from '../../protocol/messages';
import type { ModelConfig } from '../hf/config';
import type { ModuleSpec } from '../hf/modules';
import { badInput } from '../runtime/errors';
import { permutation } from '../runtime/rng';

export const TRAIN_DEFAULTS = {
  preset: 'domlora' as const, rank: 8, alpha: 16, lr: 2e-3, batchSize: 4, gradAccum: 1, seqLen: 512, evalSplit: 0.05,
  seed: 0, weightDecay: 0, beta1: 0.9, beta2: 0.999, eps: 1e-8,
};

/** Everything a run depends on; saved in the checkpoint so --resume continues the same run. */
export interface RunPlan {
  modelFingerprint: string; targets: string[]; preset: 'domlora' | 'vanilla'; rank: number; alpha: number; lr: number;
  steps: number; batchSize: number; gradAccum: number; seqLen: number; seed: number; weightDecay: number;
  warmupSteps: number; evalEvery: number; checkpointEvery: number; beta1: number; beta2: number; eps: number;
  data: string; dataSha256: string; evalData?: string; evalSplit: number; maxSamples?: number;
}

/** The trainer's state in a checkpoint: the plan, how far it got, and what it measured. */
export interface TrainerState { plan: RunPlan; step: number; curve: TrainCurvePoint[]; evalLossBefore?: number; trainLossFirst?: number; seconds: number }

/** What a run needs to know before it reads its data: the plan's settings that do not depend on the records. */
export type RunSettings = Pick<RunPlan, 'preset' | 'rank' | 'alpha' | 'lr' | 'batchSize' | 'gradAccum' | 'seqLen' | 'seed'
  | 'weightDecay' | 'beta1' | 'beta2' | 'eps' | 'evalSplit' | 'maxSamples' | 'evalData'>;

/** The run's settings: the checkpoint's when resuming, else the flags' over the defaults; checked before any work. */
export function runSettings(params: TrainParams, state?: TrainerState): RunSettings {
  const d = TRAIN_DEFAULTS;
  const s: RunSettings = state ? state.plan : {
    preset: params.preset ?? d.preset, rank: params.rank ?? d.rank, alpha: params.alpha ?? d.alpha, lr: params.lr ?? d.lr,
    batchSize: params.batchSize ?? d.batchSize, gradAccum: params.gradAccum ?? d.gradAccum, seqLen: params.seqLen ?? d.seqLen,
    seed: params.seed ?? d.seed, weightDecay: params.weightDecay ?? d.weightDecay, beta1: d.beta1, beta2: d.beta2, eps: d.eps,
    evalSplit: params.evalSplit ?? d.evalSplit, maxSamples: params.maxSamples,
    evalData: params.evalData ? path.resolve(params.evalData) : undefined,
  };
  if (!Number.isInteger(s.rank) || s.rank < 1) throw badInput(`--rank must be a positive integer, got ${s.rank}`);
  if (!Number.isInteger(s.alpha)) throw badInput(`--alpha must be an integer (PEFT and Ollama store lora_alpha as an integer), got ${s.alpha}`);
  return s;
}

/** The whole plan, once the training records are known (the number of steps may follow from them). */
export function completePlan(s: RunSettings, params: TrainParams, a: { fingerprint: string; targets: string[]; trainCount: number;
  data: string; dataSha256: string }, state?: TrainerState): RunPlan {
  if (state) return state.plan;
  const perStep = s.batchSize * s.gradAccum;
  const steps = params.steps ?? Math.max(1, Math.ceil(((params.epochs ?? 1) * a.trainCount) / perStep));
  if (!Number.isInteger(steps) || steps < 1) throw badInput(`--steps must be a positive integer, got ${steps}`);
  return {
    ...s, modelFingerprint: a.fingerprint, targets: a.targets, steps,
    warmupSteps: params.warmupSteps ?? Math.min(Math.max(1, Math.round(0.05 * steps)), 100),
    evalEvery: params.evalEvery ?? Math.max(1, Math.round(steps / 10)),
    checkpointEvery: params.checkpointEvery ?? Math.max(1, Math.round(steps / 10)),
    data: path.resolve(a.data), dataSha256: a.dataSha256,
  };
}

/** HF's get_cosine_schedule_with_warmup: linear warm-up from 0, then cosine decay to 0. */
export function learningRate(plan: Pick<RunPlan, 'lr' | 'warmupSteps' | 'steps'>, step: number): number {
  if (step < plan.warmupSteps) return (plan.lr * step) / Math.max(1, plan.warmupSteps);
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

/** Resolves which modules get adapters: --target names, the dominant module of a report, or all (vanilla). */
export function resolveTargets(modules: ModuleSpec[], p: { targets?: string[]; fromReport?: string; preset?: string; modelDir: string; layers: number }): ModuleSpec[] {
  const byName = new Map(modules.map((m) => [m.name, m]));
  if (p.preset === 'vanilla') {
    if (p.targets?.length) throw badInput('--preset vanilla puts adapters on every module; do not combine it with --target');
    return modules;
  }
  if (p.targets?.length) {
    return p.targets.map((t) => {
      const m = byName.get(t);
      if (!m) {
        const near = modules.filter((x) => x.name.endsWith(t.split('.').pop() ?? '')).slice(0, 3).map((x) => x.name);
        throw badInput(`--target "${t}" is not a linear module of this model${near.length ? ` (e.g. ${near.join(', ')})` : ''}`);
      }
      return m;
    });
  }
  if (p.fromReport) {
    let report: ProbeReport;
    try { report = JSON.parse(fs.readFileSync(p.fromReport, 'utf8')); } catch (e) { throw badInput(`cannot read the probe report (${(e as Error).message})`, p.fromReport); }
    if (!report?.dominant?.name) throw badInput('is not a DomLoRA probe report (no "dominant")', p.fromReport);
    if (report.model?.layers !== p.layers) throw badInput(`was made for a model with ${report.model?.layers} layers; ${p.modelDir} has ${p.layers}`, p.fromReport);
    const m = byName.get(report.dominant.name);
    if (!m) throw badInput(`its dominant module "${report.dominant.name}" is not in ${p.modelDir}`, p.fromReport);
    return [m];
  }
  throw badInput('no placement: give --target MODULE or --from-report REPORT (run `domlora probe` first), or use --preset vanilla');
}
