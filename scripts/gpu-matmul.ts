// fp32 matmul GFLOP/s through tfjs-backend-webgpu (Dawn), plus what the adapter is and which limits tfjs asked for.
// The GPU side of scripts/gpu-check.sh's phase (a); scripts/gpu-matmul-torch.py is the PyTorch side, same shapes.
//
//   node out/gpu/gpu-matmul.js OUT.json [--tiny]
//
// Every read is asynchronous (`await t.data()`): webgpu's synchronous read needs an OffscreenCanvas, which Node lacks.
// Timing: after a warm-up (shader compilation), `reps` matmuls are queued back to back and the queue is drained by
// reading one element of the last product; the time per matmul is the best of 3 such batches, 2*M*K*N / time is the
// rate. Correctness: 4 rows x 64 columns of the product against a float64 dot product in JS (relative norm error).
// Big-buffer probe: a [rows, 1536] f32 tensor larger than 128 MiB (the Qwen2.5-1.5B embedding, 933 MB, unless --tiny)
// is bound whole by a transposed matmul and a gather; both are checked, and WebGPU validation errors are caught.
// The JSON is rewritten after every row, so a run killed by a timeout still leaves what it measured.
import * as fs from 'node:fs';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend } from '../src/engine';

type Json = Record<string, unknown>;
const out = process.argv[2];
const tiny = process.argv.includes('--tiny');
if (!out) throw new Error('usage: gpu-matmul.js OUT.json [--tiny]');
const result: Json = { started: new Date().toISOString(), node: process.version, tiny, rows: [] as Json[] };
const save = () => fs.writeFileSync(out, JSON.stringify(result, null, 1) + '\n');

/** Deterministic values in [-1, 1): never zeros, which can hide unwritten outputs. */
function lcg(n: number, seed: number): Float32Array {
  const a = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) { s = (Math.imul(s, 1664525) + 1013904223) >>> 0; a[i] = s / 2 ** 31 - 1; }
  return a;
}

/** Plain-object copy of a WebGPU limits / info object (their fields are getters on the prototype). */
function plain(o: unknown): Json {
  const r: Json = {};
  if (!o) return r;
  for (const k in o as object) {
    const v = (o as Record<string, unknown>)[k];
    if (typeof v !== 'function') r[k] = typeof v === 'object' && v !== null && !Array.isArray(v) ? String(v) : v;
  }
  return r;
}

interface GpuDevice {
  limits: unknown; features: Set<string>;
  pushErrorScope(f: string): void; popErrorScope(): Promise<{ message: string } | null>;
  addEventListener?(t: string, f: (e: { error?: { message?: string } }) => void): void;
}

async function adapterReport(): Promise<GpuDevice | undefined> {
  const t0 = Date.now();
  try {
    const be = await initBackend('webgpu');
    result.backend = be.detail;
  } catch (e) {
    result.backendError = (e as Error).message;
    return undefined;
  }
  result.backendInitSeconds = (Date.now() - t0) / 1000;
  const gpu = (globalThis as { navigator?: { gpu?: { requestAdapter(o?: object): Promise<unknown> } } }).navigator?.gpu;
  const adapter = await gpu?.requestAdapter({ powerPreference: 'high-performance' }) as { info?: unknown; limits?: unknown; features?: Set<string> } | null;
  const backend = tf.backend() as unknown as { device: GpuDevice; adapterInfo?: unknown };
  const device = backend.device;
  result.adapter = {
    info: plain(adapter?.info), limits: plain(adapter?.limits), features: [...(adapter?.features ?? [])].sort(),
  };
  // What tfjs-backend-webgpu requested (base.js: the adapter's maxStorageBufferBindingSize, maxBufferSize,
  // maxComputeWorkgroupStorageSize, ...) is what its device got: these are the limits our tensors live under.
  result.tfjsDevice = { limits: plain(device.limits), features: [...(device.features ?? [])].sort() };
  const uncaptured: string[] = [];
  device.addEventListener?.('uncapturederror', (e) => { uncaptured.push(String(e.error?.message ?? e)); });
  result.uncapturedErrors = uncaptured;
  const al = result.adapter as { info: Json; limits: Json };
  console.log(`adapter: ${JSON.stringify(al.info)}`);
  console.log(`adapter limits: maxStorageBufferBindingSize ${al.limits.maxStorageBufferBindingSize}, maxBufferSize ${al.limits.maxBufferSize}; ` +
    `tfjs device: ${(result.tfjsDevice as { limits: Json }).limits.maxStorageBufferBindingSize} / ${(result.tfjsDevice as { limits: Json }).limits.maxBufferSize}`);
  save();
  return device;
}

interface Shape { name: string; m: number; k: number; n: number; batch?: number; transposeB?: boolean }

async function timeMatmul(s: Shape, device: GpuDevice): Promise<Json> {
  const bt = s.batch ?? 1;
  const aShape = bt > 1 ? [bt, s.m, s.k] : [s.m, s.k];
  const bShape = bt > 1 ? (s.transposeB ? [bt, s.n, s.k] : [bt, s.k, s.n]) : (s.transposeB ? [s.n, s.k] : [s.k, s.n]);
  const av = lcg(bt * s.m * s.k, 1), bv = lcg(bt * s.k * s.n, 2);
  const a = tf.tensor(av, aShape), b = tf.tensor(bv, bShape);
  const flop = 2 * bt * s.m * s.k * s.n;
  device.pushErrorScope('validation');
  const mm = () => tf.matMul(a, b, false, !!s.transposeB);
  const drain = async (c: tf.Tensor) => { const one = tf.slice(c, c.shape.map(() => 0), c.shape.map(() => 1)); await one.data(); one.dispose(); };
  const tw = Date.now();
  for (let i = 0; i < 2; i++) { const c = mm(); await drain(c); c.dispose(); } // warm-up: shader compilation
  const warmSeconds = (Date.now() - tw) / 1000;
  // Enough back-to-back matmuls for ~0.3 s a batch (at most 200), from the second warm-up's pace.
  const t1 = performance.now(); { const c = mm(); await drain(c); c.dispose(); } const one = performance.now() - t1;
  const reps = Math.max(2, Math.min(200, Math.round(300 / Math.max(one, 0.01))));
  let best = Infinity, last: tf.Tensor | undefined;
  for (let batch = 0; batch < 3; batch++) {
    const t = performance.now();
    for (let i = 0; i < reps; i++) { last?.dispose(); last = mm(); }
    await drain(last!);
    best = Math.min(best, (performance.now() - t) / reps);
  }
  // Check 4 rows x 64 columns of the last product (batch 0) against float64 dot products.
  const r0 = Math.floor(s.m / 2) - 2, cols = Array.from({ length: Math.min(64, s.n) }, (_, j) => Math.floor((j * s.n) / Math.min(64, s.n)));
  const rows = tf.slice(bt > 1 ? tf.squeeze(tf.slice(last!, [0, 0, 0], [1, s.m, s.n]), [0]) : last!, [r0, 0], [4, s.n]);
  const got = await rows.data() as Float32Array;
  rows.dispose();
  let num = 0, den = 0;
  for (let i = 0; i < 4; i++) for (const j of cols) {
    let ref = 0;
    for (let kk = 0; kk < s.k; kk++) ref += av[(r0 + i) * s.k + kk] * bv[s.transposeB ? j * s.k + kk : kk * s.n + j];
    num += (got[i * s.n + j] - ref) ** 2; den += ref * ref;
  }
  const err = await device.popErrorScope();
  last?.dispose(); a.dispose(); b.dispose();
  return { ...s, reps, bestMs: best, gflops: flop / (best * 1e6), warmupSeconds: warmSeconds, relErr: Math.sqrt(num / den),
    validationError: err?.message };
}

/** Binds a [rows, 1536] tensor larger than 128 MiB whole: does the adapter's binding limit let tfjs use it? */
async function bigBuffer(rows: number, device: GpuDevice): Promise<Json> {
  const H = 1536, bytes = rows * H * 4;
  const r: Json = { rows, hidden: H, bytes };
  const t0 = Date.now();
  device.pushErrorScope('validation');
  device.pushErrorScope('out-of-memory');
  try {
    const ev = new Float32Array(rows * H);
    for (let i = 0; i < ev.length; i++) ev[i] = ((Math.imul(i, 2654435761) >>> 20) % 2001 - 1000) / 1000;
    const hv = lcg(4 * H, 3);
    const E = tf.tensor2d(ev, [rows, H]), h = tf.tensor2d(hv, [4, H]);
    const logits = tf.matMul(h, E, false, true); // [4, rows]: E bound whole, as the tied LM head does
    const g = tf.gather(E, [0, rows - 1]); // the embedding lookup
    const lv = await logits.data() as Float32Array, gv = await g.data() as Float32Array;
    let num = 0, den = 0;
    for (const v of [0, 1, Math.floor(rows / 2), rows - 2, rows - 1]) for (let i = 0; i < 4; i++) {
      let ref = 0;
      for (let k = 0; k < H; k++) ref += hv[i * H + k] * ev[v * H + k];
      num += (lv[i * rows + v] - ref) ** 2; den += ref * ref;
    }
    let gatherOk = true;
    for (let k = 0; k < H; k++) if (gv[k] !== ev[k] || gv[H + k] !== ev[(rows - 1) * H + k]) gatherOk = false;
    Object.assign(r, { headRelErr: Math.sqrt(num / den), gatherExact: gatherOk });
    tf.dispose([E, h, logits, g]);
  } catch (e) {
    r.error = (e as Error).message.split('\n')[0];
  }
  const oom = await device.popErrorScope(), val = await device.popErrorScope();
  if (oom) r.outOfMemoryError = oom.message;
  if (val) r.validationError = val.message.split('\n').slice(0, 3).join(' ');
  r.ok = !r.error && !r.outOfMemoryError && !r.validationError && (r.headRelErr as number) < 1e-4 && r.gatherExact === true;
  r.seconds = (Date.now() - t0) / 1000;
  return r;
}

async function main(): Promise<void> {
  const device = await adapterReport();
  if (!device) { save(); console.log(`webgpu did not start: ${String(result.backendError)}`); process.exit(2); }
  // bench-matmul.mjs's shapes (SmolLM-135M's linears at 512 tokens), its 2048^3, a transposed and a batched
  // (attention-shaped) one, then the large squares that show the ceiling.
  const shapes: Shape[] = [
    { name: '512x576x1536', m: 512, k: 576, n: 1536 },
    { name: '512x1536x576', m: 512, k: 1536, n: 576 },
    { name: '512x576x1536 B^T', m: 512, k: 576, n: 1536, transposeB: true },
    ...(tiny ? [] : [
      { name: '9x[500x64x500] B^T', m: 500, k: 64, n: 500, batch: 9, transposeB: true },
      { name: '2048^3', m: 2048, k: 2048, n: 2048 },
      { name: '4096^3', m: 4096, k: 4096, n: 4096 },
      { name: '8192^3', m: 8192, k: 8192, n: 8192 },
    ]),
  ];
  for (const s of shapes) {
    let row: Json;
    try { row = await timeMatmul(s, device); } catch (e) { row = { ...s, error: (e as Error).message.split('\n')[0] }; }
    (result.rows as Json[]).push(row);
    console.log(row.error ? `${s.name}: FAILED ${String(row.error)}` :
      `${s.name.padEnd(20)} ${(row.bestMs as number).toFixed(3).padStart(9)} ms ${(row.gflops as number).toFixed(1).padStart(9)} GFLOP/s  rel err ${(row.relErr as number).toExponential(1)}` +
      `${row.validationError ? `  VALIDATION: ${String(row.validationError)}` : ''}`);
    save();
  }
  // Tiny: 168 MB, past lavapipe's 128 MiB binding limit; else the Qwen2.5-1.5B embedding itself (151936 x 1536, 933 MB).
  result.bigBuffer = await bigBuffer(tiny ? 27307 : 151936, device);
  const bb = result.bigBuffer as Json;
  console.log(`big buffer ${bb.rows}x1536 f32 (${((bb.bytes as number) / 2 ** 20).toFixed(0)} MiB): ${bb.ok ? 'OK' : 'FAILED'} ` +
    JSON.stringify({ headRelErr: bb.headRelErr, gatherExact: bb.gatherExact, error: bb.error, validationError: bb.validationError, outOfMemoryError: bb.outOfMemoryError }));
  result.finished = new Date().toISOString();
  save();
  process.exit(0);
}

main().catch((e) => { result.fatal = String(e); save(); console.error(e); process.exit(1); });
