// The CLI's shared pieces: usage, flag parsing and checking, progress on stderr, results on stdout.
import * as fs from 'node:fs';
import { parseArgs, ParseArgsConfig } from 'node:util';
import { nearest } from '../protocol/format';
import type { BackendChoice, Progress } from '../protocol/messages';
import { LIMITS, limitProblem, type LimitKey } from '../protocol/params';
import { badInput, type JobHooks } from '../engine';

export const VERSION = typeof DOMLORA_VERSION === 'string' ? DOMLORA_VERSION : 'dev';

export const USAGE = `domlora ${VERSION}: find where a LoRA adapter belongs (PAGE), and train it there.

Usage:
  domlora models [MODEL_DIR ...] [--cache DIR | --no-cache] [--json]
  domlora info MODEL_DIR [--rank 8] [--json]
  domlora eval MODEL_DIR --data FILE [--adapter DIR] [--seq-len N] [--max-samples N] [--json]
  domlora generate MODEL_DIR --prompt TEXT [--max-new-tokens 20] [--adapter DIR] [--json]
  domlora probe MODEL_DIR --data FILE [--samples 32] [--seq-len N] [--rank 8] [--alpha 16] [--seed 0] [--bootstrap 200]
                [--sampling first|random] [--until-stable] [--out report.json] [--force] [--compare other.json] [--json]
  domlora train MODEL_DIR --data FILE [--target NAME ...] [--from-report report.json] [--preset domlora|vanilla]
                [--rank 8] [--alpha 16] [--lr 2e-3] [--steps 100 | --epochs E] [--batch-size 4] [--grad-accum 1]
                [--seq-len N] [--max-samples N] [--eval-data FILE | --eval-split 0.05] [--eval-every N] [--seed 0]
                [--warmup-steps N] [--weight-decay 0] [--checkpoint-every N] [--out ADAPTER_DIR] [--force]
                [--keep-checkpoint] [--json]
  domlora train MODEL_DIR --resume ADAPTER_DIR [--steps N] [--json]
  domlora check MODEL_DIR --data FILE --out CHECK_DIR [--report report.json] [--placements LIST] [--steps 30]
                [--seeds 1] [--seed 0] [--lr 2e-3] [--rank 8] [--alpha 16] [--batch-size 4] [--seq-len N]
                [--max-samples 256] [--eval-data FILE | --eval-split 0.125] [--samples 32] [--force] [--json]
  domlora check MODEL_DIR --resume CHECK_DIR [--json]
  domlora compare REPORT REPORT [REPORT ...] [--json]
  domlora export ADAPTER_DIR --format merged|peft-config|axolotl|llamafactory|mlx --out PATH [--force] [--model MODEL_DIR] [--gpus N]
  domlora make-demo-model DIR [--data FILE] [--force]
  domlora demo [--dir demo-output] [--steps 100]

Numbers are checked before any work, each against its range (e.g. --lr above 0 and at most 1, --batch-size 1 to
1024); negative values are read as values (--seed -1 is refused as out of range, not taken for a flag).
--seq-len defaults to the smaller of 512 and the model's context (max_position_embeddings); a longer one is refused
  for learned positions (GPT-2) and warned about for RoPE models. With --from-report, train uses the probe's.
eval, probe and train first say their data (data: FILE — N records, shape ..., S supervised tokens of T; in --json as
  "data") and warn about a file that mixes record shapes or records --seq-len drops.
Outputs (--out) are checked before the model loads. An existing one is refused; --force replaces it only when
  DomLoRA wrote it (a report, an adapter or merged folder holding only DomLoRA's files, an exported config, a demo
  model folder or the demo dataset). demo claims all its outputs in --dir first: it reuses or replaces its own and
  refuses to touch anything else there.
train: the warm-up counts the step being taken, so every step, even of a 1-step run, moves the adapter. An eval
  split must hold at least 4 records (the default 5% steps aside on smaller data, with a warning).
  Without --out the adapter goes to the current folder: ./MODEL-domlora-adapter (./ORG--NAME-domlora-adapter for a
  Hugging Face cache model; -vanilla- with --preset vanilla), never beside the model.
  The finished adapter folder holds PEFT's two files only; --keep-checkpoint keeps checkpoint/ (optimizer state,
  about twice the adapter) so the run can be extended. A run stopped early keeps checkpoint/ until it finishes.
  --resume continues the run in ADAPTER_DIR with its own data and settings: a flag that would change them is
  refused naming the checkpoint's value; --steps N above the checkpoint's extends the run (its remaining steps
  follow the schedule of an N-step run), also a finished one kept with --keep-checkpoint.
check: trains one adapter per placement with the same budget and compares their held-out losses. Placements
  (comma-separated): dominant, runner-up, lowest, random:K (K modules of the dominant's kind), vanilla, or module
  names; default dominant,runner-up,lowest,random:2,vanilla. Without --report it probes --data first. --seeds N
  repeats each placement with seeds seed .. seed+N-1 (the held-out records stay the same) and shows the spread.
  Every adapter is kept in CHECK_DIR/adapters/<placement>/seed-<s>/ (PEFT); --resume continues a cancelled or killed
  check without redoing a finished run. compare: the dominant of each report and their pairwise rank correlation.

Common flags: --backend auto|tensorflow|webgpu|wasm|cpu, --gpu-memory GiB (the GPU budget webgpu jobs plan for; 8),
--threads N, --quiet, --help.
tensorflow: @tensorflow/tfjs-node(-gpu) 4.22.0 from DOMLORA_NATIVE_DIR (where the extension's "Install Native
Backend…" puts it, or a folder made with npm install --prefix DIR), else from beside domlora.
Progress goes to stderr, results to stdout; with --json the last line of stdout is one JSON object, also on
failure: {"error": {"code", "message"}, "exitCode"}. Exit codes: 0 ok, 2 bad input, 1 other failure, 130 cancelled.`;


const common = {
  json: { type: 'boolean' }, backend: { type: 'string' }, quiet: { type: 'boolean' }, threads: { type: 'string' }, 'gpu-memory': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

export function parse<T extends NonNullable<ParseArgsConfig['options']>>(argv: string[], options: T) {
  const all = { ...common, ...options };
  const args = negativesAsValues(argv, all);
  checkFlags(args, all);
  try {
    return parseArgs({ args, options: all, allowPositionals: true, strict: true });
  } catch (e) {
    throw badInput(`${(e as Error).message.split('\n')[0]} (domlora --help lists every command's flags)`);
  }
}

/**
 * The flag mistakes people make, said in their terms before node:util's parseArgs says them in its own: a flag this
 * command does not take (with the nearest it does), and a flag that takes a value given none (at the end, or
 * followed by another flag: `--data --max-samples 2`).
 */
function checkFlags(args: string[], options: NonNullable<ParseArgsConfig['options']>): void {
  const longs = Object.keys(options);
  const shorts = new Map(Object.entries(options).filter(([, o]) => o.short).map(([k, o]) => [o.short!, k]));
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (arg === '--') return;
    if (!arg.startsWith('-') || arg === '-') continue;
    const name = arg.startsWith('--') ? arg.slice(2).split('=')[0]! : shorts.get(arg.slice(1));
    const opt = name !== undefined ? options[name] : undefined;
    if (!opt || name === undefined) {
      const typed = arg.split('=')[0]!;
      const near = nearest(typed.replace(/^-+/, ''), longs).map((f) => `--${f}`);
      throw badInput(`unknown flag ${typed}${near.length ? `; did you mean ${near.join(' or ')}?` : ''} (domlora --help lists every command's flags)`);
    }
    if (opt.type !== 'string' || arg.includes('=')) continue;
    const next = args[i + 1];
    if (next === undefined) throw badInput(`--${name} needs a value`);
    if (next.startsWith('-') && next !== '-') {
      throw badInput(`--${name} needs a value, but ${next} follows it (if that is the value, write --${name}=${next})`);
    }
    i++;
  }
}

/** A negative number: `-1`, `-0.5`, `-.5`, `-1e-3`. */
const NEGATIVE = /^-(\d|\.\d)/;

/**
 * `--rank -1` as `--rank=-1`. node:util's parseArgs reads an argument that starts with a dash as an option, so a
 * negative value would stop with "argument is ambiguous" and never reach the range check that says what is wrong.
 */
export function negativesAsValues(argv: string[], options: NonNullable<ParseArgsConfig['options']>): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--') { out.push(...argv.slice(i)); break; }
    const name = arg.startsWith('--') && !arg.includes('=') ? arg.slice(2) : undefined;
    if (name && options[name]?.type === 'string' && i + 1 < argv.length && NEGATIVE.test(argv[i + 1])) {
      out.push(`${arg}=${argv[++i]}`);
      continue;
    }
    out.push(arg);
  }
  return out;
}

/** Decimal numbers as people type them: `8`, `-1`, `2e-3`, `.5` (not `0x10`, not an empty string). */
const NUMBER = /^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i;

/**
 * The value of a numeric flag, checked against the protocol's table (src/protocol/params.ts) before any work:
 * undefined when the flag is absent, else a number in its range, else exit 2 with the flag's name and its range.
 */
export function num(values: Record<string, unknown>, key: LimitKey): number | undefined {
  const v = values[LIMITS[key].flag];
  if (v === undefined) return undefined;
  const text = String(v).trim();
  const n = NUMBER.test(text) ? Number(text) : NaN;
  const problem = limitProblem(key, Number.isNaN(n) ? String(v) : n);
  if (problem) throw badInput(problem);
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
  if (positionals.length === 0) throw badInput(`${what} is missing (domlora --help shows each command's usage)`);
  if (positionals.length !== 1) {
    throw badInput(`expected one ${what}, got ${positionals.length}: ${positionals.join(' ')} (domlora --help shows each command's usage)`);
  }
  return positionals[0];
}

/**
 * An input file a flag names, checked before any work: there, and a file. The engine reads it later; this only
 * turns ENOENT and EISDIR into a sentence naming the flag.
 */
export function inputFile(file: string | undefined, flag: string, expected: string): string | undefined {
  if (file === undefined) return undefined;
  const st = statOf(file, flag, 'file');
  if (st.isDirectory()) throw badInput(`is a folder, expected ${expected} (${flag})`, file);
  return file;
}

/** A folder a flag names (an adapter, a checkpoint), checked before any work: there, and a folder. */
export function inputFolder(dir: string | undefined, flag: string, expected: string): string | undefined {
  if (dir === undefined) return undefined;
  if (!statOf(dir, flag, 'folder').isDirectory()) throw badInput(`is a file, expected ${expected} (${flag})`, dir);
  return dir;
}

function statOf(p: string, flag: string, what: 'file' | 'folder'): fs.Stats {
  try {
    return fs.statSync(p);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw badInput(code === 'ENOENT' || code === 'ENOTDIR' ? `no such ${what} (${flag})` : `cannot be read (${code ?? String(e)}) (${flag})`, p);
  }
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

