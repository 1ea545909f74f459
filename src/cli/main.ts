// `domlora`: the headless front end. Parses flags, calls the engine, prints progress to stderr and results to stdout.
// Exit codes: 0 ok, 2 bad input, 1 other failure (130 when interrupted).
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseArgs, ParseArgsConfig } from 'node:util';
import type { BackendChoice, Progress } from '../protocol/messages';
import { DomLoraError, badInput, toErrorInfo } from '../engine/runtime/errors';
import type { JobHooks } from '../engine/runtime/jobs';
import { formatProbe, fmtPct, useColour } from './format';

const VERSION = typeof DOMLORA_VERSION === 'string' ? DOMLORA_VERSION : 'dev';

const USAGE = `domlora ${VERSION}: find where a LoRA adapter belongs (PAGE), and train it there.

Usage:
  domlora info MODEL_DIR [--rank 8] [--json]
  domlora eval MODEL_DIR --data FILE [--adapter DIR] [--seq-len 512] [--max-samples N] [--json]
  domlora generate MODEL_DIR --prompt TEXT [--max-new-tokens 20] [--adapter DIR] [--json]
  domlora probe MODEL_DIR --data FILE [--samples 32] [--seq-len 512] [--rank 8] [--alpha 16] [--seed 0]
                [--sampling first|random] [--until-stable] [--out report.json] [--compare other.json] [--json]
  domlora train MODEL_DIR --data FILE [--target NAME ...] [--from-report report.json] [--preset domlora|vanilla]
                [--rank 8] [--alpha 16] [--lr 2e-3] [--steps N | --epochs E] [--batch-size 4] [--grad-accum 1]
                [--seq-len 512] [--eval-data FILE | --eval-split 0.05] [--seed 0] [--out ADAPTER_DIR]
                [--resume ADAPTER_DIR] [--force] [--json]
  domlora export ADAPTER_DIR --format merged|peft-config|axolotl|llamafactory|mlx --out PATH [--model MODEL_DIR] [--gpus 8]
  domlora make-demo-model DIR [--data FILE]
  domlora demo [--dir demo-output]

Common flags: --backend auto|tensorflow|webgpu|wasm|cpu, --threads N, --quiet.
Progress goes to stderr, results to stdout; with --json the last line of stdout is one JSON object.`;

const common = {
  json: { type: 'boolean' }, backend: { type: 'string' }, quiet: { type: 'boolean' }, threads: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

function parse<T extends NonNullable<ParseArgsConfig['options']>>(argv: string[], options: T) {
  try {
    return parseArgs({ args: argv, options: { ...common, ...options }, allowPositionals: true, strict: true });
  } catch (e) {
    throw badInput(`${(e as Error).message.split('\n')[0]}\n\n${USAGE}`);
  }
}

function num(v: string | undefined, flag: string, integer = false): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isFinite(n) || (integer && !Number.isInteger(n))) throw badInput(`--${flag} must be ${integer ? 'an integer' : 'a number'}, got "${v}"`);
  return n;
}

function backendOf(v: string | undefined): BackendChoice {
  const ok = ['auto', 'tensorflow', 'webgpu', 'wasm', 'cpu'];
  const from = v === undefined ? 'DOMLORA_BACKEND' : '--backend';
  v ??= process.env.DOMLORA_BACKEND || 'auto';
  if (!ok.includes(v)) throw badInput(`${from} must be one of ${ok.join(', ')}, got "${v}"`);
  return v as BackendChoice;
}

function oneModel(positionals: string[], what = 'MODEL_DIR'): string {
  if (positionals.length !== 1) throw badInput(`expected one ${what}, got ${positionals.length ? positionals.join(' ') : 'none'}\n\n${USAGE}`);
  return positionals[0];
}

function required(v: string | undefined, flag: string): string {
  if (!v) throw badInput(`--${flag} is required`);
  return v;
}

/** Progress on stderr: one updating line on a terminal, a line every few seconds otherwise. */
function progressHooks(quiet: boolean, controller: AbortController): JobHooks {
  const tty = process.stderr.isTTY;
  let lastPrint = 0;
  let lastPhase = '';
  const clock = (s?: number) => (s === undefined ? '?' : `${Math.floor(s / 60)}:${String(Math.round(s % 60)).padStart(2, '0')}`);
  return {
    signal: controller.signal,
    log(level, message) { if (!quiet || level !== 'info') process.stderr.write(`${tty ? '\r\x1b[K' : ''}${level === 'info' ? '' : `${level}: `}${message}\n`); },
    onProgress(p: Progress) {
      if (quiet) return;
      const now = Date.now();
      const final = p.done === p.total;
      if (!tty && !final && now - lastPrint < 2000 && p.phase === lastPhase) return;
      lastPrint = now;
      lastPhase = p.phase;
      const parts = [`${p.phase} ${p.done}/${p.total}`];
      if (p.loss !== undefined) parts.push(`loss ${p.loss.toFixed(4)}`);
      if (p.evalLoss !== undefined) parts.push(`eval ${p.evalLoss.toFixed(4)}`);
      if (p.lr !== undefined) parts.push(`lr ${p.lr.toExponential(2)}`);
      if (p.tokensPerSecond !== undefined) parts.push(`${Math.round(p.tokensPerSecond)} tok/s`);
      if (p.etaSeconds !== undefined && !final) parts.push(`ETA ${clock(p.etaSeconds)}`);
      if (p.message) parts.push(p.message);
      process.stderr.write(tty ? `\r\x1b[K${parts.join(' · ')}${final ? '\n' : ''}` : `${parts.join(' · ')}\n`);
    },
  };
}

function emit(json: boolean, value: unknown, text: () => string): void {
  if (json) process.stdout.write(JSON.stringify(value) + '\n');
  else process.stdout.write(text() + '\n');
}

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (!cmd || cmd === '--help' || cmd === '-h' || cmd === 'help') { process.stdout.write(USAGE + '\n'); return cmd ? 0 : 2; }
  if (cmd === '--version') { process.stdout.write(VERSION + '\n'); return 0; }
  const controller = new AbortController();
  let interrupts = 0;
  process.on('SIGINT', () => {
    if (++interrupts > 1) process.exit(130);
    process.stderr.write('\ncancelling (files already written stay as they were; Ctrl-C again to quit now)\n');
    controller.abort();
  });
  const threads = (v: string | undefined) => { const n = num(v, 'threads', true); if (n) process.env.DOMLORA_THREADS = String(n); };

  switch (cmd) {
    case 'info': {
      const a = parse(rest, { rank: { type: 'string' } });
      const { modelInfo } = await import('../engine/hf/folder');
      const info = modelInfo(oneModel(a.positionals), num(a.values.rank, 'rank', true) ?? 8);
      emit(Boolean(a.values.json), info, () => {
        const m = info.model;
        const lines = [`${m.path}`, `  ${m.modelType}: ${m.layers} layers, hidden ${m.hiddenSize}, intermediate ${m.intermediateSize}, ` +
          `${m.heads} heads / ${m.kvHeads} kv heads (head dim ${m.headDim}), vocab ${m.vocabSize}, ${m.parameters.toLocaleString('en-US')} parameters, ${info.dtype}` +
          `${m.tiedEmbeddings ? ', tied embeddings' : ''}`, `  candidate modules: ${info.modules.length} (${info.kinds.join(', ')} per layer); adapter cost at rank ${info.rank}:`];
        const width = Math.max(10, ...info.kinds.map((k) => k.length));
        for (const k of info.kinds) {
          const x = info.modules.find((mm) => mm.kind === k)!;
          lines.push(`    ${k.padEnd(width)} ${String(x.dIn).padStart(6)} -> ${String(x.dOut).padEnd(6)} ${x.adapterParams.toLocaleString('en-US').padStart(9)} params`);
        }
        const vanilla = info.modules.reduce((s, x) => s + x.adapterParams, 0);
        lines.push(`  vanilla LoRA (all ${info.modules.length} modules): ${vanilla.toLocaleString('en-US')} params`);
        return lines.join('\n');
      });
      return 0;
    }
    case 'eval': {
      const a = parse(rest, { data: { type: 'string' }, adapter: { type: 'string' }, 'seq-len': { type: 'string' }, 'max-samples': { type: 'string' }, 'per-record': { type: 'boolean' } });
      threads(a.values.threads);
      const { runEval } = await import('../engine/eval/evaluate');
      const r = await runEval({
        modelDir: oneModel(a.positionals), data: required(a.values.data, 'data'), adapter: a.values.adapter,
        seqLen: num(a.values['seq-len'], 'seq-len', true), maxSamples: num(a.values['max-samples'], 'max-samples', true), backend: backendOf(a.values.backend),
      }, progressHooks(Boolean(a.values.quiet), controller));
      const { losses, ...summary } = r;
      emit(Boolean(a.values.json), a.values['per-record'] ? r : summary, () =>
        `mean loss ${r.meanLoss.toFixed(6)} over ${r.samples} records (${r.tokens} supervised tokens${r.skipped ? `, ${r.skipped} skipped` : ''}) on ${r.backend}` +
        (a.values['per-record'] ? '\n' + losses.map((l, i) => `  record ${i}: ${l.toFixed(6)}`).join('\n') : ''));
      return 0;
    }
    case 'generate': {
      const a = parse(rest, { prompt: { type: 'string' }, 'max-new-tokens': { type: 'string' }, adapter: { type: 'string' } });
      threads(a.values.threads);
      const { runGenerate } = await import('../engine/eval/evaluate');
      const r = await runGenerate({ modelDir: oneModel(a.positionals), prompt: a.values.prompt ?? '', maxNewTokens: num(a.values['max-new-tokens'], 'max-new-tokens', true), backend: backendOf(a.values.backend), adapter: a.values.adapter });
      emit(Boolean(a.values.json), r, () => `${a.values.prompt ?? ''}${r.text}`);
      return 0;
    }
    case 'probe': {
      const a = parse(rest, {
        data: { type: 'string' }, samples: { type: 'string' }, 'seq-len': { type: 'string' }, rank: { type: 'string' }, alpha: { type: 'string' },
        seed: { type: 'string' }, out: { type: 'string' }, 'until-stable': { type: 'boolean' }, sampling: { type: 'string' }, compare: { type: 'string' },
        bootstrap: { type: 'string' },
      });
      threads(a.values.threads);
      const sampling = a.values.sampling ?? 'first';
      if (sampling !== 'first' && sampling !== 'random') throw badInput(`--sampling must be "first" or "random", got "${sampling}"`);
      let compareTo: import('../protocol/messages').ProbeReport | undefined;
      if (a.values.compare) {
        try { compareTo = JSON.parse(fs.readFileSync(a.values.compare, 'utf8')); } catch (e) { throw badInput(`cannot read the report to compare with (${(e as Error).message})`, a.values.compare); }
        if (!compareTo?.modules || !compareTo.dominant) throw badInput('is not a DomLoRA probe report', a.values.compare);
      }
      const { runProbe } = await import('../engine/probe/page');
      const { report, written } = await runProbe({
        modelDir: oneModel(a.positionals), data: required(a.values.data, 'data'), samples: num(a.values.samples, 'samples', true),
        seqLen: num(a.values['seq-len'], 'seq-len', true), rank: num(a.values.rank, 'rank', true), alpha: num(a.values.alpha, 'alpha'),
        seed: num(a.values.seed, 'seed', true), out: a.values.out, untilStable: Boolean(a.values['until-stable']), sampling,
        bootstrap: num(a.values.bootstrap, 'bootstrap', true), backend: backendOf(a.values.backend),
      }, progressHooks(Boolean(a.values.quiet), controller));
      const { compareReports } = await import('../engine/probe/compare');
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
    }
    case 'train': {
      const a = parse(rest, {
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
      const { runTrain } = await import('../engine/train/loop');
      const r = await runTrain({
        modelDir, data: required(a.values.data, 'data'), targets: a.values.target, fromReport: a.values['from-report'], preset,
        rank: num(a.values.rank, 'rank', true), alpha: num(a.values.alpha, 'alpha'), lr: num(a.values.lr, 'lr'), steps: num(a.values.steps, 'steps', true),
        epochs: num(a.values.epochs, 'epochs'), batchSize: num(a.values['batch-size'], 'batch-size', true), gradAccum: num(a.values['grad-accum'], 'grad-accum', true),
        seqLen: num(a.values['seq-len'], 'seq-len', true), evalData: a.values['eval-data'], evalSplit: num(a.values['eval-split'], 'eval-split'),
        evalEvery: num(a.values['eval-every'], 'eval-every', true), seed: num(a.values.seed, 'seed', true),
        out: a.values.out ?? a.values.resume ?? path.join(path.dirname(path.resolve(modelDir)), `${path.basename(path.resolve(modelDir))}-${preset}-adapter`),
        resume: a.values.resume, force: Boolean(a.values.force), backend: backendOf(a.values.backend),
        checkpointEvery: num(a.values['checkpoint-every'], 'checkpoint-every', true), warmupSteps: num(a.values['warmup-steps'], 'warmup-steps', true),
        weightDecay: num(a.values['weight-decay'], 'weight-decay'), maxSamples: num(a.values['max-samples'], 'max-samples', true),
      }, progressHooks(Boolean(a.values.quiet), controller));
      emit(Boolean(a.values.json), r, () => {
        const lines = [`trained ${r.preset === 'domlora' ? 'DomLoRA' : 'vanilla LoRA'} at ${r.targets.length === 1 ? r.targets[0] : `${r.targets.length} modules`} for ${r.steps} steps on ${r.backend} in ${r.seconds.toFixed(1)} s`,
          `  trainable parameters ${r.trainableParams.toLocaleString('en-US')} = ${fmtPct(r.ratioToVanilla)} of vanilla LoRA at rank ${r.rank} (${r.vanillaParams.toLocaleString('en-US')})`];
        if (r.trainLossFirst !== undefined) lines.push(`  train loss ${r.trainLossFirst.toFixed(4)} -> ${r.trainLossLast!.toFixed(4)}`);
        if (r.evalLossBefore !== undefined) lines.push(`  eval loss ${r.evalLossBefore.toFixed(4)} -> ${r.evalLossAfter!.toFixed(4)}`);
        lines.push(`  adapter (PEFT format) written to ${r.adapterDir}`);
        return lines.join('\n');
      });
      return 0;
    }
    case 'export': {
      const a = parse(rest, { format: { type: 'string' }, out: { type: 'string' }, model: { type: 'string' }, force: { type: 'boolean' }, gpus: { type: 'string' } });
      threads(a.values.threads);
      const { runExport } = await import('../engine/export/exporters');
      const r = await runExport({
        adapterDir: oneModel(a.positionals, 'ADAPTER_DIR'), format: required(a.values.format, 'format') as 'merged', out: required(a.values.out, 'out'),
        modelDir: a.values.model, force: Boolean(a.values.force), gpus: num(a.values.gpus, 'gpus', true),
      }, progressHooks(Boolean(a.values.quiet), controller));
      emit(Boolean(a.values.json), r, () => r.text);
      return 0;
    }
    case 'make-demo-model': {
      const a = parse(rest, { data: { type: 'string' } });
      const dir = oneModel(a.positionals, 'DIR');
      const { writeSynthModel, synthDataset } = await import('../engine/hf/synth');
      await writeSynthModel(dir);
      if (a.values.data) synthDataset(a.values.data);
      emit(Boolean(a.values.json), { model: path.resolve(dir), data: a.values.data ? path.resolve(a.values.data) : undefined },
        () => `demo model written to ${path.resolve(dir)}${a.values.data ? `, dataset to ${path.resolve(a.values.data)}` : ''}`);
      return 0;
    }
    case 'demo': {
      const a = parse(rest, { dir: { type: 'string' }, steps: { type: 'string' } });
      threads(a.values.threads);
      const { runDemo } = await import('./demo');
      await runDemo(a.values.dir ?? 'demo-output', backendOf(a.values.backend), num(a.values.steps, 'steps', true), progressHooks(Boolean(a.values.quiet), controller));
      return 0;
    }
    default:
      throw badInput(`unknown command "${cmd}"\n\n${USAGE}`);
  }
}

main(process.argv.slice(2)).then(
  (code) => { process.exitCode = code; },
  (err) => {
    const info = toErrorInfo(err);
    if (info.code === 'cancelled') { process.stderr.write('cancelled\n'); process.exitCode = 130; return; }
    process.stderr.write(`domlora: ${!(err instanceof DomLoraError) && process.env.DOMLORA_DEBUG ? (err as Error).stack : info.message}\n`);
    process.exitCode = info.code === 'bad-input' ? 2 : 1;
  },
).finally(() => {
  // Wasm worker threads must not keep the process alive once the job is done; exit once stdout is flushed (it is
  // asynchronous when piped, and exiting earlier would cut the JSON line).
  process.stdout.write('', () => process.stderr.write('', () => process.exit()));
});
