// One function per `domlora` command: parse its flags, call the engine, print the result. Each returns the exit code.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { ProbeReport } from '../protocol/messages';
import { badInput, type JobHooks } from '../engine';
import { backendOf, emit, num, oneModel, parse, progressHooks, required } from './args';
import { formatProbe, fmtPct, useColour } from './format';
import { defaultAdapterDir, formatModels } from './models';

/** What every command gets besides its arguments: the job hooks' abort signal. */
export interface CommandContext { controller: AbortController }
export type Command = (argv: string[], c: CommandContext) => Promise<number>;

/** --threads N sets the wasm thread count for the job (through the environment the backend reads). */
function threads(v: string | undefined): void {
  const n = num(v, 'threads', true);
  if (n) process.env.DOMLORA_THREADS = String(n);
}

const hooksOf = (values: { quiet?: boolean }, c: CommandContext): JobHooks => progressHooks(Boolean(values.quiet), c.controller);

export const info: Command = async (argv) => {
  const a = parse(argv, { rank: { type: 'string' } });
  const { modelInfo } = await import('../engine');
  const r = modelInfo(oneModel(a.positionals), num(a.values.rank, 'rank', true) ?? 8);
  emit(Boolean(a.values.json), r, () => {
    const m = r.model;
    const lines = [`${m.path}`, `  ${m.modelType}: ${m.layers} layers, hidden ${m.hiddenSize}, intermediate ${m.intermediateSize}, ` +
      `${m.heads} heads / ${m.kvHeads} kv heads (head dim ${m.headDim}), vocab ${m.vocabSize}, ${m.parameters.toLocaleString('en-US')} parameters, ${r.dtype}` +
      `${m.tiedEmbeddings ? ', tied embeddings' : ''}`, `  candidate modules: ${r.modules.length} (${r.kinds.join(', ')} per layer); adapter cost at rank ${r.rank}:`];
    const width = Math.max(10, ...r.kinds.map((k) => k.length));
    for (const k of r.kinds) {
      const x = r.modules.find((mm) => mm.kind === k)!;
      lines.push(`    ${k.padEnd(width)} ${String(x.dIn).padStart(6)} -> ${String(x.dOut).padEnd(6)} ${x.adapterParams.toLocaleString('en-US').padStart(9)} params`);
    }
    const vanilla = r.modules.reduce((s, x) => s + x.adapterParams, 0);
    lines.push(`  vanilla LoRA (all ${r.modules.length} modules): ${vanilla.toLocaleString('en-US')} params`);
    return lines.join('\n');
  });
  return 0;
};

export const evaluate: Command = async (argv, c) => {
  const a = parse(argv, { data: { type: 'string' }, adapter: { type: 'string' }, 'seq-len': { type: 'string' }, 'max-samples': { type: 'string' }, 'per-record': { type: 'boolean' } });
  threads(a.values.threads);
  const { runEval } = await import('../engine');
  const r = await runEval({
    modelDir: oneModel(a.positionals), data: required(a.values.data, 'data'), adapter: a.values.adapter,
    seqLen: num(a.values['seq-len'], 'seq-len', true), maxSamples: num(a.values['max-samples'], 'max-samples', true), backend: backendOf(a.values.backend),
    gpuMemoryGiB: num(a.values['gpu-memory'], 'gpu-memory'),
  }, hooksOf(a.values, c));
  const { losses, ...summary } = r;
  emit(Boolean(a.values.json), a.values['per-record'] ? r : summary, () =>
    `mean loss ${r.meanLoss.toFixed(6)} over ${r.samples} records (${r.tokens} supervised tokens${r.skipped ? `, ${r.skipped} skipped` : ''}) on ${r.backend}` +
    (a.values['per-record'] ? '\n' + losses.map((l, i) => `  record ${i}: ${l.toFixed(6)}`).join('\n') : ''));
  return 0;
};

export const generate: Command = async (argv) => {
  const a = parse(argv, { prompt: { type: 'string' }, 'max-new-tokens': { type: 'string' }, adapter: { type: 'string' } });
  threads(a.values.threads);
  const { runGenerate } = await import('../engine');
  const r = await runGenerate({ modelDir: oneModel(a.positionals), prompt: a.values.prompt ?? '', maxNewTokens: num(a.values['max-new-tokens'], 'max-new-tokens', true), backend: backendOf(a.values.backend), adapter: a.values.adapter });
  emit(Boolean(a.values.json), r, () => `${a.values.prompt ?? ''}${r.text}`);
  return 0;
};

export const probe: Command = async (argv, c) => {
  const a = parse(argv, {
    data: { type: 'string' }, samples: { type: 'string' }, 'seq-len': { type: 'string' }, rank: { type: 'string' }, alpha: { type: 'string' },
    seed: { type: 'string' }, out: { type: 'string' }, 'until-stable': { type: 'boolean' }, sampling: { type: 'string' }, compare: { type: 'string' },
    bootstrap: { type: 'string' },
  });
  threads(a.values.threads);
  const sampling = a.values.sampling ?? 'first';
  if (sampling !== 'first' && sampling !== 'random') throw badInput(`--sampling must be "first" or "random", got "${sampling}"`);
  let compareTo: ProbeReport | undefined;
  if (a.values.compare) {
    try { compareTo = JSON.parse(fs.readFileSync(a.values.compare, 'utf8')); } catch (e) { throw badInput(`cannot read the report to compare with (${(e as Error).message})`, a.values.compare); }
    if (!compareTo?.modules || !compareTo.dominant) throw badInput('is not a DomLoRA probe report', a.values.compare);
  }
  const { runProbe, compareReports } = await import('../engine');
  const { report, written } = await runProbe({
    modelDir: oneModel(a.positionals), data: required(a.values.data, 'data'), samples: num(a.values.samples, 'samples', true),
    seqLen: num(a.values['seq-len'], 'seq-len', true), rank: num(a.values.rank, 'rank', true), alpha: num(a.values.alpha, 'alpha'),
    seed: num(a.values.seed, 'seed', true), out: a.values.out, untilStable: Boolean(a.values['until-stable']), sampling,
    bootstrap: num(a.values.bootstrap, 'bootstrap', true), backend: backendOf(a.values.backend), gpuMemoryGiB: num(a.values['gpu-memory'], 'gpu-memory'),
  }, hooksOf(a.values, c));
  const cmp = compareTo ? compareReports(report, compareTo) : undefined;
  emit(Boolean(a.values.json), cmp ? { ...report, comparison: cmp } : report, () => {
    let s = formatProbe(report, useColour(process.stdout));
    if (cmp) {
      s += `\n\nCompared with ${a.values.compare}: dominant ${cmp.sameDominant ? 'is the SAME' : 'DIFFERS'} (${report.dominant.name} vs ${cmp.otherDominant}); ` +
        `Spearman rank correlation of the module orderings ${cmp.spearman.toFixed(3)}; top-10 overlap ${cmp.top10Overlap}/10`;
    }
    if (written) s += `\n  report written to ${written}`;
    return s;
  });
  return 0;
};

export const train: Command = async (argv, c) => {
  const a = parse(argv, {
    data: { type: 'string' }, target: { type: 'string', multiple: true }, 'from-report': { type: 'string' }, preset: { type: 'string' },
    rank: { type: 'string' }, alpha: { type: 'string' }, lr: { type: 'string' }, steps: { type: 'string' }, epochs: { type: 'string' },
    'batch-size': { type: 'string' }, 'grad-accum': { type: 'string' }, 'seq-len': { type: 'string' }, 'eval-data': { type: 'string' },
    'eval-split': { type: 'string' }, 'eval-every': { type: 'string' }, seed: { type: 'string' }, out: { type: 'string' }, resume: { type: 'string' },
    force: { type: 'boolean' }, 'checkpoint-every': { type: 'string' }, 'warmup-steps': { type: 'string' }, 'weight-decay': { type: 'string' },
    'max-samples': { type: 'string' },
  });
  threads(a.values.threads);
  const preset = a.values.preset ?? 'domlora';
  if (preset !== 'domlora' && preset !== 'vanilla') throw badInput(`--preset must be "domlora" or "vanilla", got "${preset}"`);
  const modelDir = oneModel(a.positionals);
  const { runTrain } = await import('../engine');
  const r = await runTrain({
    modelDir, data: required(a.values.data, 'data'), targets: a.values.target, fromReport: a.values['from-report'], preset,
    rank: num(a.values.rank, 'rank', true), alpha: num(a.values.alpha, 'alpha'), lr: num(a.values.lr, 'lr'), steps: num(a.values.steps, 'steps', true),
    epochs: num(a.values.epochs, 'epochs'), batchSize: num(a.values['batch-size'], 'batch-size', true), gradAccum: num(a.values['grad-accum'], 'grad-accum', true),
    seqLen: num(a.values['seq-len'], 'seq-len', true), evalData: a.values['eval-data'], evalSplit: num(a.values['eval-split'], 'eval-split'),
    evalEvery: num(a.values['eval-every'], 'eval-every', true), seed: num(a.values.seed, 'seed', true),
    out: a.values.out ?? a.values.resume ?? defaultAdapterDir(modelDir, preset),
    resume: a.values.resume, force: Boolean(a.values.force), backend: backendOf(a.values.backend), gpuMemoryGiB: num(a.values['gpu-memory'], 'gpu-memory'),
    checkpointEvery: num(a.values['checkpoint-every'], 'checkpoint-every', true), warmupSteps: num(a.values['warmup-steps'], 'warmup-steps', true),
    weightDecay: num(a.values['weight-decay'], 'weight-decay'), maxSamples: num(a.values['max-samples'], 'max-samples', true),
  }, hooksOf(a.values, c));
  emit(Boolean(a.values.json), r, () => {
    const lines = [`trained ${r.preset === 'domlora' ? 'DomLoRA' : 'vanilla LoRA'} at ${r.targets.length === 1 ? r.targets[0] : `${r.targets.length} modules`} for ${r.steps} steps on ${r.backend} in ${r.seconds.toFixed(1)} s`,
      `  trainable parameters ${r.trainableParams.toLocaleString('en-US')} = ${fmtPct(r.ratioToVanilla)} of vanilla LoRA at rank ${r.rank} (${r.vanillaParams.toLocaleString('en-US')})`];
    if (r.trainLossFirst !== undefined) lines.push(`  train loss ${r.trainLossFirst.toFixed(4)} -> ${r.trainLossLast!.toFixed(4)}`);
    if (r.evalLossBefore !== undefined) lines.push(`  eval loss ${r.evalLossBefore.toFixed(4)} -> ${r.evalLossAfter!.toFixed(4)}`);
    lines.push(`  adapter (PEFT format) written to ${r.adapterDir}`);
    return lines.join('\n');
  });
  return 0;
};

export const exportAdapter: Command = async (argv, c) => {
  const a = parse(argv, { format: { type: 'string' }, out: { type: 'string' }, model: { type: 'string' }, force: { type: 'boolean' }, gpus: { type: 'string' } });
  threads(a.values.threads);
  const { runExport } = await import('../engine');
  const r = await runExport({
    adapterDir: oneModel(a.positionals, 'ADAPTER_DIR'), format: required(a.values.format, 'format') as 'merged', out: required(a.values.out, 'out'),
    modelDir: a.values.model, force: Boolean(a.values.force), gpus: num(a.values.gpus, 'gpus', true),
  }, hooksOf(a.values, c));
  emit(Boolean(a.values.json), r, () => r.text);
  return 0;
};

export const makeDemoModel: Command = async (argv) => {
  const a = parse(argv, { data: { type: 'string' } });
  const dir = oneModel(a.positionals, 'DIR');
  const { writeSynthModel, synthDataset } = await import('../engine');
  await writeSynthModel(dir);
  if (a.values.data) synthDataset(a.values.data);
  emit(Boolean(a.values.json), { model: path.resolve(dir), data: a.values.data ? path.resolve(a.values.data) : undefined },
    () => `demo model written to ${path.resolve(dir)}${a.values.data ? `, dataset to ${path.resolve(a.values.data)}` : ''}`);
  return 0;
};

export const demo: Command = async (argv, c) => {
  const a = parse(argv, { dir: { type: 'string' }, steps: { type: 'string' } });
  threads(a.values.threads);
  const { runDemo } = await import('./demo');
  await runDemo(a.values.dir ?? 'demo-output', backendOf(a.values.backend), num(a.values.steps, 'steps', true), hooksOf(a.values, c));
  return 0;
};

/** `domlora models`: the Hugging Face cache's model snapshots and the given folders, one line each, from headers alone. */
export const models: Command = async (argv) => {
  const a = parse(argv, { cache: { type: 'string' }, 'no-cache': { type: 'boolean' } });
  if (a.values.cache !== undefined && a.values['no-cache']) throw badInput('--cache and --no-cache exclude each other');
  for (const f of a.positionals) {
    if (!fs.existsSync(f)) throw badInput('model folder does not exist', path.resolve(f));
    if (!fs.statSync(f).isDirectory()) throw badInput('is not a folder (expected a Hugging Face model folder)', path.resolve(f));
  }
  const { listModels } = await import('../engine');
  const r = listModels({ folders: a.positionals, cacheDir: a.values.cache, noCache: Boolean(a.values['no-cache']) });
  emit(Boolean(a.values.json), r, () => formatModels(r));
  return 0;
};

export const COMMANDS: Record<string, Command> = {
  models,
  info, eval: evaluate, generate, probe, train, export: exportAdapter, 'make-demo-model': makeDemoModel, demo,
};
