// `npm run bench`: ours (tfjs-wasm) against a PyTorch reference (test/reference/bench_torch.py) on a random model
// with SmolLM-135M's shapes. Prints each pair with the ratio ours/PyTorch and writes bench-results/bench.json.
//
//   npm run bench                       the whole run (model + data in a temp folder, removed at the end)
//   BENCH_RECORDS=4 npm run bench       PAGE over fewer records (said so in the output)
//   BENCH_KEEP=1                        keep the temp folder
//   BENCH_LARGE=0                       skip (d), the 0.5B-parameter model probed on wasm with streamed layers
//
// For other machines (scripts/gpu-check.sh runs it on the device tool's GPU this way); unset, nothing changes:
//   BENCH_BACKEND=webgpu                our backend for every job (default wasm)
//   BENCH_TORCH_DEVICE=cuda             the PyTorch side's device (bench_torch.py --device; default cpu); it falls
//                                       back to the CPU, and says so, where torch sees no GPU
//   BENCH_PYTHON=python3                the PyTorch side's interpreter (default /usr/bin/python3)
//   BENCH_ONLY=page,train-dom,qwen15    only these rows: page, train-dom, train-vanilla, large (d), qwen15 (e: a
//                                       Qwen2.5-1.5B-shaped model, PAGE over 2 x 256 tokens, both sides); default
//                                       page,train-dom,train-vanilla,large
//   BENCH_CHILD_TIMEOUT_S=300           kill a child after this long; its row records the failure and the run goes on
//   BENCH_DEADLINE=<unix seconds>       no child runs past this (each one's timeout shrinks to fit, later ones are
//                                       skipped), so the results file is always written by then
//   BENCH_TINY=1                        tiny shapes (2 layers, hidden 64) for dry runs of the above on a slow GPU
//   BENCH_MODELS=dir                    write the random models and records there and keep them; a later run (or a
//                                       `bench.js prepare ROWS` run in parallel, as gpu-check.sh does while the GPU
//                                       is busy with other work) reuses them
//   BENCH_ROOT=dir                      the repository (for test/reference and bench-results/) when the bundle is
//                                       not at out/bench/bench.js
//   BENCH_GPU_MEMORY=20                 our GPU budget in GiB (--gpu-memory, domlora.gpuMemoryGiB) on webgpu
//   BENCH_BIG_GPU_MEMORY=20             the same for the big rows (f), (g) only
//
// `npm run bench:big` = BENCH_ONLY=big15,big8: models as big as users fine-tune, ours (and PyTorch when
// BENCH_TORCH_DEVICE=cuda: an 8B model in f32 does not fit PyTorch's CPU side here), the estimate beside the measurement: (f) Qwen2.5-1.5B shapes, BF16, PAGE over 2 x 256 tokens; (g) Llama-3.1-8B shapes (untied, 128k
// vocabulary), BF16, a 16 GB file written to the temp folder and deleted after, PAGE over 2 x 256 tokens.
//
// Every measurement runs in its own child process, so its peak resident memory (maxRSS, model load included) is
// its own. Times exclude model loading. The PyTorch side uses /usr/bin/python3 (Debian's torch + OpenBLAS),
// torch.set_num_threads(1), OpenBLAS's threads left at their default (2 here).
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { writeSynthModel, synthTokenizer, SynthShape, Rng, runProbe, initBackend, loadModel, candidateModules, initLoraA, loraScale, makeAdapter, disposeAdapter, runStepsAsync, type LoraAdapter, type LoraGrads } from '../src/engine';
import type { Backend } from '../src/protocol/messages';

const TINY = process.env.BENCH_TINY === '1';
const SHAPE: SynthShape = TINY
  ? { hiddenSize: 64, intermediateSize: 128, layers: 2, heads: 4, kvHeads: 2, vocabSize: 512, tied: true, seed: 135 }
  : { hiddenSize: 576, intermediateSize: 1536, layers: 30, heads: 9, kvHeads: 3, vocabSize: 49152, tied: true, seed: 135 };
const N_RECORDS = 8, TOKENS = TINY ? 60 : 500, SEQ_LEN = TINY ? 64 : 512, BATCH = 4, RANK = 8, ALPHA = 16;
const DOM_TARGET = `model.layers.${Math.min(2, SHAPE.layers - 1)}.mlp.down_proj`;
/** Qwen2.5-0.5B's shapes: 494M parameters, 2 GB in f32, more than the wasm heap holds with the copies a pass needs. */
const LARGE_SHAPE: SynthShape = TINY
  ? { arch: 'qwen2', hiddenSize: 64, intermediateSize: 128, layers: 2, heads: 4, kvHeads: 2, vocabSize: 1024, tied: true, seed: 5, dtype: 'BF16', embedStd: 0.02 }
  : { arch: 'qwen2', hiddenSize: 896, intermediateSize: 4864, layers: 24, heads: 14, kvHeads: 2, vocabSize: 151936, tied: true, seed: 5, dtype: 'BF16', embedStd: 0.02, init: 'uniform' };
/** Qwen2.5-1.5B's shapes: 1.54B parameters, 3.1 GB in BF16 on disk, 6.2 GB in f32 (its embedding alone 933 MB). */
/** Llama-3.1-8B's shapes: 32 layers, hidden 4096, intermediate 14336, 32 heads / 8 kv heads, vocab 128256, untied. */
const LLAMA8B_SHAPE: SynthShape = TINY
  ? { hiddenSize: 64, intermediateSize: 224, layers: 2, heads: 4, kvHeads: 2, vocabSize: 2048, tied: false, seed: 8, dtype: 'BF16', embedStd: 0.02, init: 'uniform' }
  : { hiddenSize: 4096, intermediateSize: 14336, layers: 32, heads: 32, kvHeads: 8, vocabSize: 128256, tied: false, seed: 8, dtype: 'BF16', embedStd: 0.02, init: 'uniform',
    config: { max_position_embeddings: 131072, rope_theta: 500000 } };
const QWEN15_SHAPE: SynthShape = TINY
  ? { arch: 'qwen2', hiddenSize: 64, intermediateSize: 192, layers: 2, heads: 4, kvHeads: 2, vocabSize: 1024, tied: true, seed: 15, dtype: 'BF16', embedStd: 0.02 }
  : { arch: 'qwen2', hiddenSize: 1536, intermediateSize: 8960, layers: 28, heads: 12, kvHeads: 2, vocabSize: 151936, tied: true, seed: 15, dtype: 'BF16', embedStd: 0.02, init: 'uniform' };
const LARGE_RECORDS = 2, LARGE_TOKENS = TINY ? 32 : 256;
const root = process.env.BENCH_ROOT ? path.resolve(process.env.BENCH_ROOT) : path.resolve(__dirname, '..', '..');
const PY = process.env.BENCH_PYTHON || '/usr/bin/python3';
const BACKENDS: Backend[] = ['wasm', 'webgpu', 'cpu', 'tensorflow'];
const BACKEND = (process.env.BENCH_BACKEND || 'wasm') as Backend;
if (!BACKENDS.includes(BACKEND)) throw new Error(`BENCH_BACKEND must be one of ${BACKENDS.join(', ')}, got ${BACKEND}`);
/** Extra arguments for bench_torch.py: none unless BENCH_TORCH_DEVICE is set, so the default run is unchanged. */
const TORCH_DEVICE_ARGS = process.env.BENCH_TORCH_DEVICE ? ['--device', process.env.BENCH_TORCH_DEVICE] : [];
const ROWS = ['page', 'train-dom', 'train-vanilla', 'large', 'qwen15', 'big15', 'big8'];
const ONLY = new Set((process.env.BENCH_ONLY || 'page,train-dom,train-vanilla,large').split(',').map((x) => x.trim()).filter(Boolean));
for (const r of ONLY) if (!ROWS.includes(r)) throw new Error(`BENCH_ONLY: unknown row ${r} (rows: ${ROWS.join(', ')})`);
const CHILD_TIMEOUT_S = Number(process.env.BENCH_CHILD_TIMEOUT_S) || 0;
const DEADLINE_MS = Number(process.env.BENCH_DEADLINE) * 1000 || 0;
/** Seconds left before BENCH_DEADLINE (less a margin for writing the results); Infinity without one. */
const secondsLeft = () => (DEADLINE_MS ? (DEADLINE_MS - Date.now()) / 1000 - 5 : Infinity);

interface Rec { input_ids: number[]; loss_mask: number[] }
type Json = Record<string, unknown>;

function readRecords(file: string, n: number): Rec[] {
  return fs.readFileSync(file, 'utf8').split('\n').filter(Boolean).slice(0, n).map((l) => JSON.parse(l) as Rec);
}
const peakMB = () => process.resourceUsage().maxRSS / 1024;

// ---- children ------------------------------------------------------------------------------------------------

async function childProbe(modelDir: string, data: string, records: number): Promise<Json> {
  const stamps: number[] = [];
  let t = Date.now();
  let backend = '';
  let estimate = '';
  const gpuMemoryGiB = Number(process.env.BENCH_GPU_MEMORY) || undefined;
  // On wasm, the heap's sizes as the job goes (it only grows, so its last size is the job's peak): what the estimate's
  // heap figure is checked against.
  const heapMB: number[] = [];
  const noteHeap = () => {
    // The registry holds only backends already made: tf.backend() would make one before the job chose it.
    const bytes = (tf.engine() as unknown as { registry: Record<string, { wasm?: { HEAPU8: Uint8Array } }> }).registry.wasm?.wasm?.HEAPU8.buffer.byteLength;
    if (bytes && heapMB[heapMB.length - 1] !== Math.round(bytes / 2 ** 20)) heapMB.push(Math.round(bytes / 2 ** 20));
  };
  const out = await runProbe({ modelDir, data, samples: records, seqLen: SEQ_LEN, rank: RANK, alpha: ALPHA, backend: BACKEND, bootstrap: 50, gpuMemoryGiB }, {
    log: (_lvl, msg) => { if (msg.startsWith('backend:')) backend = msg; if (msg.startsWith('estimate on')) estimate = msg; },
    onProgress: (p) => {
      noteHeap();
      if (p.phase === 'tokenize') t = Date.now();
      if (p.phase === 'probe') { const now = Date.now(); stamps.push((now - t) / 1000); t = now; }
    },
  });
  return {
    seconds: out.report.timings.probeSeconds, loadSeconds: out.report.timings.loadSeconds, perRecordSeconds: stamps,
    records: out.report.config.samples, loss: out.report.meanLoss, backend, estimate, peakRssMB: peakMB(),
    ...(heapMB.length ? { wasmHeapMB: (noteHeap(), heapMB) } : {}),
  };
}

async function childTrain(modelDir: string, data: string, vanilla: boolean): Promise<Json> {
  const be = await initBackend(BACKEND);
  const loaded = loadModel(modelDir);
  const { model, folder } = loaded;
  const all = candidateModules(folder.cfg);
  const specs = vanilla ? all : all.filter((m) => m.name === DOM_TARGET);
  const scale = loraScale(ALPHA, RANK);
  const params = new Map(specs.map((m) => [m.name, { a: initLoraA(0, m.name, RANK, m.dIn), b: new Float32Array(m.dOut * RANK) }]));
  const adapters = new Map<string, LoraAdapter>(specs.map((m) => [m.name, makeAdapter(m, RANK, scale, params.get(m.name)!.a, params.get(m.name)!.b)]));
  const recs = readRecords(data, BATCH);
  const lowestLayer = Math.min(...specs.map((m) => m.layer));
  const lowestKinds = [...new Set(specs.filter((m) => m.layer === lowestLayer).map((m) => m.kind))];
  const t0 = Date.now();
  const grads = new Map<string, LoraGrads>();
  const perRecord: number[] = [];
  let loss = 0;
  for (const r of recs) {
    const t1 = Date.now();
    // The steps driven asynchronously: a GPU backend reads the loss with await, never synchronously.
    loss += (await runStepsAsync(model.recordBackwardSteps(r.input_ids, r.loss_mask, { adapters, loraGrads: grads, lowestKinds }, lowestLayer), {})).loss / recs.length;
    perRecord.push((Date.now() - t1) / 1000);
  }
  // AdamW (lr 1e-3, betas 0.9/0.999, eps 1e-8, wd 0.01), first step, in JS as runTrain does; the batch loss is the
  // mean of the records' losses, so gradients get weight 1 / batch.
  const tOpt = Date.now();
  const lr = 1e-3, b1 = 0.9, b2 = 0.999, eps = 1e-8, wd = 0.01;
  for (const m of specs) {
    const g = grads.get(m.name)!, p = params.get(m.name)!;
    for (const [gt, pv] of [[g.da, p.a], [g.db, p.b]] as const) {
      const gv = await gt.data() as Float32Array; // not dataSync: webgpu cannot read synchronously in Node
      for (let i = 0; i < pv.length; i++) {
        const gi = gv[i] / recs.length;
        const mh = ((1 - b1) * gi) / (1 - b1), vh = ((1 - b2) * gi * gi) / (1 - b2);
        pv[i] = pv[i] * (1 - lr * wd) - (lr * mh) / (Math.sqrt(vh) + eps);
      }
    }
    tf.dispose([g.da, g.db]);
    disposeAdapter(adapters.get(m.name)!);
    adapters.set(m.name, makeAdapter(m, RANK, scale, p.a, p.b));
  }
  const seconds = (Date.now() - t0) / 1000;
  const optSeconds = (Date.now() - tOpt) / 1000;
  for (const ad of adapters.values()) disposeAdapter(ad);
  model.dispose();
  return { seconds, optimizerSeconds: optSeconds, perRecordSeconds: perRecord, loadSeconds: loaded.loadSeconds, loss, modules: specs.length, backend: be.detail, peakRssMB: peakMB() };
}

// ---- parent --------------------------------------------------------------------------------------------------

/** Dawn's per-process warnings, kept in the log but out of a failed row's reason. */
function isNoise(line: string): boolean {
  return /XDG_RUNTIME_DIR|artificially reduced|^\s*at .*dawn|^Warning: /.test(line) || !line.trim();
}

/** A failed child's reason: its first error line and the two lines after it (the top of the stack), else its last lines. */
function failureText(text: string): string {
  const lines = text.trim().split('\n').filter((l) => !isNoise(l));
  const i = lines.findIndex((l) => /\b\w*(Error|Exception)\b|^error\b/i.test(l) && !/^\s+at /.test(l));
  return (i >= 0 ? lines.slice(i, i + 3) : lines.slice(-5)).map((l) => l.trim()).join(' | ');
}

/** The random models the rows run on, and their pre-tokenized records. */
interface ModelSpec { dir: string; data: string; shape: SynthShape; n: number; tokens: number; seed: number }
const MODELS: Record<'smollm' | 'large' | 'qwen15' | 'llama8b', ModelSpec> = {
  smollm: { dir: 'smollm135-random', data: 'records.jsonl', shape: SHAPE, n: N_RECORDS, tokens: TOKENS, seed: 7 },
  large: { dir: 'qwen2.5-0.5b-random', data: 'records-large.jsonl', shape: LARGE_SHAPE, n: LARGE_RECORDS, tokens: LARGE_TOKENS, seed: 11 },
  qwen15: { dir: 'qwen2.5-1.5b-random', data: 'records-qwen15.jsonl', shape: QWEN15_SHAPE, n: LARGE_RECORDS, tokens: LARGE_TOKENS, seed: 13 },
  llama8b: { dir: 'llama-3.1-8b-random', data: 'records-llama8b.jsonl', shape: LLAMA8B_SHAPE, n: LARGE_RECORDS, tokens: LARGE_TOKENS, seed: 17 },
};
const modelOfRow = (row: string): keyof typeof MODELS =>
  (row === 'large' || row === 'qwen15' ? row : row === 'big15' ? 'qwen15' : row === 'big8' ? 'llama8b' : 'smollm');
const MODELS_DIR = process.env.BENCH_MODELS ? path.resolve(process.env.BENCH_MODELS) : undefined;

const alive = (pid: number) => { try { process.kill(pid, 0); return true; } catch { return false; } };

/**
 * The model and records of `key` in BENCH_MODELS (else in `tmp`): reused when a stamp says they were written with the
 * same shape and records; while another process (`bench.js prepare`) is writing them, waits for it.
 */
async function ensureModel(key: keyof typeof MODELS, tmp: string, minSecondsToWrite = 0):
  Promise<{ dir: string; data: string; seconds: number; reused: boolean; skipped?: string }> {
  const spec = MODELS[key];
  const base = MODELS_DIR ?? tmp;
  fs.mkdirSync(base, { recursive: true });
  const dir = path.join(base, spec.dir), data = path.join(base, spec.data);
  const stampFile = path.join(base, `${spec.dir}.stamp`), pending = path.join(base, `${spec.dir}.pending`);
  const stamp = JSON.stringify({ shape: spec.shape, n: spec.n, tokens: spec.tokens, seed: spec.seed });
  const t0 = Date.now();
  for (;;) {
    let pid = NaN;
    try { pid = Number(fs.readFileSync(pending, 'utf8')); } catch { /* none */ }
    if (!(pid > 0 && pid !== process.pid && alive(pid)) || secondsLeft() < 10) break;
    await new Promise((r) => setTimeout(r, 500));
  }
  const same = (() => { try { return fs.readFileSync(stampFile, 'utf8') === stamp && fs.existsSync(data) && fs.existsSync(dir); } catch { return false; } })();
  if (same) return { dir, data, seconds: (Date.now() - t0) / 1000, reused: true };
  if (secondsLeft() < minSecondsToWrite) {
    return { dir, data, seconds: 0, reused: false, skipped: `skipped: ${secondsLeft().toFixed(0)} s left before BENCH_DEADLINE, too little to write ${spec.dir} and run it` };
  }
  if (MODELS_DIR) fs.writeFileSync(pending, String(process.pid));
  try {
    fs.rmSync(stampFile, { force: true });
    fs.rmSync(dir, { recursive: true, force: true });
    await writeModelAndRecords(dir, data, spec.shape, spec.n, spec.tokens, spec.seed);
    fs.writeFileSync(stampFile, stamp);
  } finally {
    if (MODELS_DIR) fs.rmSync(pending, { force: true });
  }
  return { dir, data, seconds: (Date.now() - t0) / 1000, reused: false };
}

/** Models are removed after use only when they live in the run's temp folder. */
function dropModel(dir: string): void {
  if (!MODELS_DIR) fs.rmSync(dir, { recursive: true, force: true });
}

/** A random model of `shape` in `dir` and `n` pre-tokenized records of `tokens` tokens (loss on the second half). */
async function writeModelAndRecords(dir: string, data: string, shape: SynthShape, n: number, tokens: number, seed: number): Promise<void> {
  await writeSynthModel(dir, shape);
  const vocab = Object.keys((synthTokenizer(shape.vocabSize).tokenizer as { model: { vocab: object } }).model.vocab).length;
  const rng = new Rng(seed);
  const lines = Array.from({ length: n }, () => {
    const ids = Array.from({ length: tokens }, (_, t) => (t === 0 ? 1 : 3 + rng.nextInt(vocab - 3)));
    return JSON.stringify({ input_ids: ids, loss_mask: ids.map((_, t) => (t >= tokens / 2 ? 1 : 0)) });
  });
  fs.writeFileSync(data, lines.join('\n') + '\n');
}

function runChild(label: string, cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env): Json {
  process.stdout.write(`  ${label} ... `);
  const left = secondsLeft();
  if (left < 10) {
    process.stdout.write('SKIPPED (BENCH_DEADLINE reached)\n');
    return { error: 'skipped: BENCH_DEADLINE reached' };
  }
  const limitS = Math.min(CHILD_TIMEOUT_S > 0 ? CHILD_TIMEOUT_S : Infinity, left);
  const t = Date.now();
  const r = spawnSync(cmd, args, { env, encoding: 'utf8', maxBuffer: 64 << 20,
    ...(Number.isFinite(limitS) ? { timeout: Math.round(limitS * 1000), killSignal: 'SIGKILL' as const } : {}) });
  // BENCH_CHILD_STDERR=1: children's stderr (Dawn's warnings, engine logs) goes on to ours, for a log of the whole run.
  if (r.stderr && process.env.BENCH_CHILD_STDERR === '1') process.stderr.write(r.stderr);
  const last = (r.stdout ?? '').trim().split('\n').pop() ?? '';
  let res: Json;
  try { res = JSON.parse(last); } catch {
    const timedOut = (r.error as NodeJS.ErrnoException | undefined)?.code === 'ETIMEDOUT';
    const why = timedOut ? `timed out after ${limitS.toFixed(0)} s` : r.error ? r.error.message : `exit ${r.status}${r.signal ? ` (${r.signal})` : ''}`;
    res = { error: `${why}: ${failureText(r.stderr || r.stdout || '')}` };
  }
  process.stdout.write(`${res.error ? 'FAILED ' + res.error : `${Number(res.seconds).toFixed(2)} s, peak ${Number(res.peakRssMB).toFixed(0)} MB`} (child ${((Date.now() - t) / 1000).toFixed(0)} s)\n`);
  return res;
}

async function parent(): Promise<void> {
  const records = Math.max(1, Math.min(N_RECORDS, Number(process.env.BENCH_RECORDS) || N_RECORDS));
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'domlora-bench-'));
  const t0 = Date.now();
  console.log(`DomLoRA bench: ${os.cpus().length} CPUs (${os.cpus()[0]?.model ?? '?'}), node ${process.version}, temp ${tmp}`);
  console.log(`model: random, ${TINY ? 'TINY (BENCH_TINY=1)' : 'SmolLM-135M'} shapes (${JSON.stringify(SHAPE)})`);
  console.log(`ours on ${BACKEND}, PyTorch ${PY}${TORCH_DEVICE_ARGS.length ? ` ${TORCH_DEVICE_ARGS.join(' ')}` : ''}; rows ${[...ONLY].join(', ')}`);
  const self = __filename;
  const py = path.join(root, 'test/reference/bench_torch.py');
  const torchArgs = (mode: string, dir: string, file: string, opts: Json) => [py, mode, dir, file, JSON.stringify(opts), ...TORCH_DEVICE_ARGS];
  const res: Record<string, { ours: Json; torch: Json }> = {};
  let modelDir = '', data = '';
  if (['page', 'train-dom', 'train-vanilla'].some((r) => ONLY.has(r))) {
    // Pre-tokenized records: ids the (char-level) tokenizer knows, ~500 tokens, loss on the second half.
    const m = await ensureModel('smollm', tmp);
    ({ dir: modelDir, data } = m);
    console.log(`${m.reused ? 'reused' : 'wrote'} model and ${N_RECORDS} records of ${TOKENS} tokens in ${m.seconds.toFixed(1)} s` +
      (records < N_RECORDS ? `\nNOTE: PAGE probe over ${records} of ${N_RECORDS} records (BENCH_RECORDS=${records}); per-record times are what compares` : ''));
  }
  if (ONLY.has('page')) {
    console.log(`(a) PAGE probe, ${records} records x ${TOKENS} tokens, all ${SHAPE.layers * 7} modules`);
    res.page = {
      ours: runChild('ours   ', process.execPath, [self, 'child', 'probe', modelDir, data, String(records)]),
      torch: runChild('PyTorch', PY, torchArgs('page', modelDir, data, { rank: RANK, alpha: ALPHA, records })),
    };
  }
  if (ONLY.has('train-dom')) {
    console.log(`(b) DomLoRA training step: one adapter on ${DOM_TARGET}, batch ${BATCH} x ${TOKENS} tokens, AdamW`);
    res.trainDomlora = {
      ours: runChild('ours   ', process.execPath, [self, 'child', 'train-dom', modelDir, data]),
      torch: runChild('PyTorch', PY, torchArgs('train-dom', modelDir, data, { rank: RANK, alpha: ALPHA, records: BATCH, target: DOM_TARGET })),
    };
  }
  if (ONLY.has('train-vanilla')) {
    console.log(`(c) vanilla-LoRA training step: all ${SHAPE.layers * 7} modules, batch ${BATCH} x ${TOKENS} tokens, AdamW`);
    res.trainVanilla = {
      ours: runChild('ours   ', process.execPath, [self, 'child', 'train-vanilla', modelDir, data]),
      torch: runChild('PyTorch', PY, torchArgs('train-vanilla', modelDir, data, { rank: RANK, alpha: ALPHA, records: BATCH })),
    };
  }
  if (modelDir && !process.env.BENCH_KEEP) dropModel(modelDir); // before the large models: less disk at once

  // (d) Scale: a model whose weights do not fit the 4 GiB wasm heap, probed on wasm with its layers streamed.
  let large: Json | undefined;
  if (ONLY.has('large') && process.env.BENCH_LARGE !== '0') {
    const { dir: bigDir, data: bigData, seconds: wrote, reused } = await ensureModel('large', tmp);
    console.log(`(d) scale: Qwen2.5-0.5B shapes (494M parameters, BF16 on disk, ${reused ? 'reused' : 'written'} in ${wrote.toFixed(0)} s), ` +
      `PAGE probe of ${LARGE_RECORDS} records x ${LARGE_TOKENS} tokens on ${BACKEND}${BACKEND === 'wasm' ? ', layers streamed past the 4 GiB heap' : ''}`);
    large = runChild('ours   ', process.execPath, ['--max-old-space-size=16000', self, 'child', 'probe', bigDir, bigData, String(LARGE_RECORDS)]);
    dropModel(bigDir);
  }

  // (e) Qwen2.5-1.5B's shapes, PAGE over 2 x 256 tokens on both sides (for a GPU: BENCH_ONLY=...,qwen15).
  // PyTorch first here: its figure is the quick, sure one, and ours may use up what the deadline leaves.
  const q = ONLY.has('qwen15') ? await ensureModel('qwen15', tmp, TINY ? 20 : 150) : undefined;
  if (q?.skipped) {
    console.log(`(e) Qwen2.5-1.5B shapes: ${q.skipped}`);
    res.qwen15 = { ours: { error: q.skipped }, torch: { error: q.skipped } };
  } else if (q) {
    console.log(`(e) Qwen2.5-1.5B shapes (${TINY ? 'TINY' : '1.54B parameters, BF16 on disk'}, ${q.reused ? 'reused' : 'written'} in ${q.seconds.toFixed(0)} s), ` +
      `PAGE probe of ${LARGE_RECORDS} records x ${LARGE_TOKENS} tokens, all ${QWEN15_SHAPE.layers * 7} modules`);
    const torch = runChild('PyTorch', PY, torchArgs('page', q.dir, q.data, { rank: RANK, alpha: ALPHA, records: LARGE_RECORDS }));
    const ours = runChild('ours   ', process.execPath, ['--max-old-space-size=32000', self, 'child', 'probe', q.dir, q.data, String(LARGE_RECORDS)]);
    res.qwen15 = { ours, torch };
    dropModel(q.dir);
  }

  // (f), (g): models as big as users fine-tune, ours only, with the plan the estimate chose.
  const big: Record<string, Json> = {};
  for (const [row, key, label] of [['big15', 'qwen15', 'Qwen2.5-1.5B shapes (1.54B parameters)'], ['big8', 'llama8b', 'Llama-3.1-8B shapes (8.03B parameters, untied)']] as const) {
    if (!ONLY.has(row)) continue;
    const m = await ensureModel(key, tmp);
    if (m.skipped) { big[row] = { error: m.skipped }; continue; }
    const bytes = fs.statSync(path.join(m.dir, 'model.safetensors')).size;
    console.log(`(${row === 'big15' ? 'f' : 'g'}) ${TINY ? 'TINY ' : ''}${label}, BF16 (${(bytes / 2 ** 30).toFixed(1)} GiB file, ${m.reused ? 'reused' : 'written'} in ${m.seconds.toFixed(0)} s), ` +
      `PAGE probe of ${LARGE_RECORDS} records x ${LARGE_TOKENS} tokens on ${BACKEND}`);
    // PyTorch beside ours only on a GPU: on this box an 8B model in f32 (32 GB) does not fit PyTorch's CPU side.
    const torch = process.env.BENCH_TORCH_DEVICE === 'cuda'
      ? runChild('PyTorch', PY, torchArgs('page', m.dir, m.data, { rank: RANK, alpha: ALPHA, records: LARGE_RECORDS })) : undefined;
    const bigEnv = process.env.BENCH_BIG_GPU_MEMORY ? { ...process.env, BENCH_GPU_MEMORY: process.env.BENCH_BIG_GPU_MEMORY } : process.env;
    big[row] = runChild('ours   ', process.execPath, ['--max-old-space-size=32000', self, 'child', 'probe', m.dir, m.data, String(LARGE_RECORDS)], bigEnv);
    big[row].fileBytes = bytes;
    if (torch) {
      big[row].torch = torch;
      if (typeof big[row].seconds === 'number' && typeof torch.seconds === 'number') {
        console.log(`          PyTorch ${torch.seconds.toFixed(2)} s (loss ${String(torch.loss)}), ours ${big[row].seconds.toFixed(2)} s (loss ${String(big[row].loss)})`);
      }
    }
    if (big[row].estimate) console.log(`          ${String(big[row].estimate)}`);
    dropModel(m.dir);
  }

  const ratio = (a: unknown, b: unknown) => (typeof a === 'number' && typeof b === 'number' && b > 0 ? a / b : null);
  const rows: Json[] = [];
  console.log('\n| job | ours s | PyTorch s | ours/PyTorch | ours peak MB | PyTorch peak MB | mem ratio |');
  console.log('|---|---|---|---|---|---|---|');
  for (const [name, { ours, torch }] of Object.entries(res)) {
    const row = {
      job: name, oursSeconds: ours.seconds, torchSeconds: torch.seconds, timeRatio: ratio(ours.seconds, torch.seconds),
      oursPeakRssMB: ours.peakRssMB, torchPeakRssMB: torch.peakRssMB, memRatio: ratio(ours.peakRssMB, torch.peakRssMB),
    };
    const best = (j: Json) => (Array.isArray(j.perRecordSeconds) && j.perRecordSeconds.length ? Math.min(...(j.perRecordSeconds as number[])) : undefined);
    if (name === 'page' || name === 'qwen15') Object.assign(row, { oursBestRecordSeconds: best(ours), torchBestRecordSeconds: best(torch), bestRecordRatio: ratio(best(ours), best(torch)) });
    rows.push(row);
    const f = (v: unknown, d = 2) => (typeof v === 'number' ? v.toFixed(d) : 'n/a');
    console.log(`| ${name} | ${f(row.oursSeconds)} | ${f(row.torchSeconds)} | ${f(row.timeRatio)} | ${f(row.oursPeakRssMB, 0)} | ${f(row.torchPeakRssMB, 0)} | ${f(row.memRatio)} |`);
  }
  const pg = rows.find((r) => r.job === 'page');
  if (pg && typeof pg.bestRecordRatio === 'number') {
    console.log(`PAGE, fastest record of each (less sensitive to a noisy host): ours ${Number(pg.oursBestRecordSeconds).toFixed(2)} s, ` +
      `PyTorch ${Number(pg.torchBestRecordSeconds).toFixed(2)} s, ratio ${pg.bestRecordRatio.toFixed(2)}`);
  }
  console.log('times exclude model loading; peak MB is the child process\'s maxRSS, load included');
  if (large) {
    console.log(`(d) 0.5B model on ${BACKEND}: PAGE over ${LARGE_RECORDS} x ${LARGE_TOKENS} tokens in ${Number(large.seconds).toFixed(1)} s ` +
      `(load ${Number(large.loadSeconds).toFixed(1)} s), peak RSS ${Number(large.peakRssMB).toFixed(0)} MB of ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB; ${String(large.backend)}`);
  }
  for (const [row, r] of Object.entries(big)) {
    console.log(r.error ? `(${row}) FAILED: ${String(r.error)}` : `(${row}) ${row === 'big8' ? '8B' : '1.5B'} model on ${BACKEND}: PAGE over ${LARGE_RECORDS} x ${LARGE_TOKENS} tokens in ` +
      `${Number(r.seconds).toFixed(1)} s (load ${Number(r.loadSeconds).toFixed(1)} s), peak RSS ${Number(r.peakRssMB).toFixed(0)} MB` +
      `${Array.isArray(r.wasmHeapMB) ? `, wasm heap ${r.wasmHeapMB.join(' -> ')} MB` : ''}; ${String(r.estimate)}`);
  }
  const outDir = path.join(root, 'bench-results');
  fs.mkdirSync(outDir, { recursive: true });
  const file = path.join(outDir, 'bench.json');
  fs.writeFileSync(file, JSON.stringify({
    date: new Date().toISOString(), machine: { cpus: os.cpus().length, model: os.cpus()[0]?.model, node: process.version, totalMemGB: os.totalmem() / 2 ** 30 },
    backend: BACKEND, torchDevice: process.env.BENCH_TORCH_DEVICE ?? 'cpu', python: PY, rows: [...ONLY], tiny: TINY || undefined,
    shape: SHAPE, records, tokens: TOKENS, batch: BATCH, rank: RANK, alpha: ALPHA, domTarget: DOM_TARGET,
    note: records < N_RECORDS ? `PAGE over ${records} of ${N_RECORDS} records` : undefined,
    summary: rows, raw: res, large: large ? { shape: LARGE_SHAPE, records: LARGE_RECORDS, tokens: LARGE_TOKENS, ...large } : undefined,
    qwen15: res.qwen15 ? { shape: QWEN15_SHAPE, records: LARGE_RECORDS, tokens: LARGE_TOKENS } : undefined, big, totalSeconds: (Date.now() - t0) / 1000,
  }, null, 1) + '\n');
  console.log(`\nwrote ${path.relative(process.cwd(), file)} (total ${((Date.now() - t0) / 1000).toFixed(0)} s)`);
  if (!process.env.BENCH_KEEP) fs.rmSync(tmp, { recursive: true, force: true });
}

async function main(): Promise<void> {
  const [, , role, job, modelDir, data, extra] = process.argv;
  if (role === 'prepare') { // bench.js prepare ROWS: write (or find) the models those rows need in BENCH_MODELS, and exit
    if (!MODELS_DIR) throw new Error('bench.js prepare needs BENCH_MODELS');
    for (const key of new Set((job ?? '').split(',').filter(Boolean).map(modelOfRow))) {
      const m = await ensureModel(key, MODELS_DIR);
      console.log(`prepare: ${key} ${m.reused ? 'already there' : 'written'} (${m.seconds.toFixed(1)} s): ${m.dir}`);
    }
    return;
  }
  if (role !== 'child') return parent();
  let r: Json;
  if (job === 'probe') r = await childProbe(modelDir, data, Number(extra));
  else if (job === 'train-dom' || job === 'train-vanilla') r = await childTrain(modelDir, data, job === 'train-vanilla');
  else throw new Error(`unknown job ${job}`);
  process.stdout.write('\n' + JSON.stringify(r) + '\n');
  process.exit(0);
}

main().catch((e) => { console.error(e); process.exit(1); });
