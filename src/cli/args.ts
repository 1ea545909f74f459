// The CLI's shared pieces: usage, flag parsing and checking, progress on stderr, results on stdout.
import { parseArgs, ParseArgsConfig } from 'node:util';
import type { BackendChoice, Progress } from '../protocol/messages';
import { badInput, type JobHooks } from '../engine';

export const VERSION = typeof DOMLORA_VERSION === 'string' ? DOMLORA_VERSION : 'dev';

export const USAGE = `domlora ${VERSION}: find where a LoRA adapter belongs (PAGE), and train it there.

Usage:
  domlora models [MODEL_DIR ...] [--cache DIR | --no-cache] [--json]
  domlora info MODEL_DIR [--rank 8] [--json]
  domlora eval MODEL_DIR --data FILE [--adapter DIR] [--seq-len 512] [--max-samples N] [--json]
  domlora generate MODEL_DIR --prompt TEXT [--max-new-tokens 20] [--adapter DIR] [--json]
  domlora probe MODEL_DIR --data FILE [--samples 32] [--seq-len 512] [--rank 8] [--alpha 16] [--seed 0]
                [--sampling first|random] [--until-stable] [--out report.json] [--compare other.json] [--json]
  domlora train MODEL_DIR --data FILE [--target NAME ...] [--from-report report.json] [--preset domlora|vanilla]
                [--rank 8] [--alpha 16] [--lr 2e-3] [--steps N | --epochs E] [--batch-size 4] [--grad-accum 1]
                [--seq-len 512] [--eval-data FILE | --eval-split 0.05] [--seed 0] [--out ADAPTER_DIR]
                [--resume ADAPTER_DIR] [--force] [--json]
  domlora export ADAPTER_DIR --format merged|peft-config|axolotl|llamafactory|mlx --out PATH [--model MODEL_DIR] [--gpus N]
  domlora make-demo-model DIR [--data FILE]
  domlora demo [--dir demo-output]

Common flags: --backend auto|tensorflow|webgpu|wasm|cpu, --gpu-memory GiB (the GPU budget webgpu jobs plan for; 8), --threads N,
--quiet.
tensorflow: @tensorflow/tfjs-node(-gpu) 4.22.0 from DOMLORA_NATIVE_DIR (where the extension's "Install Native
Backend…" puts it, or a folder made with npm install --prefix DIR), else from beside domlora.
Progress goes to stderr, results to stdout; with --json the last line of stdout is one JSON object.`;


const common = {
  json: { type: 'boolean' }, backend: { type: 'string' }, quiet: { type: 'boolean' }, threads: { type: 'string' }, 'gpu-memory': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

export function parse<T extends NonNullable<ParseArgsConfig['options']>>(argv: string[], options: T) {
  try {
    return parseArgs({ args: argv, options: { ...common, ...options }, allowPositionals: true, strict: true });
  } catch (e) {
    throw badInput(`${(e as Error).message.split('\n')[0]}\n\n${USAGE}`);
  }
}

export function num(v: string | undefined, flag: string, integer = false): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isFinite(n) || (integer && !Number.isInteger(n))) throw badInput(`--${flag} must be ${integer ? 'an integer' : 'a number'}, got "${v}"`);
  return n;
}

export function backendOf(v: string | undefined): BackendChoice {
  const ok = ['auto', 'tensorflow', 'webgpu', 'wasm', 'cpu'];
  const from = v === undefined ? 'DOMLORA_BACKEND' : '--backend';
  v ??= process.env.DOMLORA_BACKEND || 'auto';
  if (!ok.includes(v)) throw badInput(`${from} must be one of ${ok.join(', ')}, got "${v}"`);
  return v as BackendChoice;
}

export function oneModel(positionals: string[], what = 'MODEL_DIR'): string {
  if (positionals.length !== 1) throw badInput(`expected one ${what}, got ${positionals.length ? positionals.join(' ') : 'none'}\n\n${USAGE}`);
  return positionals[0];
}

export function required(v: string | undefined, flag: string): string {
  if (!v) throw badInput(`--${flag} is required`);
  return v;
}

/** Progress on stderr: one updating line on a terminal, a line every few seconds otherwise. */
export function progressHooks(quiet: boolean, controller: AbortController): JobHooks {
  // Under the quiet parent (main.ts), stderr is a pipe to it that ends at a terminal.
  const tty = process.stderr.isTTY || process.env.DOMLORA_STDERR_TTY === "1";
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

export function emit(json: boolean, value: unknown, text: () => string): void {
  if (json) process.stdout.write(JSON.stringify(value) + '\n');
  else process.stdout.write(text() + '\n');
}

