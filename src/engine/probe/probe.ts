// `domlora probe`: PAGE for every candidate module over N records of the user's data, as a report (DESIGN.md §1).
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import type { ProbeParams, ProbeReport } from '../../protocol/messages';
import { candidateModules } from '../hf/modules';
import { summarise } from '../hf/folder';
import { readDataset } from '../data/read';
import { requireUsable, tokenizeDataset } from '../data/tokenize';
import { announceData, summariseData } from '../data/summary';
import { badInput } from '../runtime/errors';
import { checkLimits, jobSeqLen } from '../runtime/limits';
import { claimOutput } from '../runtime/outputs';
import { JobHooks, eta, runStepsAsync, throwIfCancelled, yieldToEvents } from '../runtime/jobs';
import { openInputs, startBackend, loadForJob, recordLengths } from '../runtime/setup';
import { initLoraA, checkRank, loraScale } from '../model/lora';
import { writeFileAtomic } from '../runtime/atomic';
import { pageForRecordSteps, pageForRecordsSteps } from './page';
import { bootstrapWins, buildReport, PROBE_DEFAULTS } from './report';
import { compareReports, readReportFile } from './compare';

export { PROBE_DEFAULTS } from './report';

export interface ProbeOutcome { report: ProbeReport; written?: string }

export async function runProbe(params: ProbeParams, hooks: JobHooks = {}): Promise<ProbeOutcome> {
  // The numbers, the report to compare with and the output, before anything is loaded.
  checkLimits(params, ['samples', 'seqLen', 'rank', 'alpha', 'seed', 'bootstrap', 'gpuMemoryGiB']);
  if (params.stabilityThreshold !== undefined && !(params.stabilityThreshold > 0 && params.stabilityThreshold <= 1)) {
    throw badInput(`the stability threshold must be a number above 0 and at most 1, got ${params.stabilityThreshold}`);
  }
  const compareTo = params.compare ? readReportFile(params.compare) : undefined;
  const claim = params.out ? claimOutput(params.out, 'report', { force: params.force, root: params.outRoot }) : undefined;
  try {
    return await probe(params, compareTo, claim?.path, hooks);
  } catch (err) {
    claim?.release();
    throw err;
  }
}

async function probe(params: ProbeParams, compareTo: ProbeReport | undefined, out: string | undefined, hooks: JobHooks): Promise<ProbeOutcome> {
  // Headers, config, tokenizer and data first: the input is checked and the job sized before any weight is read.
  const tLoad = Date.now(); // the report's load time: opening, tokenizing and loading the weights
  const inputs = openInputs(params.modelDir);
  const { folder, tokenizer } = inputs;
  const seqLen = jobSeqLen(folder.cfg, path.join(folder.dir, 'config.json'), params.seqLen, hooks);
  const p = { ...PROBE_DEFAULTS, ...stripUndefined(params), seqLen, modelDir: params.modelDir, data: params.data };
  const ds = readDataset(p.data);
  const modules = candidateModules(folder.cfg);
  checkRank(p.rank, modules);
  if (compareTo && params.compare && !modules.every((m) => compareTo.modules.some((x) => x.name === m.name))) {
    throw badInput(`is a report of another model (its modules are not this model's); compare reports of the same model`, params.compare);
  }
  hooks.onProgress?.({ phase: 'tokenize', done: 0, total: 1, message: 'tokenizing' });
  const sampling = p.sampling ?? 'first';
  const tok = tokenizeDataset(ds, tokenizer, { seqLen: p.seqLen, limit: p.samples, sample: sampling, seed: p.seed });
  requireUsable(tok, p.seqLen, ds.file);
  const data = summariseData(ds, tok, p.seqLen);
  announceData(data, hooks);
  if (tok.records.length < p.samples) {
    hooks.log?.('warn', `${ds.file}: only ${tok.records.length} usable records (asked for ${p.samples}); probing with ${tok.records.length}`);
  }
  // Every input is checked: now the backend.
  const job = await startBackend(inputs, params.backend, hooks);
  const { backend } = job;
  const { model, estimate } = loadForJob(job, { ...recordLengths(tok.records), backwardPasses: tok.records.length,
    recordsPerPass: tok.records.length, gpuMemoryGiB: p.gpuMemoryGiB }, hooks);
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
      // Record by record, or, with the layers read from the files, a group of records per layer-major pass.
      const group = model.plan.streamLayers ? estimate.groupSize : 1;
      for (let n = 0; n < N; n += group) {
        await yieldToEvents();
        throwIfCancelled(hooks);
        const recs = tok.records.slice(n, n + group);
        const rows = recs.length === 1
          ? [await runStepsAsync(pageForRecordSteps(model, recs[0], modules, aT, p.rank, scale), hooks)]
          : await runStepsAsync(pageForRecordsSteps(model, recs, modules, aT, p.rank, scale), hooks);
        rows.forEach((r, k) => {
          sampled.push(r.sampled);
          expected.push(r.expected);
          recInfo.push({ index: recs[k].index, line: recs[k].line, tokens: r.tokens, loss: r.loss });
        });
        const done = recInfo.length;
        const meanLoss = recInfo.reduce((a, x) => a + x.loss, 0) / done;
        hooks.onProgress?.({ phase: 'probe', done, total: N, loss: meanLoss, etaSeconds: eta(t0, done, N) });
        if (p.untilStable && done >= minRecords && done < N) {
          const bs = bootstrapWins(expected, 100, p.seed + done - 1);
          stableRun = bs.stability >= p.stabilityThreshold ? stableRun + recs.length : 0;
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
      model: summarise(folder), kinds: [...model.kinds], backend: backend.backend, backendDevice: backend.device,
      timings: { loadSeconds, probeSeconds },
    });
    report.data = data;
    if (stoppedEarly) hooks.log?.('info', `stopped early: the dominant module was stable for ${patience} records after ${recInfo.length} records`);
    if (compareTo && params.compare) report.comparison = { other: path.resolve(params.compare), ...compareReports(report, compareTo) };
    if (out) writeFileAtomic(out, JSON.stringify(report, null, 1) + '\n', { root: params.outRoot });
    return { report, written: out };
  } finally {
    model.dispose();
  }
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

