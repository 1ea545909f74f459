// DomLoRA training: one LoRA adapter at the dominant module (or wherever the user points), everything else frozen;
// or vanilla LoRA on every projection of every layer, the baseline. AdamW on A and B only, warm-up then cosine
// decay, gradient accumulation, response-only loss, deterministic for a seed and backend, exact resume.
// The plan (plan.ts), the optimizer (adamw.ts) and the checkpoint (checkpoint.ts) are parts; this file is the loop.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import type { DataSummary, TrainParams, TrainResult, TrainCurvePoint } from '../../protocol/messages';
import { candidateModules, type ModuleSpec } from '../hf/modules';
import type { ModelTokenizer } from '../hf/tokenizer';
import { readDataset, type Dataset } from '../data/read';
import { requireUsable, tokenizeDataset, type TokenizedRecord } from '../data/tokenize';
import { MIN_EVAL_RECORDS } from '../../protocol/params';
import { announceData, summariseData } from '../data/summary';
import { badInput } from '../runtime/errors';
import { claimOutput } from '../runtime/outputs';
import { PROBE_DEFAULTS } from '../probe/probe';
import { JobHooks, eta, runStepsAsync, throwIfCancelled, yieldToEvents } from '../runtime/jobs';
import { adapterParams, checkRank, disposeAdapter, initLoraA, loraScale, makeAdapter } from '../model/lora';
import type { Decoder } from '../model/decoder';
import { backwardLayerMajor } from '../model/schedule';
import type { LoraAdapter, LoraGrads } from '../model/types';
import { peftKey } from '../export/peft';
import { permutation } from '../runtime/rng';
import { openInputs, startBackend, loadForJob, recordLengths } from '../runtime/setup';
import { evalRecords } from '../eval/evaluate';
import { adamwStep } from './adamw';
import { provenance, readCheckpoint, writeCheckpoint } from './checkpoint';
import { batchIndices, checkStepsLeft, checkTrainParams, completePlan, learningRate, modelFingerprint, readProbeReport, reportWarnings, resolveTargets,
  resumePlan, runSettings, type RunPlan, type RunSettings, type TrainerState } from './plan';

export { TRAIN_DEFAULTS, learningRate, batchIndices, modelFingerprint, resolveTargets } from './plan';
export type { RunPlan } from './plan';

export async function runTrain(params: TrainParams, hooks: JobHooks = {}): Promise<TrainResult> {
  const started = Date.now();
  // Everything that can be checked without the model, before anything is loaded or written: the numbers, the
  // checkpoint and the flags that would change it, the output folder.
  checkTrainParams(params);
  const resumeDir = params.resume ? path.resolve(params.resume) : undefined;
  const resumed = resumeDir ? readCheckpoint(resumeDir) : undefined;
  const stateFile = resumeDir ? path.join(resumeDir, 'checkpoint', 'trainer_state.json') : '';
  const outDir = path.resolve(params.out);
  // Resuming in place rewrites the run's own folder; any other output follows the rule of every output.
  const claim = resumeDir && outDir === resumeDir ? undefined : claimOutput(outDir, 'adapter', { force: params.force, root: params.outRoot });
  let lora: LoraState | undefined;
  let model: Decoder | undefined;
  try {
    // The folder and tokenizer first, then every input checked against them (report, checkpoint, data, targets), the
    // backend only then, and the weights only once the data is read and the job sized from it.
    const inputs = openInputs(params.modelDir);
    const { folder, tokenizer } = inputs;
    const configFile = path.join(folder.dir, 'config.json');
    const report = params.fromReport ? readProbeReport(params.fromReport, folder.cfg.numLayers, params.modelDir) : undefined;
    const modules = candidateModules(folder.cfg);
    const fingerprint = modelFingerprint(folder.cfg);
    let state = resumed?.state;
    if (state && state.plan.modelFingerprint !== fingerprint) {
      throw badInput(`the checkpoint was made for another model (${state.plan.modelFingerprint}; this one is ${fingerprint})`, params.resume);
    }
    if (state) {
      const plan = resumePlan(params, state, stateFile, report && params.preset !== 'vanilla' && !params.targets?.length ? [report.dominant.name] : undefined);
      state = { ...state, plan };
    }
    const dataFile = resumeData(params, state, stateFile);
    const ds = readDataset(dataFile);
    if (state && state.plan.dataSha256 !== ds.sha256) {
      throw badInput(params.data
        ? `--data is not the data the checkpoint was trained on (${state.plan.data}; the sha256 differs): --resume continues the same run on the same data`
        : 'the training data changed since the checkpoint was written (sha256 differs); resume needs the same data', dataFile);
    }
    if (state) {
      checkStepsLeft(state, state.plan, stateFile);
      // The same data may have moved: the plan records where it is now.
      state = { ...state, plan: { ...state.plan, data: path.resolve(dataFile) } };
    }
    const targets = state
      ? state.plan.targets.map((t) => modules.find((m) => m.name === t) ?? (() => { throw badInput(`checkpoint targets "${t}", not in this model`, params.resume); })())
      : resolveTargets(modules, { ...params, report, reportFile: params.fromReport });
    const settings: RunSettings = state ? state.plan : runSettings(params, folder.cfg, configFile, report, hooks);
    checkRank(settings.rank, targets);
    if (report && params.fromReport && !state) {
      reportWarnings(report, params.fromReport, { seqLen: settings.seqLen, dataSha256: ds.sha256, data: path.resolve(dataFile),
        placedByReport: !params.targets?.length && params.preset !== 'vanilla' }, PROBE_DEFAULTS.stabilityThreshold, hooks);
    }
    hooks.onProgress?.({ phase: 'tokenize', done: 0, total: 1, message: 'tokenizing' });
    const { train, evalSet, data, evalData } = splitRecords(ds, tokenizer, settings, params.evalSplit !== undefined, hooks);
    const job = await startBackend(inputs, params.backend, hooks);
    const { backend } = job;
    const plan = state ? state.plan : completePlan(settings, params, { fingerprint, targets: targets.map((m) => m.name), trainCount: train.length, data: dataFile, dataSha256: ds.sha256 });
    lora = new LoraState(targets, plan, resumed?.tensors);
    const perStep = plan.batchSize * plan.gradAccum;
    // One estimate, from the records' real lengths: it decides whether the layers are streamed, and refuses a job
    // that cannot fit before any weight is read.
    const loaded = loadForJob(job, {
      tokensPerRecord: recordLengths([...train, ...evalSet]).tokensPerRecord,
      meanTokensPerRecord: recordLengths(train).meanTokensPerRecord, taps: 'lora', lowestLayer: lora.lowestLayer,
      backwardPasses: (plan.steps - (state?.step ?? 0)) * perStep, forwardPasses: evalSet.length * (1 + Math.ceil(plan.steps / plan.evalEvery)),
      recordsPerPass: perStep, gpuMemoryGiB: params.gpuMemoryGiB,
    }, hooks);
    model = loaded.model;
    const trainable = lora.trainableParams();
    const vanilla = modules.reduce((s, m) => s + adapterParams(m, plan.rank), 0);
    if (state && plan.steps > resumed!.state.plan.steps) hooks.log?.('info', `extending the run from ${resumed!.state.plan.steps} to ${plan.steps} steps`);
    hooks.log?.('info', `training ${plan.preset} at ${plan.targets.length === 1 ? plan.targets[0] : `${plan.targets.length} modules`}: ` +
      `${trainable.toLocaleString('en-US')} trainable parameters (${((100 * trainable) / vanilla).toFixed(2)}% of vanilla LoRA), ` +
      `${train.length} train / ${evalSet.length} eval records, ${plan.steps} step${plan.steps === 1 ? '' : 's'} of ${perStep} records`);
    const save = (st: TrainerState, final: boolean) => writeCheckpoint(outDir, st, targets, lora!.params, lora!.moments, {
      baseModel: path.resolve(params.modelDir), final, keepCheckpoint: params.keepCheckpoint, provenance: provenance(plan, report),
      root: params.outRoot,
    }, folder.cfg.numLayers);
    const run = await trainLoop(model, lora, plan, { train, evalSet }, state, save, params.cacheLowerLayers !== false, hooks, loaded.estimate.groupSize);
    const trainPoints = run.curve.filter((c) => c.loss !== undefined);
    const evals = run.curve.filter((c) => c.evalLoss !== undefined);
    return {
      adapterDir: outDir, preset: plan.preset, targets: plan.targets, rank: plan.rank, alpha: plan.alpha, trainableParams: trainable, vanillaParams: vanilla,
      ratioToVanilla: trainable / vanilla, steps: plan.steps, evalLossBefore: run.evalLossBefore, evalLossAfter: evals.length ? evals[evals.length - 1].evalLoss : undefined,
      trainLossFirst: run.trainLossFirst, trainLossLast: trainPoints.length ? trainPoints[trainPoints.length - 1].loss : undefined, curve: run.curve,
      backend: backend.backend, seconds: (state?.seconds ?? 0) + (Date.now() - started) / 1000, data, ...(evalData ? { evalData } : {}),
    };
  } catch (err) {
    claim?.release();
    throw err;
  } finally {
    lora?.dispose();
    model?.dispose();
  }
}

/**
 * The data of a run: --data, or the checkpoint's when resuming without it (a --data that is not the checkpoint's
 * data is refused once its sha256 is known; the same data moved elsewhere is fine).
 */
function resumeData(params: TrainParams, state: TrainerState | undefined, stateFile: string): string {
  if (params.data) return params.data;
  if (!state) throw badInput('--data is required');
  if (!fs.existsSync(state.plan.data)) throw badInput(`the checkpoint's training data ${state.plan.data} is gone; pass --data with the same data`, stateFile);
  return state.plan.data;
}

/**
 * Tokenizes the training data (and says what it holds), then holds out an evaluation split (or reads --eval-data).
 * The placement check calls it too, before any work, to refuse data that leaves nothing to evaluate on.
 */
export function splitRecords(ds: Dataset, tokenizer: ModelTokenizer, s: RunSettings, splitGiven: boolean, hooks: JobHooks):
  { train: TokenizedRecord[]; evalSet: TokenizedRecord[]; data: DataSummary; evalData?: DataSummary } {
  const all = tokenizeDataset(ds, tokenizer, { seqLen: s.seqLen, limit: s.maxSamples });
  requireUsable(all, s.seqLen, ds.file);
  const data = summariseData(ds, all, s.seqLen);
  announceData(data, hooks);
  if (s.evalData) {
    const evalDs = readDataset(s.evalData);
    const ev = tokenizeDataset(evalDs, tokenizer, { seqLen: s.seqLen });
    requireUsable(ev, s.seqLen, evalDs.file);
    const evalData = summariseData(evalDs, ev, s.seqLen);
    announceData(evalData, hooks);
    if (ev.records.length < MIN_EVAL_RECORDS) {
      throw badInput(`only ${ev.records.length} usable record(s) to evaluate on; an eval loss over fewer than ${MIN_EVAL_RECORDS} says little about the adapter`, evalDs.file);
    }
    return { train: all.records, evalSet: ev.records, data, evalData };
  }
  if (s.evalSplit === 0) return { train: all.records, evalSet: [], data };
  const n = all.records.length;
  const nEval = Math.round(s.evalSplit * n);
  if (nEval < MIN_EVAL_RECORDS || n - nEval < 1) {
    const why = `--eval-split ${s.evalSplit} of ${n} usable record(s) holds out ${nEval}` +
      `${n - nEval < 1 ? ', leaving none to train on' : `, fewer than the ${MIN_EVAL_RECORDS} an eval loss needs to say anything`}`;
    // An explicit split that cannot work is refused, with the advice that fits; the default one steps aside on small data.
    if (splitGiven) throw badInput(`${why}: ${splitAdvice(n, nEval)}`, ds.file);
    hooks.log?.('warn', `${ds.file}: no held-out evaluation: the default ${why}; pass --eval-data FILE or --eval-split to evaluate`);
    return { train: all.records, evalSet: [], data };
  }
  const order = permutation(n, (s.splitSeed ?? s.seed) ^ 0x9e3779b9);
  const evalIdx = new Set(order.slice(0, nEval));
  return { evalSet: all.records.filter((_, i) => evalIdx.has(i)), train: all.records.filter((_, i) => !evalIdx.has(i)), data };
}

/**
 * What to do about an eval split that cannot work on n usable records: a split needs MIN_EVAL_RECORDS held out and
 * one record left to train on, so below MIN_EVAL_RECORDS + 1 records no split does, and otherwise the split to name
 * is the smallest that holds out enough (too few held out) or the largest that leaves one to train on (none left).
 */
export function splitAdvice(n: number, nEval: number): string {
  const other = '--eval-data FILE, or --eval-split 0 for no evaluation';
  if (n < MIN_EVAL_RECORDS + 1) {
    return `${n} record(s) are too few to hold any out (an eval split needs ${MIN_EVAL_RECORDS} held out and 1 left to train on): use more data, ${other}`;
  }
  if (nEval < MIN_EVAL_RECORDS) return `use --eval-split ${(Math.ceil((100 * MIN_EVAL_RECORDS) / n) / 100)} or more, more data, ${other}`;
  return `use --eval-split ${Math.floor((100 * (n - 1)) / n) / 100} or less, ${other}`;
}

/** The trainable state: A and B of every target and their AdamW moments in JS float32, and their backend copies. */
class LoraState {
  readonly params = new Map<string, { a: Float32Array; b: Float32Array }>();
  readonly moments = new Map<string, Float32Array>();
  readonly adapters = new Map<string, LoraAdapter>();
  readonly lowestLayer: number;
  readonly lowestKinds: string[];
  private readonly scale: number;

  constructor(readonly targets: ModuleSpec[], private readonly plan: RunPlan, resume?: Map<string, Float32Array>) {
    this.scale = loraScale(plan.alpha, plan.rank);
    for (const m of targets) {
      const a = resume?.get(peftKey(m.name, 'A')) ?? initLoraA(plan.seed, m.name, plan.rank, m.dIn);
      const b = resume?.get(peftKey(m.name, 'B')) ?? new Float32Array(m.dOut * plan.rank);
      this.params.set(m.name, { a, b });
      for (const [w, n] of [['A', a.length], ['B', b.length]] as const) {
        for (const mo of ['m', 'v']) this.moments.set(`${mo}.${peftKey(m.name, w)}`, resume?.get(`${mo}.${peftKey(m.name, w)}`) ?? new Float32Array(n));
      }
    }
    this.lowestLayer = Math.min(...targets.map((m) => m.layer));
    this.lowestKinds = [...new Set(targets.filter((m) => m.layer === this.lowestLayer).map((m) => m.kind))];
    this.upload();
  }

  trainableParams(): number {
    return this.targets.reduce((s, m) => s + adapterParams(m, this.plan.rank), 0);
  }

  /** One AdamW step from the batch's summed gradients (read from the backend), then fresh backend copies. */
  async step(grads: Map<string, LoraGrads>, step: number, lr: number, perStep: number): Promise<void> {
    for (const m of this.targets) {
      const g = grads.get(m.name)!;
      const p = this.params.get(m.name)!;
      for (const [w, gt, pv] of [['A', g.da, p.a], ['B', g.db, p.b]] as const) {
        const gv = await gt.data() as Float32Array;
        adamwStep(pv, gv, this.moments.get(`m.${peftKey(m.name, w)}`)!, this.moments.get(`v.${peftKey(m.name, w)}`)!, step + 1, lr, this.plan, perStep);
      }
    }
    this.upload();
  }

  private upload(): void {
    for (const ad of this.adapters.values()) disposeAdapter(ad);
    this.adapters.clear();
    for (const m of this.targets) { const p = this.params.get(m.name)!; this.adapters.set(m.name, makeAdapter(m, this.plan.rank, this.scale, p.a, p.b)); }
  }

  dispose(): void {
    for (const ad of this.adapters.values()) disposeAdapter(ad);
    this.adapters.clear();
  }
}

/** The optimizer steps from where the state left off: batches, AdamW, evaluation, checkpoints and progress. */
async function trainLoop(net: Decoder, lora: LoraState, plan: RunPlan, data: { train: TokenizedRecord[]; evalSet: TokenizedRecord[] },
  state: TrainerState | undefined, save: (st: TrainerState, final: boolean) => Promise<void>, cacheBelow: boolean, hooks: JobHooks, groupSize: number):
  Promise<{ curve: TrainCurvePoint[]; evalLossBefore?: number; trainLossFirst?: number }> {
  const { train, evalSet } = data;
  const perStep = plan.batchSize * plan.gradAccum;
  const evalLoss = async (): Promise<number | undefined> => {
    if (!evalSet.length) return undefined;
    const r = await evalRecords(net, evalSet, lora.adapters, { signal: hooks.signal }, groupSize);
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
  const { lowestLayer, lowestKinds } = lora;
  // Frozen layers below the lowest adapter give every record the same output in every epoch: keep it (in host
  // memory, within a budget) instead of recomputing it at each visit.
  const belowCache = new BelowCache(lowestLayer > 0 && cacheBelow ? Math.min(1024 ** 3, 0.1 * os.totalmem()) : 0);
  const priorSeconds = state?.seconds ?? 0;
  const t0 = Date.now();
  const startStep = step;
  let tokensSeen = 0;
  const snapshot = (): TrainerState => ({ plan, step, curve, evalLossBefore, trainLossFirst, seconds: priorSeconds + (Date.now() - t0) / 1000 });
  while (step < plan.steps) {
    throwIfCancelled(hooks);
    const idx = batchIndices(train.length, perStep, plan.seed, step);
    const grads = new Map<string, LoraGrads>();
    let lossSum = 0;
    try {
      if (net.plan.streamLayers) {
        // The layers are read from the files: the step's records go through each layer together (schedule.ts).
        await yieldToEvents();
        throwIfCancelled(hooks);
        const ctx = { adapters: lora.adapters, loraGrads: grads, lowestKinds };
        const passes = await runStepsAsync(backwardLayerMajor(net, idx.map((i) => ({ ids: train[i].inputIds, mask: train[i].lossMask, ctx })), lowestLayer), hooks);
        for (const p of passes) lossSum += p.loss;
        for (const i of idx) tokensSeen += train[i].inputIds.length;
      } else {
        for (const i of idx) {
          await yieldToEvents();
          throwIfCancelled(hooks);
          const rec = train[i];
          const below = await belowCache.get(i, () => runStepsAsync(net.hiddenBelowSteps(rec.inputIds, lowestLayer), hooks));
          let r;
          try {
            r = await runStepsAsync(net.recordBackwardSteps(rec.inputIds, rec.lossMask, { adapters: lora.adapters, loraGrads: grads, lowestKinds }, lowestLayer, below), hooks);
          } finally {
            below?.dispose();
          }
          lossSum += r.loss;
          tokensSeen += rec.inputIds.length;
        }
      }
      // The batch loss is the mean of the records' losses, so each record's gradient gets weight 1 / perStep.
      const lr = learningRate(plan, step);
      await lora.step(grads, step, lr, perStep);
      step++;
      const loss = lossSum / idx.length;
      if (trainLossFirst === undefined) trainLossFirst = loss;
      const point: TrainCurvePoint = { step, loss, lr };
      if (step % plan.evalEvery === 0 || step === plan.steps) point.evalLoss = await evalLoss();
      curve.push(point);
      const elapsed = (Date.now() - t0) / 1000;
      hooks.onProgress?.({ phase: 'train', done: step, total: plan.steps, loss, evalLoss: point.evalLoss, lr,
        tokensPerSecond: tokensSeen / Math.max(1e-3, elapsed), etaSeconds: eta(t0, step - startStep, plan.steps - startStep) });
      if (step % plan.checkpointEvery === 0 && step < plan.steps) await save(snapshot(), false);
    } finally {
      for (const g of grads.values()) tf.dispose([g.da, g.db]);
    }
  }
  hooks.onProgress?.({ phase: 'save', done: 0, total: 1, message: 'writing adapter' });
  await save(snapshot(), true);
  return { curve, evalLossBefore, trainLossFirst };
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
      this.rows.set(i, { data: new Float32Array(await t.data() as Float32Array), shape: t.shape as [number, number] }); // a copy, not a view of the heap
      this.bytes += t.size * 4;
    }
    return t;
  }
}
