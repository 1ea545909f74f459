// `npm run bench`: ours (tfjs-wasm) against a PyTorch reference (test/reference/bench_torch.py) on a random model
// with SmolLM-135M's shapes. Prints each pair with the ratio ours/PyTorch and writes bench-results/bench.json.
//
//   npm run bench                       the whole run (model + data in a temp folder, removed at the end)
//   BENCH_RECORDS=4 npm run bench       PAGE over fewer records (said so in the output)
//   BENCH_KEEP=1                        keep the temp folder
//   BENCH_LARGE=0                       skip (d), the 0.5B-parameter model probed on wasm with streamed layers
//
// Every measurement runs in its own child process, so its peak resident memory (maxRSS, model load included) is
// its own. Times exclude model loading. The PyTorch side uses /usr/bin/python3 (Debian's torch + OpenBLAS),
// torch.set_num_threads(1), OpenBLAS's threads left at their default (2 here).
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { writeSynthModel, synthTokenizer, SynthShape, Rng, runProbe, initBackend, loadModel, candidateModules, initLoraA, loraScale, makeAdapter, disposeAdapter, type LoraAdapter, type LoraGrads } from '../src/engine';

const SHAPE: SynthShape = { hiddenSize: 576, intermediateSize: 1536, layers: 30, heads: 9, kvHeads: 3, vocabSize: 49152, tied: true, seed: 135 };
const N_RECORDS = 8, TOKENS = 500, SEQ_LEN = 512, BATCH = 4, RANK = 8, ALPHA = 16;
const DOM_TARGET = 'model.layers.2.mlp.down_proj';
/** Qwen2.5-0.5B's shapes: 494M parameters, 2 GB in f32, more than the wasm heap holds with the copies a pass needs. */
const LARGE_SHAPE: SynthShape = { arch: 'qwen2', hiddenSize: 896, intermediateSize: 4864, layers: 24, heads: 14, kvHeads: 2, vocabSize: 151936, tied: true, seed: 5, dtype: 'BF16', embedStd: 0.02 };
const LARGE_RECORDS = 2, LARGE_TOKENS = 256;
const root = path.resolve(__dirname, '..', '..');
const PY = '/usr/bin/python3';

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
  const out = await runProbe({ modelDir, data, samples: records, seqLen: SEQ_LEN, rank: RANK, alpha: ALPHA, backend: 'wasm', bootstrap: 50 }, {
    log: (_lvl, msg) => { if (msg.startsWith('backend:')) backend = msg; },
    onProgress: (p) => {
      if (p.phase === 'tokenize') t = Date.now();
      if (p.phase === 'probe') { const now = Date.now(); stamps.push((now - t) / 1000); t = now; }
    },
  });
  return {
    seconds: out.report.timings.probeSeconds, loadSeconds: out.report.timings.loadSeconds, perRecordSeconds: stamps,
    records: out.report.config.samples, loss: out.report.meanLoss, backend, peakRssMB: peakMB(),
  };
}

async function childTrain(modelDir: string, data: string, vanilla: boolean): Promise<Json> {
  const be = await initBackend('wasm');
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
    loss += model.recordBackward(r.input_ids, r.loss_mask, { adapters, loraGrads: grads, lowestKinds }, lowestLayer).loss / recs.length;
    perRecord.push((Date.now() - t1) / 1000);
  }
  // AdamW (lr 1e-3, betas 0.9/0.999, eps 1e-8, wd 0.01), first step, in JS as runTrain does; the batch loss is the
  // mean of the records' losses, so gradients get weight 1 / batch.
  const tOpt = Date.now();
  const lr = 1e-3, b1 = 0.9, b2 = 0.999, eps = 1e-8, wd = 0.01;
  for (const m of specs) {
    const g = grads.get(m.name)!, p = params.get(m.name)!;
    for (const [gt, pv] of [[g.da, p.a], [g.db, p.b]] as const) {
      const gv = gt.dataSync() as Float32Array;
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

function runChild(label: string, cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env): Json {
  process.stdout.write(`  ${label} ... `);
  const t = Date.now();
  const r = spawnSync(cmd, args, { env, encoding: 'utf8', maxBuffer: 64 << 20 });
  const last = r.stdout.trim().split('\n').pop() ?? '';
  let res: Json;
  try { res = JSON.parse(last); } catch {
    res = { error: `exit ${r.status}${r.signal ? ` (${r.signal})` : ''}: ${(r.stderr || r.stdout).trim().split('\n').slice(-5).join(' | ')}` };
  }
  process.stdout.write(`${res.error ? 'FAILED ' + res.error : `${Number(res.seconds).toFixed(2)} s, peak ${Number(res.peakRssMB).toFixed(0)} MB`} (child ${((Date.now() - t) / 1000).toFixed(0)} s)\n`);
  return res;
}

async function parent(): Promise<void> {
  const records = Math.max(1, Math.min(N_RECORDS, Number(process.env.BENCH_RECORDS) || N_RECORDS));
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'domlora-bench-'));
  const modelDir = path.join(tmp, 'smollm135-random');
  const data = path.join(tmp, 'records.jsonl');
  const t0 = Date.now();
  console.log(`DomLoRA bench: ${os.cpus().length} CPUs (${os.cpus()[0]?.model ?? '?'}), node ${process.version}, temp ${tmp}`);
  console.log(`model: random, SmolLM-135M shapes (${JSON.stringify(SHAPE)})`);
  await writeSynthModel(modelDir, SHAPE);
  // Pre-tokenized records: ids the (char-level) tokenizer knows, ~500 tokens, loss on the second half.
  const tokVocab = Object.keys((synthTokenizer(SHAPE.vocabSize).tokenizer as { model: { vocab: object } }).model.vocab).length;
  const rng = new Rng(7);
  const lines: string[] = [];
  for (let n = 0; n < N_RECORDS; n++) {
    const ids = Array.from({ length: TOKENS }, (_, t) => (t === 0 ? 1 : 3 + rng.nextInt(tokVocab - 3)));
    lines.push(JSON.stringify({ input_ids: ids, loss_mask: ids.map((_, t) => (t >= TOKENS / 2 ? 1 : 0)) }));
  }
  fs.writeFileSync(data, lines.join('\n') + '\n');
  console.log(`wrote model and ${N_RECORDS} records of ${TOKENS} tokens in ${((Date.now() - t0) / 1000).toFixed(1)} s` +
    (records < N_RECORDS ? `\nNOTE: PAGE probe over ${records} of ${N_RECORDS} records (BENCH_RECORDS=${records}); per-record times are what compares` : ''));

  const self = __filename;
  const py = path.join(root, 'test/reference/bench_torch.py');
  const res: Record<string, { ours: Json; torch: Json }> = {};
  console.log(`(a) PAGE probe, ${records} records x ${TOKENS} tokens, all ${SHAPE.layers * 7} modules`);
  res.page = {
    ours: runChild('ours   ', process.execPath, [self, 'child', 'probe', modelDir, data, String(records)]),
    torch: runChild('PyTorch', PY, [py, 'page', modelDir, data, JSON.stringify({ rank: RANK, alpha: ALPHA, records })]),
  };
  console.log(`(b) DomLoRA training step: one adapter on ${DOM_TARGET}, batch ${BATCH} x ${TOKENS} tokens, AdamW`);
  res.trainDomlora = {
    ours: runChild('ours   ', process.execPath, [self, 'child', 'train-dom', modelDir, data]),
    torch: runChild('PyTorch', PY, [py, 'train-dom', modelDir, data, JSON.stringify({ rank: RANK, alpha: ALPHA, records: BATCH, target: DOM_TARGET })]),
  };
  console.log(`(c) vanilla-LoRA training step: all ${SHAPE.layers * 7} modules, batch ${BATCH} x ${TOKENS} tokens, AdamW`);
  res.trainVanilla = {
    ours: runChild('ours   ', process.execPath, [self, 'child', 'train-vanilla', modelDir, data]),
    torch: runChild('PyTorch', PY, [py, 'train-vanilla', modelDir, data, JSON.stringify({ rank: RANK, alpha: ALPHA, records: BATCH })]),
  };

  // (d) Scale: a model whose weights do not fit the 4 GiB wasm heap, probed on wasm with its layers streamed.
  let large: Json | undefined;
  if (process.env.BENCH_LARGE !== '0') {
    const bigDir = path.join(tmp, 'qwen2.5-0.5b-random');
    const bigData = path.join(tmp, 'records-large.jsonl');
    const t1 = Date.now();
    await writeSynthModel(bigDir, LARGE_SHAPE);
    const bigVocab = Object.keys((synthTokenizer(LARGE_SHAPE.vocabSize).tokenizer as { model: { vocab: object } }).model.vocab).length;
    const r2 = new Rng(11);
    const bigLines = Array.from({ length: LARGE_RECORDS }, () => {
      const ids = Array.from({ length: LARGE_TOKENS }, (_, t) => (t === 0 ? 1 : 3 + r2.nextInt(bigVocab - 3)));
      return JSON.stringify({ input_ids: ids, loss_mask: ids.map((_, t) => (t >= LARGE_TOKENS / 2 ? 1 : 0)) });
    });
    fs.writeFileSync(bigData, bigLines.join('\n') + '\n');
    console.log(`(d) scale: Qwen2.5-0.5B shapes (494M parameters, BF16 on disk, written in ${((Date.now() - t1) / 1000).toFixed(0)} s), ` +
      `PAGE probe of ${LARGE_RECORDS} records x ${LARGE_TOKENS} tokens on wasm, layers streamed past the 4 GiB heap`);
    large = runChild('ours   ', process.execPath, ['--max-old-space-size=16000', self, 'child', 'probe', bigDir, bigData, String(LARGE_RECORDS)]);
    fs.rmSync(bigDir, { recursive: true, force: true });
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
    if (name === 'page') Object.assign(row, { oursBestRecordSeconds: best(ours), torchBestRecordSeconds: best(torch), bestRecordRatio: ratio(best(ours), best(torch)) });
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
    console.log(`(d) 0.5B model on wasm: PAGE over ${LARGE_RECORDS} x ${LARGE_TOKENS} tokens in ${Number(large.seconds).toFixed(1)} s ` +
      `(load ${Number(large.loadSeconds).toFixed(1)} s), peak RSS ${Number(large.peakRssMB).toFixed(0)} MB of ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB; ${String(large.backend)}`);
  }
  const outDir = path.join(root, 'bench-results');
  fs.mkdirSync(outDir, { recursive: true });
  const file = path.join(outDir, 'bench.json');
  fs.writeFileSync(file, JSON.stringify({
    date: new Date().toISOString(), machine: { cpus: os.cpus().length, model: os.cpus()[0]?.model, node: process.version, totalMemGB: os.totalmem() / 2 ** 30 },
    shape: SHAPE, records, tokens: TOKENS, batch: BATCH, rank: RANK, alpha: ALPHA, domTarget: DOM_TARGET,
    note: records < N_RECORDS ? `PAGE over ${records} of ${N_RECORDS} records` : undefined,
    summary: rows, raw: res, large: large ? { shape: LARGE_SHAPE, records: LARGE_RECORDS, tokens: LARGE_TOKENS, ...large } : undefined, totalSeconds: (Date.now() - t0) / 1000,
  }, null, 1) + '\n');
  console.log(`\nwrote ${path.relative(process.cwd(), file)} (total ${((Date.now() - t0) / 1000).toFixed(0)} s)`);
  if (!process.env.BENCH_KEEP) fs.rmSync(tmp, { recursive: true, force: true });
}

async function main(): Promise<void> {
  const [, , role, job, modelDir, data, extra] = process.argv;
  if (role !== 'child') return parent();
  let r: Json;
  if (job === 'probe') r = await childProbe(modelDir, data, Number(extra));
  else if (job === 'train-dom' || job === 'train-vanilla') r = await childTrain(modelDir, data, job === 'train-vanilla');
  else throw new Error(`unknown job ${job}`);
  process.stdout.write('\n' + JSON.stringify(r) + '\n');
  process.exit(0);
}

main().catch((e) => { console.error(e); process.exit(1); });
