// Job sizing before any weight is read: what fits the wasm heap, and the refusal when it does not; the activation
// bytes against what the engine really holds, for every architecture.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { candidateModules } from '../../src/engine/hf/modules';
import { ModelConfig, normaliseConfig } from '../../src/engine/hf/config';
import { SUPPORTED_MODEL_TYPES } from '../../src/engine/arch/registry';
import { estimateJob, assertFits } from '../../src/engine/runtime/estimate';
import { layerActivationFloats, recordActivationBytes } from '../../src/engine/model/estimate';
import { DomLoraError } from '../../src/engine/runtime/errors';
import { initBackend } from '../../src/engine/runtime/backend';
import { openModelFolder } from '../../src/engine/hf/folder';
import { Decoder } from '../../src/engine/model/decoder';
import { LoraGrads } from '../../src/engine/model/types';
import { writeSynthModel } from '../../src/engine/hf/synth';
import type { WeightStore } from '../../src/engine/hf/safetensors';
import { pageForRecord } from '../../src/engine/probe/page';
import { initLoraA, loraScale, makeAdapter, disposeAdapter } from '../../src/engine/model/lora';
import type { TokenizedRecord } from '../../src/engine/data/tokenize';
import { tmpDir } from '../helpers/reference';

const llama = (h: number, i: number, l: number, heads: number, kv: number, v: number) => normaliseConfig({
  model_type: 'llama', hidden_size: h, intermediate_size: i, num_hidden_layers: l, num_attention_heads: heads, num_key_value_heads: kv,
  vocab_size: v, tie_word_embeddings: true });

test('a SmolLM-135M-shaped probe fits the wasm heap resident; an 8B model runs layer-major from the files; a 405B layer does not fit, and the refusal names what would', () => {
  const small = estimateJob({ cfg: llama(576, 1536, 30, 9, 3, 49152), backend: 'wasm', threads: 2, tokensPerRecord: 512, backwardPasses: 8 });
  assert.ok(small.fits, small.note);
  assert.equal(small.schedule, 'record-major');
  assert.ok(small.heapBytes > 1e9 && small.heapBytes < 0.9 * 4 * 1024 ** 3, `${small.heapBytes}`);
  assert.ok(small.seconds > 1 && small.seconds < 600);
  // Llama-3.1-8B's shapes (untied, 128k vocabulary): one layer, one layout, the vocabulary in parts.
  const big = estimateJob({ cfg: { ...llama(4096, 14336, 32, 32, 8, 128256), tieWordEmbeddings: false }, backend: 'wasm', threads: 2,
    tokensPerRecord: 256, backwardPasses: 2, recordsPerPass: 2, storedBytes: 2 });
  assert.ok(big.fits, big.note);
  assert.deepEqual([big.stream, big.streamVocab, big.bothLayouts, big.schedule, big.groupSize, big.weightMoves], [true, true, false, 'layer-major', 2, 2]);
  assert.ok(big.heapBytes < 0.9 * 4 * 1024 ** 3);
  const huge = estimateJob({ cfg: llama(16384, 53248, 126, 128, 8, 128256), backend: 'wasm', threads: 2, tokensPerRecord: 512, backwardPasses: 32 });
  assert.equal(huge.fits, false);
  assert.throws(() => assertFits(huge, 'wasm'), (e: unknown) => e instanceof DomLoraError && e.code === 'bad-input' && /4 GiB/.test(e.message) && /--backend tensorflow/.test(e.message));
  // More tokens, more activations; DomLoRA's lowest layer keeps fewer layers' activations (a model that stays resident).
  const mid = llama(256, 768, 12, 4, 2, 32000);
  const base = estimateJob({ cfg: mid, backend: 'wasm', threads: 1, tokensPerRecord: 512, backwardPasses: 8 });
  const longer = estimateJob({ cfg: mid, backend: 'wasm', threads: 1, tokensPerRecord: 1024, backwardPasses: 8 });
  assert.ok(!base.stream && !longer.stream);
  assert.ok(longer.activationBytes > base.activationBytes);
  // Per layer, attention's [T, T] probabilities make twice the tokens more than twice the bytes.
  assert.ok(layerActivationFloats(mid, 1024).kept > 2 * layerActivationFloats(mid, 512).kept);
  const shallow = estimateJob({ cfg: mid, backend: 'wasm', threads: 1, tokensPerRecord: 512, backwardPasses: 8, lowestLayer: 8 });
  assert.ok(shallow.activationBytes < base.activationBytes);
  // Only the probe keeps Gram matrices; training's LoRA paths keep nothing of their own; a forward-only job
  // (evaluation, generation) keeps no layer for a backward pass.
  const short = (taps: 'page' | 'lora' | 'none', backwardPasses = 8, T = 128) =>
    estimateJob({ cfg: mid, backend: 'wasm', threads: 1, tokensPerRecord: T, backwardPasses, taps }).activationBytes;
  assert.ok(short('lora') < short('page'), `${short('lora')} vs ${short('page')}`);
  assert.ok(short('none') <= short('lora'));
  assert.ok(short('none', 0, 1024) < short('none', 8, 1024) / 2, `forward only ${short('none', 0, 1024)} vs ${short('none', 8, 1024)}`);
  // The mean record length sizes the time, the longest the memory.
  const mixed = estimateJob({ cfg: mid, backend: 'wasm', threads: 1, tokensPerRecord: 1024, meanTokensPerRecord: 256, backwardPasses: 8 });
  assert.equal(mixed.activationBytes, longer.activationBytes);
  assert.ok(mixed.seconds < longer.seconds / 3);
  // The refusal names the model folder.
  assert.throws(() => assertFits(huge, 'wasm', '/models/llama-405b'), (e: unknown) => e instanceof DomLoraError && e.file === '/models/llama-405b');
});

// ---- activation bytes against what the engine really holds, architecture by architecture ----------------------

/** Bytes of the distinct buffers among the tensors reachable from `obj` (reshapes share their input's buffer). */
function bufferBytes(obj: unknown): number {
  const seen = new Set<object>();
  let bytes = 0;
  const visit = (v: unknown): void => {
    if (v instanceof tf.Tensor) {
      if (!seen.has(v.dataId)) { seen.add(v.dataId); bytes += v.size * 4; }
    } else if (v instanceof Map) {
      for (const x of v.values()) visit(x);
    } else if (v && typeof v === 'object') {
      for (const x of Object.values(v)) visit(x);
    }
  };
  visit(obj);
  return bytes;
}

/**
 * The most bytes of new buffers alive at once while `fn` runs (tfjs's own numBytes counts a reshape twice; this
 * follows buffers: one is counted when a tensor first points at it, and forgotten when the backend frees it).
 */
function peakNewBytes(fn: () => void): number {
  const engine = tf.engine() as unknown as {
    state: { tensorInfo: WeakMap<object, unknown> };
    trackTensor: (t: tf.Tensor, backend: unknown) => void;
    removeDataId: (id: object, backend: unknown) => void;
  };
  const { trackTensor, removeDataId } = engine;
  const live = new Map<object, number>();
  let now = 0, peak = 0;
  engine.trackTensor = function (this: unknown, t, backend) {
    const fresh = !engine.state.tensorInfo.has(t.dataId);
    trackTensor.call(this, t, backend);
    if (fresh) { const n = t.size * 4; live.set(t.dataId, n); now += n; peak = Math.max(peak, now); }
  };
  engine.removeDataId = function (this: unknown, id, backend) {
    removeDataId.call(this, id, backend);
    const n = live.get(id);
    if (n !== undefined) { live.delete(id); now -= n; }
  };
  try { fn(); } finally { engine.trackTensor = trackTensor; engine.removeDataId = removeDataId; }
  return peak;
}

test('activation bytes follow what each architecture keeps: per layer, one layer\'s backward, and a whole record', async (t) => {
  await initBackend('wasm');
  const rows: string[] = [];
  for (const arch of SUPPORTED_MODEL_TYPES) {
    const dir = path.join(tmpDir(), arch);
    // head_dim * heads != hidden (except GPT-2, which has no head_dim), so a Q/H mix-up would show.
    await writeSynthModel(dir, { hiddenSize: 32, intermediateSize: 48, layers: 3, heads: 4, kvHeads: 2, vocabSize: 384, tied: true, seed: 21, arch,
      ...(arch === 'gpt2' ? {} : { headDim: 12 }) });
    const { cfg, store } = openModelFolder(dir);
    // T = 12: PAGE takes its Gram route (kept [T, T] matrices); T = 40: its direct route.
    for (const T of [12, 40]) rows.push(...checkActivations(cfg, store, T));
  }
  t.diagnostic(rows.join('\n'));
});

/** One architecture at one record length: the estimate against the bytes the engine holds. Returns report lines. */
function checkActivations(cfg: ModelConfig, store: WeightStore, T: number): string[] {
  const arch = `${cfg.modelType}, T=${T}`;
  const ids = Array.from({ length: T }, (_, i) => 3 + ((i * 37) % 300));
  const mask = ids.map((_, i) => (i >= T / 3 ? 1 : 0));
  const fl = layerActivationFloats(cfg, T);
  const est = (lowestLayer: number) => estimateJob({ cfg, backend: 'wasm', threads: 1, tokensPerRecord: T, backwardPasses: 1, lowestLayer });
  const full = est(0);
  assert.equal(full.stream, false);
  const modules = candidateModules(cfg);
  const rows: string[] = [];
  const model = Decoder.load(cfg, store);
  try {
    model.recordLoss(ids, mask); // the RoPE and mask tables exist from here on
    // One layer's cache (what layerForward keeps for the backward) against the estimate's bytes per layer.
    const x = model.embedTokens(ids);
    const { out, cache } = model.layerForward(1, x, undefined, true);
    const kept = bufferBytes(cache);
    const work = peakNewBytes(() => { model.layerBackward(1, out, cache!, {})!.dispose(); });
    tf.dispose([x, out]);
    Decoder.disposeCache(cache!);
    const perLayer = full.activationBytes - est(1).activationBytes;
    assert.equal(perLayer, 4 * (fl.kept + fl.tapKept));
    assert.equal(4 * fl.kept, kept, `${arch}: the cache counted tensor by tensor`);
    const rLayer = perLayer / kept, rWork = (4 * fl.work) / work;
    assert.ok(rLayer >= 1 && rLayer <= 1.25, `${arch}: a layer keeps ${kept} bytes, the estimate says ${perLayer}`);
    assert.ok(rWork >= 1 && rWork <= 1.25, `${arch}: one layer's backward holds ${work} bytes, the estimate says ${4 * fl.work}`);
    // A whole record: plain, with PAGE's taps on every module, and with LoRA on every module. The upper bound is loose
    // because the taps' allowance weighs more at these tiny shapes than at real ones.
    const record = peakNewBytes(() => { model.recordBackward(ids, mask, {}); });
    const rRecord = full.activationBytes / record;
    assert.ok(rRecord >= 1 && rRecord <= 1.6, `${arch}: a record holds ${record} bytes at most, the estimate says ${full.activationBytes}`);
    const aT = new Map(modules.map((m) => [m.name, tf.tidy(() => tf.transpose(tf.tensor2d(initLoraA(0, m.name, 8, m.dIn), [8, m.dIn])) as tf.Tensor2D)]));
    const rec = { index: 0, line: 1, inputIds: ids, lossMask: mask } as unknown as TokenizedRecord;
    const page = peakNewBytes(() => { pageForRecord(model, rec, modules, aT, 8, loraScale(16, 8)); });
    tf.dispose([...aT.values()]);
    const rPage = full.activationBytes / page;
    assert.ok(rPage >= 1, `${arch}: PAGE on every module holds ${page} bytes at most, the estimate says ${full.activationBytes}`);
    // LoRA, rank 8: less the accumulated gradients (training state, r (d_in + d_out) per module, not activations).
    const adapters = new Map(modules.map((m) => [m.name, makeAdapter(m, 8, 2, initLoraA(1, m.name, 8, m.dIn), new Float32Array(m.dOut * 8).fill(0.01))]));
    const grads = new Map<string, LoraGrads>();
    const loraPeak = peakNewBytes(() => { model.recordBackward(ids, mask, { adapters, loraGrads: grads }); });
    const lora = loraPeak - bufferBytes(grads);
    for (const g of grads.values()) tf.dispose([g.da, g.db]);
    for (const a of adapters.values()) disposeAdapter(a);
    const rLora = full.activationBytes / lora;
    assert.ok(rLora >= 1, `${arch}: LoRA on every module holds ${lora} bytes at most, the estimate says ${full.activationBytes}`);
    rows.push(`${arch}: layer cache ${kept} B (estimate x${rLayer.toFixed(3)}), layer backward ${work} B (x${rWork.toFixed(3)}), ` +
      `record ${record} B (x${rRecord.toFixed(3)}), PAGE record ${page} B (x${rPage.toFixed(3)}), LoRA record ${lora} B (x${rLora.toFixed(3)})`);
  } finally {
    model.dispose();
  }
  const ck = Decoder.load(cfg, store, { checkpoint: true });
  try {
    const peak = peakNewBytes(() => { ck.recordBackward(ids, mask, {}); });
    const estCk = recordActivationBytes(cfg, T, cfg.numLayers, true);
    assert.ok(estCk >= peak && estCk <= 1.6 * peak, `${arch}: checkpointed, a record holds ${peak} bytes at most, the estimate says ${estCk}`);
    rows.push(`${arch}: checkpointed record ${peak} B (x${(estCk / peak).toFixed(3)})`);
  } finally {
    ck.dispose();
  }
  return rows;
}
