// DomLoRA training: one LoRA adapter at the dominant module (or wherever the user points), everything else frozen;
// or vanilla LoRA on every projection of every layer, the baseline. AdamW on A and B only, warm-up then cosine
// decay, gradient accumulation, response-only loss, deterministic for a seed and backend, exact resume.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import type { ProbeReport, TrainParams, TrainResult, TrainCurvePoint } from '../../protocol/messages';
import { candidateModules, ModelConfig, ModuleSpec } from '../hf/config';
import { readDataset, requireUsable, tokenizeDataset, TokenizedRecord } from '../data/data';
import { badInput } from '../runtime/errors';
import { JobHooks, eta, runStepsAsync, throwIfCancelled, yieldToEvents } from '../runtime/jobs';
import { adapterParams, checkRank, disposeAdapter, initLoraA, loraScale, makeAdapter } from '../model/lora';
import type { LlamaModel, LoraAdapter, LoraGrads } from '../model/decoder';
import { buildPeftConfig, peftKey, writeAdapterFiles } from '../export/peft';
import { permutation } from '../runtime/rng';
import { sweepStaleTemps, writeDirAtomic } from '../runtime/atomic';
import { openJob, loadForJob, recordLengths } from '../runtime/setup';
import { encodeSafetensors, readHeader, readTensorF32 } from '../hf/safetensors';
import { evalRecords } from '../eval/evaluate';

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

interface TrainerState { plan: RunPlan; step: number; curve: TrainCurvePoint[]; evalLossBefore?: number; trainLossFirst?: number; seconds: number }

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

export async function runTrain(params: TrainParams, hooks: JobHooks = {}): Promise<TrainResult> {
  const started = Date.now();
  const outDir = path.resolve(params.out);
  const resuming = Boolean(params.resume);
  let state: TrainerState | undefined;
  let resumeTensors: Map<string, Float32Array> | undefined;
  if (resuming) {
    ({ state, tensors: resumeTensors } = readCheckpoint(path.resolve(params.resume!)));
  } else if (fs.existsSync(outDir) && !isEmptyFolder(outDir) && !params.force) {
    throw badInput('the output folder already exists; choose another --out, pass --force to replace it, or --resume it', outDir);
  }
  // The folder, backend and tokenizer first; the weights only once the data is read and the job sized from it.
  const job = await openJob(params.modelDir, params.backend, hooks);
  const { folder, tokenizer, backend } = job;
  const dataFile = state?.plan.data ?? params.data;
  const ds = readDataset(dataFile);
  const adapters = new Map<string, LoraAdapter>();
  let model: LlamaModel | undefined;
  try {
    const modules = candidateModules(folder.cfg);
    const fingerprint = modelFingerprint(folder.cfg);
    if (state && state.plan.modelFingerprint !== fingerprint) {
      throw badInput(`the checkpoint was made for another model (${state.plan.modelFingerprint}; this one is ${fingerprint})`, params.resume);
    }
    if (state && state.plan.dataSha256 !== ds.sha256) {
      throw badInput('the training data changed since the checkpoint was written (sha256 differs); resume needs the same data', dataFile);
    }
    const d = TRAIN_DEFAULTS;
    const targetsSpecs = state
      ? state.plan.targets.map((t) => modules.find((m) => m.name === t) ?? (() => { throw badInput(`checkpoint targets "${t}", not in this model`, params.resume); })())
      : resolveTargets(modules, { ...params, layers: folder.cfg.numLayers });
    const rank = state?.plan.rank ?? params.rank ?? d.rank;
    const alpha = state?.plan.alpha ?? params.alpha ?? d.alpha;
    if (!Number.isInteger(rank) || rank < 1) throw badInput(`--rank must be a positive integer, got ${rank}`);
    checkRank(rank, targetsSpecs);
    if (!Number.isInteger(alpha)) throw badInput(`--alpha must be an integer (PEFT and Ollama store lora_alpha as an integer), got ${alpha}`);

    // Data: tokenize, then hold out an evaluation split (or read --eval-data).
    const seqLen = state?.plan.seqLen ?? params.seqLen ?? d.seqLen;
    const seed = state?.plan.seed ?? params.seed ?? d.seed;
    hooks.onProgress?.({ phase: 'tokenize', done: 0, total: 1, message: 'tokenizing' });
    const maxSamples = state?.plan.maxSamples ?? params.maxSamples;
    const all = tokenizeDataset(ds, tokenizer, { seqLen, limit: maxSamples });
    requireUsable(all, seqLen, ds.file);
    let train: TokenizedRecord[] = all.records, evalSet: TokenizedRecord[] = [];
    const evalData = state?.plan.evalData ?? params.evalData;
    const evalSplit = state?.plan.evalSplit ?? params.evalSplit ?? d.evalSplit;
    if (evalData) {
      evalSet = tokenizeDataset(readDataset(evalData), tokenizer, { seqLen }).records;
    } else if (evalSplit > 0 && all.records.length >= 2) {
      if (!(evalSplit < 1)) throw badInput(`--eval-split must be in [0, 1), got ${evalSplit}`);
      const order = permutation(all.records.length, seed ^ 0x9e3779b9);
      // At least one record on each side.
      const nEval = Math.min(all.records.length - 1, Math.max(1, Math.round(evalSplit * all.records.length)));
      const evalIdx = new Set(order.slice(0, nEval));
      evalSet = all.records.filter((_, i) => evalIdx.has(i));
      train = all.records.filter((_, i) => !evalIdx.has(i));
    }
    const batchSize = state?.plan.batchSize ?? params.batchSize ?? d.batchSize;
    const gradAccum = state?.plan.gradAccum ?? params.gradAccum ?? d.gradAccum;
    const perStep = batchSize * gradAccum;
    const steps = state?.plan.steps ?? params.steps ?? Math.max(1, Math.ceil(((params.epochs ?? 1) * train.length) / perStep));
    if (!Number.isInteger(steps) || steps < 1) throw badInput(`--steps must be a positive integer, got ${steps}`);
    const plan: RunPlan = state?.plan ?? {
      modelFingerprint: fingerprint, targets: targetsSpecs.map((m) => m.name), preset: params.preset ?? d.preset, rank, alpha,
      lr: params.lr ?? d.lr, steps, batchSize, gradAccum, seqLen, seed, weightDecay: params.weightDecay ?? d.weightDecay,
      warmupSteps: params.warmupSteps ?? Math.min(Math.max(1, Math.round(0.05 * steps)), 100),
      evalEvery: params.evalEvery ?? Math.max(1, Math.round(steps / 10)), checkpointEvery: params.checkpointEvery ?? Math.max(1, Math.round(steps / 10)),
      beta1: d.beta1, beta2: d.beta2, eps: d.eps, data: path.resolve(dataFile), dataSha256: ds.sha256,
      evalData: evalData ? path.resolve(evalData) : undefined, evalSplit, maxSamples,
    };

    // Parameters and AdamW moments live in JS (float32): small, and exact to save and restore.
    const scale = loraScale(alpha, rank);
    const params32 = new Map<string, { a: Float32Array; b: Float32Array }>();
    const moments = new Map<string, Float32Array>();
    for (const m of targetsSpecs) {
      const a = resumeTensors?.get(peftKey(m.name, 'A')) ?? initLoraA(seed, m.name, rank, m.dIn);
      const b = resumeTensors?.get(peftKey(m.name, 'B')) ?? new Float32Array(m.dOut * rank);
      params32.set(m.name, { a, b });
      for (const w of ['A', 'B'] as const) {
        const n = w === 'A' ? a.length : b.length;
        moments.set(`m.${peftKey(m.name, w)}`, resumeTensors?.get(`m.${peftKey(m.name, w)}`) ?? new Float32Array(n));
        moments.set(`v.${peftKey(m.name, w)}`, resumeTensors?.get(`v.${peftKey(m.name, w)}`) ?? new Float32Array(n));
      }
    }
    const rebuild = () => {
      for (const ad of adapters.values()) disposeAdapter(ad);
      adapters.clear();
      for (const m of targetsSpecs) { const p = params32.get(m.name)!; adapters.set(m.name, makeAdapter(m, rank, scale, p.a, p.b)); }
    };
    rebuild();
    const trainable = targetsSpecs.reduce((s, m) => s + adapterParams(m, rank), 0);
    const vanilla = modules.reduce((s, m) => s + adapterParams(m, rank), 0);
    // One estimate, from the records' real lengths: it decides whether the layers are streamed, and refuses a job
    // that cannot fit before any weight is read.
    const loaded = loadForJob(job, {
      tokensPerRecord: recordLengths([...train, ...evalSet]).tokensPerRecord,
      meanTokensPerRecord: recordLengths(train).meanTokensPerRecord, taps: 'lora', lowestLayer: Math.min(...targetsSpecs.map((m) => m.layer)),
      backwardPasses: (plan.steps - (state?.step ?? 0)) * perStep, forwardPasses: evalSet.length * (1 + Math.ceil(plan.steps / plan.evalEvery)),
    }, hooks);
    const net = loaded.model;
    model = net;
    hooks.log?.('info', `training ${plan.preset} at ${plan.targets.length === 1 ? plan.targets[0] : `${plan.targets.length} modules`}: ` +
      `${trainable.toLocaleString('en-US')} trainable parameters (${((100 * trainable) / vanilla).toFixed(2)}% of vanilla LoRA), ` +
      `${train.length} train / ${evalSet.length} eval records, ${plan.steps} steps of ${perStep} records`);

    const evalLoss = async (): Promise<number | undefined> => {
      if (!evalSet.length) return undefined;
      const r = await evalRecords(net, evalSet, adapters, { signal: hooks.signal });
      return r.losses.reduce((a, b) => a + b, 0) / r.losses.length;
    };
    const curve: TrainCurvePoint[] = state?.curve ?? [];
    let step = state?.step ?? 0;
    let evalLossBefore = state?.evalLossBefore;
    let trainLossFirst = state?.trainLossFirst;
    if (!state) {
      evalLossBefore = await evalLoss();
      curve.push({ step: 0, evalLoss: evalLossBefore });
      hooks.onProgress?.({ phase: 'train', done: 0, total: plan.steps, evalLoss: evalLossBefore });
    }
    const lowestLayer = Math.min(...targetsSpecs.map((m) => m.layer));
    const lowestKinds = [...new Set(targetsSpecs.filter((m) => m.layer === lowestLayer).map((m) => m.kind))];
    // Frozen layers below the lowest adapter give every record the same output in every epoch: keep it (in host
    // memory, within a budget) instead of recomputing it at each visit.
    const belowCache = new BelowCache(lowestLayer > 0 && params.cacheLowerLayers !== false ? Math.min(1024 ** 3, 0.1 * os.totalmem()) : 0);
    const priorSeconds = state?.seconds ?? 0;
    const t0 = Date.now();
    const startStep = step;
    let tokensSeen = 0;

    const save = async (final: boolean) => {
      const st: TrainerState = { plan, step, curve, evalLossBefore, trainLossFirst, seconds: priorSeconds + (Date.now() - t0) / 1000 };
      await writeCheckpoint(outDir, st, targetsSpecs, params32, moments, {
        baseModel: path.resolve(params.modelDir), final, provenance: provenance(plan, params.fromReport),
      }, folder.cfg.numLayers);
    };

    while (step < plan.steps) {
      throwIfCancelled(hooks);
      const idx = batchIndices(train.length, perStep, plan.seed, step);
      const grads = new Map<string, LoraGrads>();
      let lossSum = 0;
      try {
        for (const i of idx) {
          await yieldToEvents();
          throwIfCancelled(hooks);
          const rec = train[i];
          const below = await belowCache.get(i, () => runStepsAsync(net.hiddenBelowSteps(rec.inputIds, lowestLayer), hooks));
          let r;
          try {
            r = await runStepsAsync(net.recordBackwardSteps(rec.inputIds, rec.lossMask, { adapters, loraGrads: grads, lowestKinds }, lowestLayer, below), hooks);
          } finally {
            below?.dispose();
          }
          lossSum += r.loss;
          tokensSeen += rec.inputIds.length;
        }
        // The batch loss is the mean of the records' losses, so each record's gradient gets weight 1 / perStep.
        const lr = learningRate(plan, step);
        const t = step + 1;
        const bc1 = 1 - Math.pow(plan.beta1, t), bc2 = 1 - Math.pow(plan.beta2, t);
        for (const m of targetsSpecs) {
          const g = grads.get(m.name)!;
          const p = params32.get(m.name)!;
          for (const [w, gt, pv] of [['A', g.da, p.a], ['B', g.db, p.b]] as const) {
            const gv = gt.dataSync() as Float32Array;
            const mv = moments.get(`m.${peftKey(m.name, w)}`)!, vv = moments.get(`v.${peftKey(m.name, w)}`)!;
            for (let k = 0; k < pv.length; k++) {
              const gk = gv[k] / perStep;
              pv[k] -= lr * plan.weightDecay * pv[k];
              mv[k] = plan.beta1 * mv[k] + (1 - plan.beta1) * gk;
              vv[k] = plan.beta2 * vv[k] + (1 - plan.beta2) * gk * gk;
              pv[k] -= (lr * (mv[k] / bc1)) / (Math.sqrt(vv[k] / bc2) + plan.eps);
            }
          }
        }
        rebuild();
        step++;
        const loss = lossSum / idx.length;
        if (trainLossFirst === undefined) trainLossFirst = loss;
        const point: TrainCurvePoint = { step, loss, lr };
        if (step % plan.evalEvery === 0 || step === plan.steps) point.evalLoss = await evalLoss();
        curve.push(point);
        const elapsed = (Date.now() - t0) / 1000;
        hooks.onProgress?.({ phase: 'train', done: step, total: plan.steps, loss, evalLoss: point.evalLoss, lr,
          tokensPerSecond: tokensSeen / Math.max(1e-3, elapsed), etaSeconds: eta(t0, step - startStep, plan.steps - startStep) });
        if (step % plan.checkpointEvery === 0 && step < plan.steps) await save(false);
      } finally {
        for (const g of grads.values()) tf.dispose([g.da, g.db]);
      }
    }
    hooks.onProgress?.({ phase: 'save', done: 0, total: 1, message: 'writing adapter' });
    await save(true);
    const trainPoints = curve.filter((c) => c.loss !== undefined);
    const evals = curve.filter((c) => c.evalLoss !== undefined);
    return {
      adapterDir: outDir, preset: plan.preset, targets: plan.targets, rank, alpha, trainableParams: trainable, vanillaParams: vanilla,
      ratioToVanilla: trainable / vanilla, steps: plan.steps, evalLossBefore, evalLossAfter: evals.length ? evals[evals.length - 1].evalLoss : undefined,
      trainLossFirst, trainLossLast: trainPoints.length ? trainPoints[trainPoints.length - 1].loss : undefined, curve,
      backend: backend.backend, seconds: priorSeconds + (Date.now() - started) / 1000,
    };
  } finally {
    for (const ad of adapters.values()) disposeAdapter(ad);
    model?.dispose();
  }
}

function provenance(plan: RunPlan, fromReport?: string): Record<string, string> {
  const meta: Record<string, string> = {
    'domlora.version': typeof DOMLORA_VERSION === 'string' ? DOMLORA_VERSION : 'dev',
    'domlora.preset': plan.preset, 'domlora.targets': plan.targets.join(','), 'domlora.dataset_sha256': plan.dataSha256,
    'domlora.steps': String(plan.steps), 'domlora.seed': String(plan.seed), 'domlora.lr': String(plan.lr),
  };
  if (fromReport) {
    try {
      const r = JSON.parse(fs.readFileSync(fromReport, 'utf8')) as ProbeReport;
      meta['domlora.page_share'] = String(r.dominant.share);
      meta['domlora.page_stability'] = String(r.dominant.stability);
      meta['domlora.probe_dataset_sha256'] = r.config.datasetSha256;
    } catch { /* provenance is best effort; the report was validated before training */ }
  }
  return meta;
}

/** The adapter folder: PEFT files at its top, and checkpoint/ with optimizer moments and the trainer state. */
async function writeCheckpoint(dir: string, st: TrainerState, specs: ModuleSpec[], params32: Map<string, { a: Float32Array; b: Float32Array }>,
  moments: Map<string, Float32Array>, o: { baseModel: string; final: boolean; provenance: Record<string, string> }, numLayers: number): Promise<void> {
  const cfg = buildPeftConfig(specs, numLayers, st.plan.rank, st.plan.alpha, o.baseModel);
  await writeDirAtomic(dir, (tmp) => {
    writeAdapterFiles(tmp, specs.map((s) => ({ spec: s, ...params32.get(s.name)! })), cfg, { ...o.provenance, 'domlora.step': String(st.step) });
    const ck = path.join(tmp, 'checkpoint');
    fs.mkdirSync(ck);
    const list = [...moments.entries()].map(([name, data]) => ({ name, shape: [data.length], data }));
    fs.writeFileSync(path.join(ck, 'optimizer.safetensors'), encodeSafetensors(list, { format: 'domlora-adamw' }));
    fs.writeFileSync(path.join(ck, 'trainer_state.json'), JSON.stringify(st, null, 1) + '\n');
  });
}

/** An empty folder (one the caller reserved for the output) holds nothing to lose. */
function isEmptyFolder(dir: string): boolean {
  try { return fs.statSync(dir).isDirectory() && fs.readdirSync(dir).length === 0; } catch { return false; }
}

function readCheckpoint(dir: string): { state: TrainerState; tensors: Map<string, Float32Array> } {
  // A writer killed between its two renames leaves the last complete copy aside: put it back first.
  sweepStaleTemps(path.dirname(dir), path.basename(dir));
  const stFile = path.join(dir, 'checkpoint', 'trainer_state.json');
  if (!fs.existsSync(stFile)) throw badInput('has no checkpoint/trainer_state.json: not a DomLoRA training folder', dir);
  let state: TrainerState;
  try { state = JSON.parse(fs.readFileSync(stFile, 'utf8')); } catch (e) { throw badInput(`invalid JSON (${(e as Error).message})`, stFile); }
  if (!state?.plan?.modelFingerprint) throw badInput('is not a DomLoRA trainer state', stFile);
  const tensors = new Map<string, Float32Array>();
  const opt = readHeader(path.join(dir, 'checkpoint', 'optimizer.safetensors'));
  for (const name of opt.tensors.keys()) tensors.set(name, readTensorF32(opt, name));
  const ad = readHeader(path.join(dir, 'adapter_model.safetensors'));
  for (const name of ad.tensors.keys()) tensors.set(name, readTensorF32(ad, name));
  return { state, tensors };
}


/** Layer inputs below the lowest adapter, per training record, in host memory up to a byte budget. */
class BelowCache {
  private readonly rows = new Map<number, { data: Float32Array; shape: [number, number] }>();
  private bytes = 0;
  constructor(private readonly budget: number) {}

  /** The cached input for record i, or `compute()` (kept when it fits); undefined when caching is off. */
  async get(i: number, compute: () => Promise<tf.Tensor2D>): Promise<tf.Tensor2D | undefined> {
    if (this.budget <= 0) return undefined;
    const hit = this.rows.get(i);
    if (hit) return tf.tensor2d(hit.data, hit.shape);
    const t = await compute();
    if (this.bytes + t.size * 4 <= this.budget) {
      this.rows.set(i, { data: new Float32Array(t.dataSync()), shape: t.shape as [number, number] }); // a copy, not a view of the heap
      this.bytes += t.size * 4;
    }
    return t;
  }
}
