// PAGE, Projected Adapter Gradient Energy (shared/docs/DESIGN.md section 1), for every candidate module.
// One forward and backward pass per record; at every linear module the backward pass hands us its input X [T, d_in]
// and output gradient Delta [T, d_out], from which both quantities follow without any d_out x d_in matrix:
//   sampled  P_m  = || dl/dB ||^2 = s^2 || Delta^T (X A^T) ||^2 = s^2 <U U^T, Delta Delta^T>,  U = X A^T [T, r]
//   expected E[P] = s^2 r / (3 d_in) || Delta^T X ||^2 = s^2 r / (3 d_in) <X X^T, Delta Delta^T>
// The Gram X X^T is shared by modules reading the same input (q, k, v; gate, up).
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import type { ProbeParams, ProbeReport, ProbeModule } from '../../protocol/messages';
import { candidateModules, ModuleSpec } from '../hf/config';
import { readDataset, requireUsable, tokenizeDataset, TokenizedRecord } from '../data/data';
import { badInput } from '../runtime/errors';
import { JobHooks, Steps, eta, runSteps, runStepsAsync, throwIfCancelled, yieldToEvents } from '../runtime/jobs';
import { summarise } from '../hf/folder';
import { LlamaModel, Linear } from '../model/decoder';
import { openJob, loadForJob, recordLengths } from '../runtime/setup';
import { initLoraA, adapterParams, checkRank, loraScale } from '../model/lora';
import { Rng } from '../runtime/rng';
import { writeFileAtomic } from '../runtime/atomic';

export const PROBE_DEFAULTS = { samples: 32, seqLen: 512, rank: 8, alpha: 16, seed: 0, bootstrap: 200, stabilityThreshold: 0.95 };

export interface RecordPage { loss: number; tokens: number; sampled: Float64Array; expected: Float64Array }

/** The probe's core, separated from I/O so tests can call it on a model they built. */
export function pageForRecord(
  model: LlamaModel, rec: TokenizedRecord, modules: ModuleSpec[],
  aT: Map<string, tf.Tensor2D>, rank: number, scale: number, route: 'auto' | 'gram' | 'direct' = 'auto',
): RecordPage {
  return runSteps(pageForRecordSteps(model, rec, modules, aT, rank, scale, route));
}

/** pageForRecord as steps, one per layer (runStepsAsync: a cancel lands within a layer). */
export function* pageForRecordSteps(
  model: LlamaModel, rec: TokenizedRecord, modules: ModuleSpec[],
  aT: Map<string, tf.Tensor2D>, rank: number, scale: number, route: 'auto' | 'gram' | 'direct' = 'auto',
): Steps<RecordPage> {
  const index = new Map(modules.map((m, i) => [m.name, i]));
  const sampledT: tf.Scalar[] = new Array(modules.length);
  const expectedT: tf.Scalar[] = new Array(modules.length);
  const xGrams = new Map<number, tf.Tensor2D>(); // by input tensor id: q/k/v and gate/up share theirs
  const tap = (lin: Linear, x: tf.Tensor2D, delta: tf.Tensor2D) => {
    const i = index.get(lin.name);
    if (i === undefined) return;
    const T = x.shape[0];
    const deltaT = tf.transpose(delta) as tf.Tensor2D; // [d_out, T]
    // Sampled: dl/dB = s Delta^T (X A^T), a [d_out, r] product: cheap for any T.
    const dB = tf.matMul(deltaT, tf.matMul(x, aT.get(lin.name)!)); // [d_out, r]
    sampledT[i] = tf.keep(tf.mul(tf.sum(tf.square(dB)), scale * scale));
    // Expected needs ||Delta^T X||^2. Two exact routes: the Gram identity <X X^T, Delta Delta^T>, T^2 (d_in + d_out)
    // (X X^T shared by modules reading the same input), or the product itself, T d_in d_out, summed at once and
    // dropped. Short records favour the Gram route, long ones the product; the product is only formed when small.
    const xg = xGrams.get(x.id);
    const gramCost = T * T * (lin.dOut + (xg ? 0 : lin.dIn));
    const directCost = T * lin.dIn * lin.dOut;
    let energy: tf.Scalar;
    const direct = route === 'auto' ? directCost < gramCost && lin.dIn * lin.dOut <= 16 * 1024 * 1024 : route === 'direct';
    if (direct) {
      energy = tf.sum(tf.square(tf.matMul(deltaT, x))); // ||dl/dW||^2, the [d_out, d_in] product never kept
    } else {
      let gram = xg;
      if (!gram) {
        gram = tf.keep(tf.matMul(x, tf.transpose(x) as tf.Tensor2D)) as tf.Tensor2D; // [T, T]
        xGrams.set(x.id, gram);
      }
      energy = tf.sum(tf.mul(gram, tf.matMul(delta, deltaT))); // <X X^T, Delta Delta^T>
    }
    expectedT[i] = tf.keep(tf.mul(energy, (scale * scale * rank) / (3 * lin.dIn)));
  };
  const lowestLayer = Math.min(...modules.map((m) => m.layer));
  const lowestKinds = [...new Set(modules.filter((m) => m.layer === lowestLayer).map((m) => m.kind))];
  try {
    const pass = yield* model.recordBackwardSteps(rec.inputIds, rec.lossMask, { tap, lowestKinds }, lowestLayer);
    const missing = modules.filter((_, i) => !sampledT[i]);
    if (missing.length) throw new Error(`PAGE: no gradient reached ${missing[0].name}`);
    const both = tf.tidy(() => tf.concat([tf.stack(sampledT), tf.stack(expectedT)]));
    const vals = both.dataSync();
    both.dispose();
    const n = modules.length;
    return {
      loss: pass.loss, tokens: pass.tokens,
      sampled: Float64Array.from(vals.subarray(0, n)), expected: Float64Array.from(vals.subarray(n, 2 * n)),
    };
  } finally {
    tf.dispose([...sampledT.filter(Boolean), ...expectedT.filter(Boolean), ...xGrams.values()]);
  }
}

/** Column means of per-record values. */
function mean(rows: ArrayLike<number>[], m: number): number[] {
  const out = new Array(m).fill(0);
  for (const r of rows) for (let j = 0; j < m; j++) out[j] += r[j];
  return out.map((v) => v / Math.max(1, rows.length));
}

export interface Bootstrap { winner: number; stability: number; wins: number[] }

/** Over `B` resamples (with replacement) of the N records, how often each module has the largest mean expected PAGE. */
export function bootstrapWins(perRecord: ArrayLike<number>[], B: number, seed: number): Bootstrap {
  const N = perRecord.length;
  const M = perRecord[0]?.length ?? 0;
  const wins = new Array(M).fill(0);
  const rng = new Rng(seed ^ 0x5bd1e995);
  const sums = new Float64Array(M);
  for (let b = 0; b < B; b++) {
    sums.fill(0);
    for (let k = 0; k < N; k++) {
      const row = perRecord[rng.nextInt(N)];
      for (let j = 0; j < M; j++) sums[j] += row[j];
    }
    let best = 0;
    for (let j = 1; j < M; j++) if (sums[j] > sums[best]) best = j;
    wins[best]++;
  }
  const full = mean(perRecord, M);
  let winner = 0;
  for (let j = 1; j < M; j++) if (full[j] > full[winner]) winner = j;
  return { winner, stability: wins[winner] / B, wins: wins.map((w) => w / B) };
}

export interface ProbeOutcome { report: ProbeReport; written?: string }

export async function runProbe(params: ProbeParams, hooks: JobHooks = {}): Promise<ProbeOutcome> {
  const p = { ...PROBE_DEFAULTS, ...stripUndefined(params), modelDir: params.modelDir, data: params.data };
  if (!Number.isInteger(p.samples) || p.samples < 1) throw badInput(`--samples must be a positive integer, got ${p.samples}`);
  if (!Number.isInteger(p.seqLen) || p.seqLen < 2) throw badInput(`--seq-len must be an integer >= 2, got ${p.seqLen}`);
  if (!Number.isInteger(p.rank) || p.rank < 1) throw badInput(`--rank must be a positive integer, got ${p.rank}`);
  if (!(p.alpha > 0)) throw badInput(`--alpha must be positive, got ${p.alpha}`);
  if (!Number.isInteger(p.bootstrap) || p.bootstrap < 1) throw badInput(`--bootstrap must be a positive integer, got ${p.bootstrap}`);
  // Headers, config, tokenizer and data first: the input is checked and the job sized before any weight is read.
  const tLoad = Date.now(); // the report's load time: opening, tokenizing and loading the weights
  const job = await openJob(params.modelDir, p.backend, hooks);
  const { folder, tokenizer, backend } = job;
  const ds = readDataset(p.data);
  const modules = candidateModules(folder.cfg);
  checkRank(p.rank, modules);
  hooks.onProgress?.({ phase: 'tokenize', done: 0, total: 1, message: 'tokenizing' });
  const sampling = p.sampling ?? 'first';
  const tok = tokenizeDataset(ds, tokenizer, { seqLen: p.seqLen, limit: p.samples, sample: sampling, seed: p.seed });
  requireUsable(tok, p.seqLen, ds.file);
  if (tok.records.length < p.samples) {
    hooks.log?.('warn', `${ds.file}: only ${tok.records.length} usable records (asked for ${p.samples}); probing with ${tok.records.length}`);
  }
  if (tok.skipped) hooks.log?.('warn', `${tok.skipped} record(s) skipped: no supervised tokens after truncation to ${p.seqLen}`);
  const { model } = loadForJob(job, { ...recordLengths(tok.records), backwardPasses: tok.records.length }, hooks);
  const loadSeconds = (Date.now() - tLoad) / 1000;
  try {
    const scale = loraScale(p.alpha, p.rank);
    const aT = new Map<string, tf.Tensor2D>();
    for (const m of modules) {
      aT.set(m.name, tf.tidy(() => tf.transpose(tf.tensor2d(initLoraA(p.seed, m.name, p.rank, m.dIn), [p.rank, m.dIn])) as tf.Tensor2D));
    }
    const t0 = Date.now();
    const sampled: Float64Array[] = [], expected: Float64Array[] = [];
    const recInfo: { index: number; line: number; tokens: number; loss: number }[] = [];
    const N = tok.records.length;
    let stableRun = 0;
    const patience = 4, minRecords = 8;
    let stoppedEarly = false;
    try {
      for (let n = 0; n < N; n++) {
        await yieldToEvents();
        throwIfCancelled(hooks);
        const rec = tok.records[n];
        const r = await runStepsAsync(pageForRecordSteps(model, rec, modules, aT, p.rank, scale), hooks);
        sampled.push(r.sampled);
        expected.push(r.expected);
        recInfo.push({ index: rec.index, line: rec.line, tokens: r.tokens, loss: r.loss });
        const meanLoss = recInfo.reduce((a, x) => a + x.loss, 0) / recInfo.length;
        hooks.onProgress?.({ phase: 'probe', done: n + 1, total: N, loss: meanLoss, etaSeconds: eta(t0, n + 1, N) });
        if (p.untilStable && n + 1 >= minRecords && n + 1 < N) {
          const bs = bootstrapWins(expected, 100, p.seed + n);
          stableRun = bs.stability >= p.stabilityThreshold ? stableRun + 1 : 0;
          if (stableRun >= patience) { stoppedEarly = true; break; }
        }
      }
    } finally {
      tf.dispose([...aT.values()]);
    }
    throwIfCancelled(hooks);
    const probeSeconds = (Date.now() - t0) / 1000;
    const report = buildReport({
      p: { ...p, sampling }, modules, sampled, expected, recInfo, ds, skipped: tok.skipped,
      model: summarise(folder), kinds: [...model.kinds], backend: backend.backend,
      timings: { loadSeconds, probeSeconds },
    });
    if (stoppedEarly) hooks.log?.('info', `stopped early: the dominant module was stable for ${patience} records after ${recInfo.length} records`);
    let written: string | undefined;
    if (params.out) {
      written = path.resolve(params.out);
      writeFileAtomic(written, JSON.stringify(report, null, 1) + '\n');
    }
    return { report, written };
  } finally {
    model.dispose();
  }
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

interface BuildArgs {
  p: typeof PROBE_DEFAULTS & ProbeParams & { sampling: 'first' | 'random' };
  modules: ModuleSpec[]; sampled: Float64Array[]; expected: Float64Array[];
  recInfo: { index: number; line: number; tokens: number; loss: number }[];
  ds: { file: string; sha256: string; format: string }; skipped: number;
  model: ProbeReport['model']; kinds: string[]; backend: ProbeReport['config']['backend'];
  timings: ProbeReport['timings'];
}

export function buildReport(a: BuildArgs): ProbeReport {
  const M = a.modules.length;
  const pageSampled = mean(a.sampled, M);
  const pageExpected = mean(a.expected, M);
  const total = pageExpected.reduce((x, y) => x + y, 0);
  const order = pageExpected.map((v, i) => [v, i] as const).sort((x, y) => y[0] - x[0]).map(([, i]) => i);
  const rankOf = new Array(M);
  order.forEach((i, r) => { rankOf[i] = r + 1; });
  const modules: ProbeModule[] = a.modules.map((m, i) => ({
    name: m.name, layer: m.layer, kind: m.kind, dIn: m.dIn, dOut: m.dOut, adapterParams: adapterParams(m, a.p.rank),
    pageSampled: pageSampled[i], pageExpected: pageExpected[i], share: total > 0 ? pageExpected[i] / total : 0, rank: rankOf[i],
  }));
  const bs = bootstrapWins(a.expected, a.p.bootstrap, a.p.seed);
  const dom = modules[order[0]];
  const ru = modules[order[1] ?? order[0]];
  const top = order.slice(0, 5);
  return {
    tool: { name: 'domlora', version: typeof DOMLORA_VERSION === 'string' ? DOMLORA_VERSION : 'dev' },
    createdAt: new Date().toISOString(),
    model: a.model,
    kinds: a.kinds,
    config: {
      samples: a.recInfo.length, requestedSamples: a.p.samples, sampling: a.p.sampling, skipped: a.skipped, seqLen: a.p.seqLen,
      rank: a.p.rank, alpha: a.p.alpha, seed: a.p.seed, backend: a.backend, dataset: path.resolve(a.ds.file),
      datasetSha256: a.ds.sha256, datasetFormat: a.ds.format, bootstrap: a.p.bootstrap, untilStable: Boolean(a.p.untilStable),
    },
    meanLoss: a.recInfo.reduce((x, r) => x + r.loss, 0) / a.recInfo.length,
    tokens: a.recInfo.reduce((x, r) => x + r.tokens, 0),
    modules,
    dominant: {
      name: dom.name, layer: dom.layer, kind: dom.kind, share: dom.share, stability: bs.stability,
      runnerUp: { name: ru.name, share: ru.share, wins: bs.wins[order[1] ?? order[0]] },
    },
    records: a.recInfo.map((r, n) => ({ ...r, top: top.map((i) => ({ name: a.modules[i].name, pageExpected: a.expected[n][i] })) })),
    perRecordExpected: a.expected.map((row) => Array.from(row)),
    timings: a.timings,
  };
}
