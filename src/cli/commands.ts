// One function per `domlora` command: parse its flags, call the engine, print the result. Each returns the exit code.
// Every flag is read and checked (numbers against src/protocol/params.ts) before the engine is loaded.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { LimitKey } from '../protocol/params';
import { badInput, type JobHooks } from '../engine';
import { backendOf, emit, inputFile, inputFolder, num, oneModel, parse, progressHooks, required } from './args';
import { formatCheck, formatCompare, formatProbe, fmtPct, useColour } from './format';
import { defaultAdapterDir, formatModels } from './models';

/** What every command gets besides its arguments: the job hooks' abort signal. */
export interface CommandContext { controller: AbortController }
export type Command = (argv: string[], c: CommandContext) => Promise<number>;

/** The checked values of the numeric flags `keys` (absent ones undefined), and --threads, which every command takes. */
function numbers<K extends LimitKey>(values: Record<string, unknown>, keys: readonly K[]): Record<K, number | undefined> {
  const out = {} as Record<K, number | undefined>;
  for (const k of keys) out[k] = num(values, k);
  // --threads N sets the wasm thread count for the job (through the environment the backend reads).
  const threads = num(values, 'threads');
  if (threads !== undefined) process.env.DOMLORA_THREADS = String(threads);
  return out;
}

/** A dataset a flag names, there and a file (an empty value is left to the command: --resume reads its own). */
const dataFile = <T extends string | undefined>(file: T, flag: string): T => (file ? inputFile(file, flag, 'a JSON or JSON Lines file') as T : file);
const adapterDir = (dir: string | undefined) => inputFolder(dir, '--adapter', 'an adapter folder (adapter_config.json, adapter_model.safetensors)');

const hooksOf = (values: { quiet?: boolean }, c: CommandContext): JobHooks => progressHooks(Boolean(values.quiet), c.controller);

export const info: Command = async (argv) => {
  const a = parse(argv, { rank: { type: 'string' } });
  const n = numbers(a.values, ['rank']);
  const modelDir = oneModel(a.positionals);
  const { modelInfo } = await import('../engine');
  const r = modelInfo(modelDir, n.rank);
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
  const n = numbers(a.values, ['seqLen', 'maxSamples', 'gpuMemoryGiB']);
  const params = { modelDir: oneModel(a.positionals), data: dataFile(required(a.values.data, 'data'), '--data'), adapter: adapterDir(a.values.adapter),
    ...n, backend: backendOf(a.values.backend) };
  const { runEval } = await import('../engine');
  const r = await runEval(params, hooksOf(a.values, c));
  const { losses, ...summary } = r;
  emit(Boolean(a.values.json), a.values['per-record'] ? r : summary, () =>
    `mean loss ${r.meanLoss.toFixed(6)} over ${r.samples} records (${r.tokens} supervised tokens${r.skipped ? `, ${r.skipped} skipped` : ''}) on ${r.backend}` +
    (a.values['per-record'] ? '\n' + losses.map((l, i) => `  record ${i}: ${l.toFixed(6)}`).join('\n') : ''));
  return 0;
};

export const generate: Command = async (argv) => {
  const a = parse(argv, { prompt: { type: 'string' }, 'max-new-tokens': { type: 'string' }, adapter: { type: 'string' } });
  const n = numbers(a.values, ['maxNewTokens']);
  const params = { modelDir: oneModel(a.positionals), prompt: a.values.prompt ?? '', ...n, backend: backendOf(a.values.backend), adapter: adapterDir(a.values.adapter) };
  const { runGenerate } = await import('../engine');
  const r = await runGenerate(params);
  emit(Boolean(a.values.json), r, () => `${a.values.prompt ?? ''}${r.text}`);
  return 0;
};

export const probe: Command = async (argv, c) => {
  const a = parse(argv, {
    data: { type: 'string' }, samples: { type: 'string' }, 'seq-len': { type: 'string' }, rank: { type: 'string' }, alpha: { type: 'string' },
    seed: { type: 'string' }, out: { type: 'string' }, 'until-stable': { type: 'boolean' }, sampling: { type: 'string' }, compare: { type: 'string' },
    bootstrap: { type: 'string' }, force: { type: 'boolean' },
  });
  const n = numbers(a.values, ['samples', 'seqLen', 'rank', 'alpha', 'seed', 'bootstrap', 'gpuMemoryGiB']);
  const sampling = a.values.sampling ?? 'first';
  if (sampling !== 'first' && sampling !== 'random') throw badInput(`--sampling must be "first" or "random", got "${sampling}"`);
  const params = {
    modelDir: oneModel(a.positionals), data: dataFile(required(a.values.data, 'data'), '--data'), ...n, out: a.values.out, force: Boolean(a.values.force),
    untilStable: Boolean(a.values['until-stable']), sampling, compare: inputFile(a.values.compare, '--compare', 'a PAGE report (.json)'),
    backend: backendOf(a.values.backend),
  } as const;
  const { runProbe } = await import('../engine');
  const { report, written } = await runProbe(params, hooksOf(a.values, c));
  emit(Boolean(a.values.json), report, () => {
    let s = formatProbe(report, useColour(process.stdout));
    const cmp = report.comparison;
    if (cmp) {
      s += `\n\nCompared with ${cmp.other}: dominant ${cmp.sameDominant ? 'is the SAME' : 'DIFFERS'} (${report.dominant.name} vs ${cmp.otherDominant}); ` +
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
    'max-samples': { type: 'string' }, 'keep-checkpoint': { type: 'boolean' },
  });
  const n = numbers(a.values, ['rank', 'alpha', 'lr', 'steps', 'epochs', 'batchSize', 'gradAccum', 'seqLen', 'evalSplit', 'evalEvery', 'seed',
    'checkpointEvery', 'warmupSteps', 'weightDecay', 'maxSamples', 'gpuMemoryGiB']);
  const preset = a.values.preset as 'domlora' | 'vanilla' | undefined;
  if (preset !== undefined && preset !== 'domlora' && preset !== 'vanilla') throw badInput(`--preset must be "domlora" or "vanilla", got "${String(preset)}"`);
  const modelDir = oneModel(a.positionals);
  // Resuming reads the data from the checkpoint; a fresh run needs it.
  const data = dataFile(a.values.resume ? a.values.data ?? '' : required(a.values.data, 'data'), '--data');
  inputFolder(a.values.resume, '--resume', 'the adapter folder of the run to continue');
  const params = {
    modelDir, data, targets: a.values.target, fromReport: inputFile(a.values['from-report'], '--from-report', 'a PAGE report (.json)'), preset, ...n,
    evalData: dataFile(a.values['eval-data'], '--eval-data'),
    out: a.values.out ?? a.values.resume ?? defaultAdapterDir(modelDir, preset ?? 'domlora'), resume: a.values.resume, force: Boolean(a.values.force),
    keepCheckpoint: Boolean(a.values['keep-checkpoint']), backend: backendOf(a.values.backend),
  };
  const { runTrain } = await import('../engine');
  const r = await runTrain(params, hooksOf(a.values, c));
  emit(Boolean(a.values.json), r, () => {
    const lines = [`trained ${r.preset === 'domlora' ? 'DomLoRA' : 'vanilla LoRA'} at ${r.targets.length === 1 ? r.targets[0] : `${r.targets.length} modules`} for ${r.steps} step${r.steps === 1 ? '' : 's'} on ${r.backend} in ${r.seconds.toFixed(1)} s`,
      `  trainable parameters ${r.trainableParams.toLocaleString('en-US')} = ${fmtPct(r.ratioToVanilla)} of vanilla LoRA at rank ${r.rank} (${r.vanillaParams.toLocaleString('en-US')})`];
    if (r.trainLossFirst !== undefined) lines.push(`  train loss ${r.trainLossFirst.toFixed(4)} -> ${r.trainLossLast!.toFixed(4)}`);
    if (r.evalLossBefore !== undefined) lines.push(`  eval loss ${r.evalLossBefore.toFixed(4)} -> ${r.evalLossAfter!.toFixed(4)}`);
    lines.push(`  adapter (PEFT format) written to ${r.adapterDir}`);
    return lines.join('\n');
  });
  return 0;
};

/** `domlora check`: one adapter per placement, the same budget for each, compared on the same held-out records. */
export const check: Command = async (argv, c) => {
  const a = parse(argv, {
    data: { type: 'string' }, report: { type: 'string' }, placements: { type: 'string', multiple: true }, rank: { type: 'string' },
    alpha: { type: 'string' }, lr: { type: 'string' }, steps: { type: 'string' }, 'batch-size': { type: 'string' }, 'grad-accum': { type: 'string' },
    'seq-len': { type: 'string' }, 'eval-data': { type: 'string' }, 'eval-split': { type: 'string' }, seed: { type: 'string' }, seeds: { type: 'string' },
    'max-samples': { type: 'string' }, samples: { type: 'string' }, 'warmup-steps': { type: 'string' }, 'weight-decay': { type: 'string' },
    out: { type: 'string' }, resume: { type: 'string' }, force: { type: 'boolean' },
  });
  const n = numbers(a.values, ['rank', 'alpha', 'lr', 'steps', 'batchSize', 'gradAccum', 'seqLen', 'evalSplit', 'seed', 'seeds', 'maxSamples',
    'samples', 'warmupSteps', 'weightDecay', 'gpuMemoryGiB']);
  const modelDir = oneModel(a.positionals);
  const resume = a.values.resume;
  if (resume && a.values.force) throw badInput('--force starts a check afresh and --resume continues one; give one of them');
  const params = {
    modelDir, data: resume ? dataFile(a.values.data, '--data') ?? '' : dataFile(required(a.values.data, 'data'), '--data'),
    report: inputFile(a.values.report, '--report', 'a PAGE report (.json)'), placements: a.values.placements,
    ...n, evalData: dataFile(a.values['eval-data'], '--eval-data'), out: resume ? inputFolder(resume, '--resume', 'the folder of the check to continue')! : required(a.values.out, 'out'),
    resume, force: Boolean(a.values.force),
    backend: backendOf(a.values.backend),
  };
  const { runCheck } = await import('../engine');
  const r = await runCheck(params, hooksOf(a.values, c));
  emit(Boolean(a.values.json), r, () => formatCheck(r));
  return 0;
};

/** `domlora compare R1 R2 ...`: probe reports of one model, pairwise. */
export const compare: Command = async (argv) => {
  const a = parse(argv, {});
  numbers(a.values, []);
  if (a.positionals.length < 2) throw badInput(`compare needs two or more reports, got ${a.positionals.length ? a.positionals.join(' ') : 'none'}`);
  const { runCompare } = await import('../engine');
  const r = runCompare({ reports: a.positionals.map((f) => inputFile(f, 'REPORT', 'a PAGE report (.json)')!) });
  emit(Boolean(a.values.json), r, () => formatCompare(r));
  return 0;
};

export const exportAdapter: Command = async (argv, c) => {
  const a = parse(argv, { format: { type: 'string' }, out: { type: 'string' }, model: { type: 'string' }, force: { type: 'boolean' }, gpus: { type: 'string' } });
  const n = numbers(a.values, ['gpus']);
  const params = {
    adapterDir: inputFolder(oneModel(a.positionals, 'ADAPTER_DIR'), 'ADAPTER_DIR', 'an adapter folder')!, format: required(a.values.format, 'format') as 'merged', out: required(a.values.out, 'out'),
    modelDir: a.values.model, force: Boolean(a.values.force), ...n,
  };
  const { runExport } = await import('../engine');
  const r = await runExport(params, hooksOf(a.values, c));
  emit(Boolean(a.values.json), r, () => r.text);
  return 0;
};

export const makeDemoModel: Command = async (argv) => {
  const a = parse(argv, { data: { type: 'string' }, force: { type: 'boolean' } });
  numbers(a.values, []);
  const dir = oneModel(a.positionals, 'DIR');
  const force = Boolean(a.values.force);
  const { writeSynthModel, synthDataset, claimOutput } = await import('../engine');
  // Both outputs are claimed before either is written: a folder or file of the user's stops the command with
  // nothing changed, and --force replaces only a demo model folder or the demo dataset DomLoRA wrote itself.
  const model = claimOutput(dir, 'demo-model', { force, flag: 'DIR' });
  let data;
  try {
    data = a.values.data ? claimOutput(a.values.data, 'demo-data', { force, flag: '--data' }) : undefined;
  } catch (e) {
    model.release();
    throw e;
  }
  await writeSynthModel(model.path);
  if (data) synthDataset(data.path);
  emit(Boolean(a.values.json), { model: model.path, data: data?.path },
    () => `demo model written to ${model.path}${data ? `, dataset to ${data.path}` : ''}`);
  return 0;
};

export const demo: Command = async (argv, c) => {
  const a = parse(argv, { dir: { type: 'string' }, steps: { type: 'string' } });
  const n = numbers(a.values, ['steps']);
  const { runDemo } = await import('./demo');
  await runDemo(a.values.dir ?? 'demo-output', backendOf(a.values.backend), n.steps, hooksOf(a.values, c));
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
  info, eval: evaluate, generate, probe, train, check, compare, export: exportAdapter, 'make-demo-model': makeDemoModel, demo,
};
