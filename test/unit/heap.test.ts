// The estimate against the wasm heap it budgets, measured: the plan for a big model (layers streamed from the files in
// blocks, one layout, the backward taking W^T as its left operand) must hold at most what the estimate says, because the 4 GiB
// wasm heap is a wall: beyond it XNNPACK fails to pack a weight and the process aborts (issue #13: a Llama-3.1-8B-shaped
// probe died in its first backward layer at a 4007 MB heap where the plan said 3.0 GiB; every module's transpose
// and its packed copy stayed alive until the layer's backward ended).
//
// The heap's size is what is measured (it grows and never shrinks, so after the job it is the job's peak); this file
// runs in its own process, so the heap starts from the backend's few MB. The model is sized so that one layer's weights
// (34 MB in f32) dwarf the heap's start, the activations and the allocator's slack.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend } from '../../src/engine/runtime/backend';
import { openModelFolder } from '../../src/engine/hf/folder';
import { candidateModules } from '../../src/engine/hf/modules';
import { writeSynthModel } from '../../src/engine/hf/synth';
import { Decoder } from '../../src/engine/model/decoder';
import { initLoraA, loraScale } from '../../src/engine/model/lora';
import { linearBackward, linearForward, uploadLinear } from '../../src/engine/model/linear';
import { pageForRecordsSteps } from '../../src/engine/probe/page';
import { estimateJob, gib } from '../../src/engine/runtime/estimate';
import { runSteps } from '../../src/engine/runtime/jobs';
import { tmpDir } from '../helpers/reference';
import { randomRecords } from '../helpers/archcheck';

before(async () => { await initBackend('wasm'); });

interface WasmModule { HEAPU8: Uint8Array; _malloc(n: number): number; _free(p: number): void }
const wasmModule = () => (tf.backend() as unknown as { wasm: WasmModule }).wasm;
const heapBytes = () => wasmModule().HEAPU8.buffer.byteLength;

/** The wasm heap's sizes as it grows, noted around every allocation tfjs makes (the heap only grows). */
function watchHeap(): { sizes: number[]; stop(): void } {
  const wasm = wasmModule();
  wasm._free(wasm._malloc(8)); // the module's first call replaces its lazy stubs, which would drop a wrapper
  const sizes = [heapBytes()];
  const note = () => { const h = heapBytes(); if (h !== sizes[sizes.length - 1]) sizes.push(h); };
  const malloc = wasm._malloc;
  wasm._malloc = (n: number) => { note(); const p = malloc(n); note(); return p; };
  return { sizes, stop: () => { note(); wasm._malloc = malloc; } };
}

/**
 * The least the heap's top can have reached: emscripten grows it to max(request, min(1.2 x its size, request + 96
 * MiB)) in 64 KiB pages, so a last growth beyond 1.2 x was the request itself, and one of 1.2 x may have overshot it
 * (then only the size before it is certain).
 */
function peakAtLeast(sizes: number[]): number {
  const [prev, last] = sizes.length > 1 ? sizes.slice(-2) : [sizes[0], sizes[0]];
  return last > 1.2 * prev + 65536 ? last - 65536 : prev;
}

test('a probe planned with streamed layers in one layout holds no more of the wasm heap than its estimate says', async (t) => {
  // Llama-shaped, the MLP's three modules the largest (as in the 8B model): 8.4M parameters, 34 MB in f32, a layer;
  // short records, so that the weights are most of what the heap holds.
  const dir = path.join(tmpDir(), 'model');
  await writeSynthModel(dir, { hiddenSize: 1024, intermediateSize: 2048, layers: 3, heads: 8, kvHeads: 2, vocabSize: 512, tied: false, seed: 81, dtype: 'BF16' });
  const folder = openModelFolder(dir);
  const T = 16, recs = randomRecords(86, [T, T], folder.cfg.vocabSize);
  // A budget under the layers' both layouts (about 160 MB) and above one layout: the plan the 8B model gets.
  process.env.DOMLORA_MEMORY_BUDGET = String(130e6);
  let est;
  try {
    est = estimateJob({ cfg: folder.cfg, backend: 'wasm', threads: 1, tokensPerRecord: T, backwardPasses: 2, recordsPerPass: 2, storedBytes: 2 });
  } finally {
    delete process.env.DOMLORA_MEMORY_BUDGET;
  }
  assert.ok(est.fits, est.note);
  assert.deepEqual([est.stream, est.bothLayouts, est.schedule, est.groupSize], [true, false, 'layer-major', 2]);
  const modules = candidateModules(folder.cfg);
  const rank = 8, scale = loraScale(16, rank);
  const watch = watchHeap();
  const start = watch.sizes[0];
  const model = Decoder.load(folder.cfg, folder.store, { stream: est.stream, streamVocab: est.streamVocab, keepBothLayouts: est.bothLayouts });
  const aT = new Map(modules.map((m) => [m.name, tf.tidy(() => tf.transpose(tf.tensor2d(initLoraA(1, m.name, rank, m.dIn), [rank, m.dIn])) as tf.Tensor2D)]));
  // The tensors on the backend each time a layer is brought in: the forward's layers, then the backward's.
  const atLayer: number[] = [];
  const hold = model.holdLayer.bind(model);
  model.holdLayer = (l: number) => { atLayer.push(tf.memory().numTensors); return hold(l); };
  try {
    const rows = runSteps(pageForRecordsSteps(model, recs, modules, aT, rank, scale));
    assert.equal(rows.length, 2);
    for (const r of rows) assert.ok(Number.isFinite(r.loss) && r.expected.every(Number.isFinite));
  } finally {
    watch.stop();
    tf.dispose([...aT.values()]);
    model.dispose();
  }
  // Nothing a layer's backward leaves behind stays on the backend for the next layer (PAGE's values are read after each
  // layer): small blocks kept across layers sit in the holes the next layer's weights need, and the heap grows.
  const backward = atLayer.slice(folder.cfg.numLayers);
  assert.equal(backward.length, folder.cfg.numLayers);
  assert.deepEqual(backward, backward.map(() => backward[0]), `tensors on the backend as each backward layer starts: ${backward.join(', ')}`);
  const sizes = watch.sizes.map((b) => gib(b)).join(' -> ');
  // One layer in one layout with XNNPACK's packed copy is 67 MB; every module transposed at once would add 67 MB more.
  assert.ok(heapBytes() - start > 40e6, `the heap grew ${sizes} only: the model is too small to measure anything`);
  const held = peakAtLeast(watch.sizes) - start;
  t.diagnostic(`held at least ${gib(held)} (${sizes}); estimate ${gib(est.heapBytes)}`);
  assert.ok(held <= est.heapBytes, `the job held at least ${gib(held)} of the heap (${sizes}), over the estimate's ${gib(est.heapBytes)} ` +
    `(weights ${gib(est.weightsBytes)}, activations ${gib(est.activationBytes)})`);
});

test('a linear uploaded in blocks gives the whole forward and backward products, in either layout, and leaves nothing behind', () => {
  const T = 5, dIn = 37, dOut = 11;
  const x = tf.randomNormal([T, dIn], 0, 1, 'float32', 2) as tf.Tensor2D;
  const delta = tf.randomNormal([T, dOut], 0, 1, 'float32', 3) as tf.Tensor2D;
  const w = tf.randomNormal([dOut, dIn], 0, 1, 'float32', 4) as tf.Tensor2D; // nn.Linear's stored [out, in]
  const wantY = tf.tidy(() => tf.matMul(x, w, false, true)); // [T, out]
  const wantDx = tf.matMul(delta, w); // [T, in]
  const stored = { linear: w.dataSync() as Float32Array, conv1d: tf.tidy(() => tf.transpose(w)).dataSync() as Float32Array };
  const before = tf.memory().numTensors;
  const maxErr = (a: tf.Tensor, b: tf.Tensor) => tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))).dataSync()[0]);
  // Blocks of 4 output columns (the last one short), of 1, and the whole module; both stored layouts; one or both kept.
  for (const bytes of [4 * dIn * 4, 1, Infinity]) for (const layout of ['linear', 'conv1d'] as const) for (const both of [false, true]) {
    const what = `blocks of ${bytes} bytes, ${layout}, ${both ? 'both layouts' : 'one layout'}`;
    const lin = { name: 'm', kind: 'm', dIn, dOut, ...uploadLinear(stored[layout], dIn, dOut, layout === 'conv1d', both, bytes) };
    assert.equal(lin.wt.length, bytes === Infinity ? 1 : bytes === 1 ? dOut : 3, what);
    assert.equal(Boolean(lin.w), both, what);
    const y = linearForward(lin, x, undefined);
    const dx = linearBackward(lin, x, delta, {}, new Map(), true)!;
    assert.deepEqual([y.shape, dx.shape], [[T, dOut], [T, dIn]], what);
    assert.ok(maxErr(y, wantY) < 1e-5 && maxErr(dx, wantDx) < 1e-5, `${what}: y err ${maxErr(y, wantY)}, dx err ${maxErr(dx, wantDx)}`);
    tf.dispose([y, dx, ...lin.wt, ...lin.w ?? []]);
    assert.equal(tf.memory().numTensors, before, `${what}: only the products stayed, and they are freed`);
  }
  tf.dispose([x, delta, w, wantY, wantDx]);
});
