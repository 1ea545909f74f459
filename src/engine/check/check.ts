// `domlora check`: does the dominant module earn its place? One adapter per placement (the dominant module, the
// runner-up, the module with the least PAGE, random modules of the dominant's kind, vanilla LoRA, or the user's),
// each trained by runTrain with the same budget (steps, rank, alpha, learning rate, data order, seed) and evaluated on
// the same held-out records, over one or more seeds. Every adapter is kept in PEFT format in the check's folder;
// the state file is rewritten after every run, so a check cancelled or killed resumes without redoing finished runs
// (a run cut short resumes from its own checkpoint), and gives the same numbers as one that never stopped.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Backend, CheckParams, CheckResult, CheckRun, ProbeReport, TrainParams, TrainResult } from '../../protocol/messages';
import { candidateModules } from '../hf/modules';
import { openModelFolder, summarise } from '../hf/folder';
import { ModelTokenizer } from '../hf/tokenizer';
import { readDataset } from '../data/read';
import { adapterParams, checkRank } from '../model/lora';
import { runProbe } from '../probe/probe';
import { readReportFile } from '../probe/compare';
import { runTrain, splitRecords } from '../train/loop';
import { readCheckpoint } from '../train/checkpoint';
import { checkTrainParams, modelFingerprint, readProbeReport, runSettings } from '../train/plan';
import { writeFileAtomic } from '../runtime/atomic';
import { badInput } from '../runtime/errors';
import type { JobHooks } from '../runtime/jobs';
import { checkLimits } from '../runtime/limits';
import { claimOutput } from '../runtime/outputs';
import { parsePlacements, placementLabel, resolvePlacements, type PlannedPlacement } from './placements';
import { findings, summarise as summariseRuns, type PlacementRuns } from './summary';
import { REPORT_FILE, RESULT_FILE, STATE_FILE, checkResumeParams, readState, runDir, runKey, writeState, type CheckPlan, type CheckState } from './state';

/**
 * The check's own defaults where they differ from a training run's: a modest budget per placement (the check trains
 * six adapters or more, each for every seed), and a bounded set of records, an eighth of them held out, so that its
 * evaluation costs little next to its training whatever the size of the data.
 */
export const CHECK_DEFAULTS = { steps: 30, seeds: 1, maxSamples: 256, evalSplit: 0.125 };

const CHECK_LIMITS = ['rank', 'alpha', 'lr', 'steps', 'batchSize', 'gradAccum', 'seqLen', 'evalSplit', 'seed', 'seeds', 'maxSamples',
  'warmupSteps', 'weightDecay', 'samples', 'gpuMemoryGiB'] as const;

export async function runCheck(params: CheckParams, hooks: JobHooks = {}): Promise<CheckResult> {
  const started = Date.now();
  // The numbers and the flags, with the training run's own checks (alpha an integer, ...), before anything is read.
  checkLimits(params, CHECK_LIMITS);
  checkTrainParams(trainShape(params));
  const dir = path.resolve(params.resume ?? params.out);
  if (params.resume && params.out && path.resolve(params.out) !== dir) {
    throw badInput(`--out ${path.resolve(params.out)} and --resume ${dir} name different folders; a resumed check continues in its own folder`);
  }
  let state: CheckState;
  if (params.resume) {
    state = readState(dir);
    checkResumeParams(params, state.plan, path.join(dir, STATE_FILE));
    checkResumedInputs(params, state.plan, dir);
  } else {
    const claim = claimOutput(dir, 'check', { force: params.force, root: params.outRoot });
    try {
      // A replaced check leaves nothing of its own behind (claimOutput has made sure it was one DomLoRA wrote).
      if (fs.existsSync(dir)) for (const e of fs.readdirSync(dir)) fs.rmSync(path.join(dir, e), { recursive: true, force: true });
      state = await planCheck(params, dir, hooks);
    } catch (err) {
      claim.release();
      throw err;
    }
  }
  return await runPlacements(state, dir, params, hooks, started);
}

/** The check's params as a training run's, for the run's own checks and settings. */
function trainShape(p: CheckParams): TrainParams {
  return {
    modelDir: p.modelDir, data: p.data, out: '', rank: p.rank, alpha: p.alpha, lr: p.lr, steps: p.steps ?? CHECK_DEFAULTS.steps,
    batchSize: p.batchSize, gradAccum: p.gradAccum, seqLen: p.seqLen, evalData: p.evalData, seed: p.seed, weightDecay: p.weightDecay,
    warmupSteps: p.warmupSteps, maxSamples: p.maxSamples ?? CHECK_DEFAULTS.maxSamples,
    evalSplit: p.evalData ? undefined : p.evalSplit ?? CHECK_DEFAULTS.evalSplit,
  };
}

/** A resumed check runs on the same model and data as its plan (moved files are fine; changed ones are not). */
function checkResumedInputs(params: CheckParams, plan: CheckPlan, dir: string): void {
  const stateFile = path.join(dir, STATE_FILE);
  const folder = openModelFolder(params.modelDir);
  const fp = modelFingerprint(folder.cfg);
  if (fp !== plan.modelFingerprint) throw badInput(`the check was made for another model (${plan.modelFingerprint}; ${folder.dir} is ${fp})`, stateFile);
  const data = params.data || plan.data;
  if (!fs.existsSync(data)) throw badInput(`the check's training data ${data} is gone; pass --data with the same data`, stateFile);
  if (readDataset(data).sha256 !== plan.dataSha256) {
    throw badInput(`is not the data the check trained on (${plan.data}; the sha256 differs): --resume continues the same check on the same data`, data);
  }
  plan.data = path.resolve(data);
  if (!fs.existsSync(plan.report)) throw badInput(`the check's probe report ${plan.report} is gone`, stateFile);
}

/** Everything before the first run: the model, the placements, the data and its split, the report (probed if need be). */
async function planCheck(params: CheckParams, dir: string, hooks: JobHooks): Promise<CheckState> {
  const folder = openModelFolder(params.modelDir);
  const configFile = path.join(folder.dir, 'config.json');
  const modules = candidateModules(folder.cfg);
  const parsed = parsePlacements(params.placements, modules);
  const given = params.report ? readProbeReport(params.report, folder.cfg.numLayers, params.modelDir) : undefined;
  if (given && (given.modules.length !== modules.length || !modules.every((m) => given.modules.some((x) => x.name === m.name)))) {
    throw badInput('is a report of another model (its modules are not this model\'s)', params.report);
  }
  const tp = trainShape(params);
  const settings = runSettings(tp, folder.cfg, configFile, given, hooks);
  // A rank too large for a module is refused now where the modules are known (every one, for vanilla), else once
  // the report has named them, still before the first run.
  if (parsed.some((p) => p.kind === 'vanilla')) checkRank(settings.rank, modules);
  // The data and its split now, so that data with nothing to hold out is refused before the probe and the runs.
  const ds = readDataset(params.data);
  const tokenizer = ModelTokenizer.load(folder.dir);
  const seeds = Array.from({ length: params.seeds ?? CHECK_DEFAULTS.seeds }, (_, i) => settings.seed + i);
  // Quietly: every run tokenizes the same records again and says once what it skipped.
  const split = splitRecords(ds, tokenizer, { ...settings, splitSeed: seeds[0] }, true, {});
  if (!split.evalSet.length) {
    throw badInput('the check compares held-out losses, and no record is held out: give --eval-data FILE or an --eval-split above 0', ds.file);
  }
  let reportFile: string;
  let report: ProbeReport;
  if (given) {
    reportFile = path.resolve(params.report!);
    report = given;
  } else {
    hooks.log?.('info', `no --report: probing ${ds.file} first (the report goes to ${path.join(dir, REPORT_FILE)})`);
    reportFile = path.join(dir, REPORT_FILE);
    const probed = await runProbe({ modelDir: params.modelDir, data: params.data, samples: params.samples, seqLen: settings.seqLen,
      rank: settings.rank, alpha: settings.alpha, seed: settings.seed, out: reportFile, backend: params.backend, gpuMemoryGiB: params.gpuMemoryGiB }, hooks);
    report = probed.report;
  }
  const placements = resolvePlacements(parsed, modules, report, settings.seed, (m) => hooks.log?.('warn', m));
  checkRank(settings.rank, modules.filter((m) => placements.some((p) => p.modules.includes(m.name))));
  const plan: CheckPlan = {
    modelDir: folder.dir, modelFingerprint: modelFingerprint(folder.cfg), data: path.resolve(ds.file), dataSha256: ds.sha256,
    ...(settings.evalData ? { evalData: settings.evalData } : {}), evalSplit: settings.evalSplit, splitSeed: seeds[0],
    report: reportFile, probed: !given, rank: settings.rank, alpha: settings.alpha, lr: settings.lr, steps: tp.steps!, batchSize: settings.batchSize,
    gradAccum: settings.gradAccum, seqLen: settings.seqLen, ...(params.warmupSteps !== undefined ? { warmupSteps: params.warmupSteps } : {}),
    weightDecay: settings.weightDecay, ...(settings.maxSamples !== undefined ? { maxSamples: settings.maxSamples } : {}), seeds,
    specs: parsed.map((p) => p.spec), placements, trainRecords: split.train.length, evalRecords: split.evalSet.length,
  };
  const state: CheckState = { tool: { name: 'domlora', version: version() }, kind: 'placement-check', createdAt: new Date().toISOString(), plan, finished: {} };
  writeState(dir, state);
  return state;
}

const version = () => (typeof DOMLORA_VERSION === 'string' ? DOMLORA_VERSION : 'dev');

/** Trains what is left to train, in order, then writes check.json. */
async function runPlacements(state: CheckState, dir: string, params: CheckParams, hooks: JobHooks, started: number): Promise<CheckResult> {
  const { plan } = state;
  const report = readReportFile(plan.report);
  const folder = openModelFolder(plan.modelDir);
  const modules = new Map(candidateModules(folder.cfg).map((m) => [m.name, m]));
  const count = plan.placements.length;
  const total = count * plan.seeds.length;
  const done = () => Object.keys(state.finished).length;
  if (done()) hooks.log?.('info', `resuming the check in ${dir}: ${done()} of ${total} runs finished earlier are kept`);
  const warned = new Set<string>();
  let firstRun = true;
  try {
    for (const [k, p] of plan.placements.entries()) {
      const label = placementLabel(p, report);
      for (const [si, seed] of plan.seeds.entries()) {
        const where = `placement ${k + 1} of ${count}: ${label}${plan.seeds.length > 1 ? `, seed ${seed} (${si + 1} of ${plan.seeds.length})` : ''}`;
        if (state.finished[runKey(p.id, seed)]) { hooks.log?.('info', `${where}: finished earlier, kept`); continue; }
        hooks.log?.('info', where);
        const tag = { index: k + 1, count, id: p.id, label, seed, seedIndex: si + 1, seeds: plan.seeds.length };
        const sub: JobHooks = {
          signal: hooks.signal,
          // The runs' own lines (the backend, the estimate) once; their warnings once each.
          log: (level, message) => {
            if (level === 'info' ? !firstRun : warned.has(message)) return;
            warned.add(message);
            hooks.log?.(level, message);
          },
          onProgress: (pr) => hooks.onProgress?.({ ...pr, placement: tag, message: [pr.message, where].filter(Boolean).join(' · ') }),
        };
        const { run, backend } = await trainOne(plan, p, seed, dir, params, sub);
        firstRun = false;
        state.finished[runKey(p.id, seed)] = run;
        if (backend) state.backend = backend;
        writeState(dir, state);
        // The run is recorded: its optimizer state (kept until now so a kill could not lose the run) can go.
        fs.rmSync(path.join(runDir(dir, p.id, seed), 'checkpoint'), { recursive: true, force: true });
      }
    }
  } catch (err) {
    if (done() < total) hooks.log?.('info', `the check stopped with ${done()} of ${total} runs finished; continue it with: domlora check ${plan.modelDir} --resume ${dir}`);
    throw err;
  }
  const items: PlacementRuns[] = plan.placements.map((p) => {
    const specs = p.modules.map((n) => modules.get(n)!);
    const single = p.kind !== 'vanilla' ? report.modules.find((m) => m.name === p.modules[0]) : undefined;
    return {
      id: p.id, spec: p.spec, kind: p.kind, label: placementLabel(p, report), modules: p.modules,
      trainableParams: specs.reduce((s, m) => s + adapterParams(m, plan.rank), 0),
      share: p.kind === 'vanilla' ? 1 : single?.share ?? 0, ...(single ? { pageRank: single.rank } : {}),
      runs: plan.seeds.map((s) => state.finished[runKey(p.id, s)]),
    };
  });
  const { placements, correlation } = summariseRuns(items);
  const result: CheckResult = {
    tool: { name: 'domlora', version: version() }, kind: 'placement-check', createdAt: new Date().toISOString(), dir,
    model: summarise(folder), report: { path: plan.report, dominant: report.dominant.name, probed: plan.probed, dataset: report.config.dataset },
    data: plan.data, dataSha256: plan.dataSha256, ...(plan.evalData ? { evalData: plan.evalData } : {}),
    trainRecords: plan.trainRecords, evalRecords: plan.evalRecords,
    config: {
      steps: plan.steps, lr: plan.lr, rank: plan.rank, alpha: plan.alpha, batchSize: plan.batchSize, gradAccum: plan.gradAccum, seqLen: plan.seqLen,
      evalSplit: plan.evalSplit, seeds: plan.seeds, ...(plan.warmupSteps !== undefined ? { warmupSteps: plan.warmupSteps } : {}),
      weightDecay: plan.weightDecay, ...(plan.maxSamples !== undefined ? { maxSamples: plan.maxSamples } : {}),
    },
    vanillaParams: [...modules.values()].reduce((s, m) => s + adapterParams(m, plan.rank), 0),
    placements, correlation, findings: findings(placements, correlation, plan.seeds.length),
    backend: state.backend ?? (params.backend && params.backend !== 'auto' ? params.backend : 'wasm'), seconds: (Date.now() - started) / 1000,
  };
  writeFileAtomic(path.join(dir, RESULT_FILE), JSON.stringify(result, null, 1) + '\n');
  return result;
}

/**
 * One placement at one seed: a fresh run, the rest of a run cut short (from its checkpoint), or, when a run finished
 * but the check stopped before recording it, its figures read back from the checkpoint it kept.
 */
async function trainOne(plan: CheckPlan, p: PlannedPlacement, seed: number, checkDir: string, params: CheckParams, hooks: JobHooks):
  Promise<{ run: CheckRun; backend?: Backend }> {
  const out = runDir(checkDir, p.id, seed);
  const common = { modelDir: plan.modelDir, out, keepCheckpoint: true, backend: params.backend, gpuMemoryGiB: params.gpuMemoryGiB };
  if (fs.existsSync(path.join(out, 'checkpoint', 'trainer_state.json'))) {
    const { state: ts } = readCheckpoint(out);
    const wanted = p.kind === 'vanilla' ? 'vanilla' : 'domlora';
    if (ts.plan.seed !== seed || ts.plan.preset !== wanted || ts.plan.targets.join(',') !== p.modules.join(',')) {
      throw badInput(`holds a run of another placement or seed (${ts.plan.targets.join(',')} at seed ${ts.plan.seed}) than the check's ${p.id} at seed ${seed}`, out);
    }
    if (ts.step >= ts.plan.steps) {
      const after = [...ts.curve].reverse().find((c) => c.evalLoss !== undefined)?.evalLoss;
      if (ts.evalLossBefore === undefined || after === undefined) throw badInput('a finished run without its held-out losses', out);
      return { run: { seed, evalLossBefore: ts.evalLossBefore, evalLossAfter: after, reduction: ts.evalLossBefore - after, seconds: ts.seconds, adapterDir: out } };
    }
    hooks.log?.('info', `continuing from its checkpoint at step ${ts.step} of ${ts.plan.steps}`);
    return fromTrain(await runTrain({ ...common, data: plan.data, resume: out }, hooks), seed);
  }
  const r = await runTrain({
    ...common, data: plan.data, ...(p.kind === 'vanilla' ? { preset: 'vanilla' as const } : { preset: 'domlora' as const, targets: p.modules }),
    rank: plan.rank, alpha: plan.alpha, lr: plan.lr, steps: plan.steps, batchSize: plan.batchSize, gradAccum: plan.gradAccum, seqLen: plan.seqLen,
    ...(plan.evalData ? { evalData: plan.evalData } : { evalSplit: plan.evalSplit }), splitSeed: plan.splitSeed, seed,
    ...(plan.warmupSteps !== undefined ? { warmupSteps: plan.warmupSteps } : {}), weightDecay: plan.weightDecay,
    ...(plan.maxSamples !== undefined ? { maxSamples: plan.maxSamples } : {}),
    // Only the held-out loss at the end is compared: one evaluation before and one after, none in between.
    evalEvery: plan.steps, force: true,
  }, hooks);
  return fromTrain(r, seed);
}

function fromTrain(r: TrainResult, seed: number): { run: CheckRun; backend: Backend } {
  if (r.evalLossBefore === undefined || r.evalLossAfter === undefined) throw new Error(`the run in ${r.adapterDir} measured no held-out loss`);
  return { run: { seed, evalLossBefore: r.evalLossBefore, evalLossAfter: r.evalLossAfter, reduction: r.evalLossBefore - r.evalLossAfter,
    seconds: r.seconds, adapterDir: r.adapterDir }, backend: r.backend };
}
