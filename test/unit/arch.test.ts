// Every architecture of config.ts's ARCHITECTURES against the PyTorch reference (test/reference/llama_ref.py,
// float64), on tiny random folders written here: the loss, both PAGE quantities with the same A, and LoRA gradients
// with A and B non-zero (so the LoRA forward path and every backward step below it are checked). The sizes make
// each feature bite: a sliding window shorter than the records, head_dim * heads != hidden, soft-caps small enough
// to bend the scores, RoPE scalings whose changed frequencies are the ones the positions reach.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend } from '../../src/engine/runtime/backend';
import { openModelFolder, modelInfo } from '../../src/engine/hf/folder';
import { runExport } from '../../src/engine/export/exporters';
import { ARCHITECTURES } from '../../src/engine/arch/registry';
import { candidateModules } from '../../src/engine/hf/modules';
import { normaliseConfig } from '../../src/engine/hf/config';
import { initLoraA, disposeAdapter } from '../../src/engine/model/lora';
import { runProbe } from '../../src/engine/probe/probe';
import { runTrain } from '../../src/engine/train/loop';
import { writeSynthModel, synthDataset } from '../../src/engine/hf/synth';
import { SynthShape } from '../../src/engine/arch/types';
import { RopeTables } from '../../src/engine/model/rope';
import { activation, activationWithGrad } from '../../src/engine/model/mlp';
import { Decoder } from '../../src/engine/model/decoder';
import { buildPeftConfig, writeAdapterFiles, loadAdapter } from '../../src/engine/export/peft';
import { Rng } from '../../src/engine/runtime/rng';
import { tmpDir, reference } from '../helpers/reference';
import { checkAgainstReference, randomRecords } from '../helpers/archcheck';

before(async () => { await initBackend('wasm'); });

const BASE = { hiddenSize: 32, intermediateSize: 48, layers: 3, heads: 4, kvHeads: 2, vocabSize: 384, tied: false };

test('Mistral: sliding window shorter than the records matches PyTorch', async () => {
  await checkAgainstReference('mistral', { ...BASE, seed: 21, arch: 'mistral', config: { sliding_window: 8 } }, [{ sliding_window: null }]);
});

test('Qwen2: q/k/v biases (and a sliding window from max_window_layers up) match PyTorch', async () => {
  await checkAgainstReference('qwen2', { ...BASE, seed: 22, arch: 'qwen2', tied: true, config: { use_sliding_window: true, sliding_window: 6, max_window_layers: 1 } },
    [{ use_sliding_window: false }]);
});

test('Qwen3: per-head q_norm / k_norm before RoPE, explicit head_dim (heads x head_dim != hidden), untied head', async () => {
  await checkAgainstReference('qwen3', { ...BASE, seed: 23, arch: 'qwen3', headDim: 16 }, [{ model_type: 'llama' }]);
});

test('Gemma (1): (1 + w) norms, sqrt(H) embeddings, GeGLU (tanh) matches PyTorch; the defaults are Gemma\'s', async () => {
  await checkAgainstReference('gemma', { ...BASE, seed: 46, arch: 'gemma', tied: true, headDim: 12 }, [{ model_type: 'llama' }]);
  // transformers' GemmaConfig defaults, and hidden_activation winning over the "hidden_act": "gelu" that Gemma's
  // config.json files carry.
  const g = normaliseConfig({ model_type: 'gemma', hidden_size: 64, intermediate_size: 96, num_hidden_layers: 2, num_attention_heads: 2, vocab_size: 100, hidden_act: 'gelu' });
  assert.deepEqual([g.headDim, g.tieWordEmbeddings, g.hiddenAct, g.normOffset, g.embedScale, g.sandwichNorms, g.attnScale, g.maxPositionEmbeddings],
    [256, true, 'gelu_tanh', 1, Math.fround(8), false, 1 / 16, 8192]);
});

test('Gemma 2: (1 + w) norms, sqrt(H) embeddings, sandwich norms, GeGLU, soft-capping, alternating sliding window', async () => {
  await checkAgainstReference('gemma2', {
    ...BASE, seed: 24, arch: 'gemma2', tied: true, headDim: 12,
    config: { sliding_window: 8, attn_logit_softcapping: 1.5, final_logit_softcapping: 4.0, query_pre_attn_scalar: 10 },
  }, [{ sliding_window: null }, { attn_logit_softcapping: null }, { final_logit_softcapping: null }]);
});

test('Gemma 3: (1 + w) q/k norms, local layers on rope_local_base_freq, every Nth layer global, no soft-caps by default', async () => {
  const shape: SynthShape = { ...BASE, seed: 42, arch: 'gemma3_text', tied: true, headDim: 12, config: { sliding_window: 8, sliding_window_pattern: 2 } };
  await checkAgainstReference('gemma3', shape, [{ rope_local_base_freq: 1000000 }, { sliding_window_pattern: 1000 }]);
  // Global layers scaled (linear), local ones not.
  await checkAgainstReference('gemma3-linear-rope', { ...shape, seed: 43, config: { sliding_window: 8, sliding_window_pattern: 3, rope_scaling: { rope_type: 'linear', factor: 8 } } }, [{ rope_scaling: null }]);
  // transformers v5's per-layer-type rope_parameters (no top-level rope_theta / rope_local_base_freq then), with
  // bases unlike the defaults.
  await checkAgainstReference('gemma3-rope-v5', { ...shape, seed: 45, config: { sliding_window: 8, sliding_window_pattern: 2, rope_theta: undefined, rope_local_base_freq: undefined, rope_parameters: {
    full_attention: { rope_type: 'linear', factor: 4, rope_theta: 500000 }, sliding_attention: { rope_type: 'default', rope_theta: 20000 } } } }, [], [40, 17]);
});

test('Phi-3: fused qkv_proj and gate_up_proj are the candidates (4 heatmap columns), sliding window', async () => {
  const err = await checkAgainstReference('phi3', { ...BASE, seed: 25, arch: 'phi3', config: { sliding_window: 16 } }, [{ sliding_window: null }]);
  assert.ok(err.loss < 1e-5);
  assert.deepEqual([...ARCHITECTURES.phi3.modules.kinds], ['qkv_proj', 'o_proj', 'gate_up_proj', 'down_proj']);
});

test('Phi-4-mini: partial rotary (RoPE over the first 0.75 of each head), alone and with LongRoPE, matches PyTorch', async () => {
  await checkAgainstReference('phi4-partial-rotary', { ...BASE, seed: 29, arch: 'phi3', config: { partial_rotary_factor: 0.75 } }, [{ partial_rotary_factor: 1 }]);
  await checkAgainstReference('phi4-partial-longrope', {
    ...BASE, seed: 30, arch: 'phi3',
    config: { partial_rotary_factor: 0.75, max_position_embeddings: 96, original_max_position_embeddings: 24, rope_scaling: { type: 'longrope', short_factor: [1, 1.5, 2], long_factor: [1, 2, 4] } },
  }, [{ rope_scaling: null }]);
});

test('partial rotary, engine only: the dims past rotary_dim pass through, the rotary ones turn, and the backward inverts it', async () => {
  const dir = path.join(tmpDir(), 'phi4-rope-only');
  await writeSynthModel(dir, { ...BASE, seed: 31, arch: 'phi3', config: { partial_rotary_factor: 0.75 } });
  const folder = openModelFolder(dir);
  const tables = new RopeTables(folder.cfg);
  const { headDim: hd, rotaryDim: rd, numHeads: nH } = folder.cfg;
  assert.deepEqual([hd, rd], [8, 6]);
  const T = 12;
  const rope = (x: tf.Tensor3D, T: number, inverse: boolean) => tables.apply(x, T, inverse);
  const x = tf.randomNormal([T, nH, hd], 0, 1, 'float32', 5) as tf.Tensor3D;
  const y = rope(x, T, false);
  const back = rope(y, T, true);
  const [xs, ys, bs] = [x, y, back].map((t) => t.arraySync() as number[][][]);
  let passDiff = 0, turned = 0, inverseDiff = 0;
  for (let t = 0; t < T; t++) for (let h = 0; h < nH; h++) for (let i = 0; i < hd; i++) {
    if (i >= rd) passDiff = Math.max(passDiff, Math.abs(ys[t][h][i] - xs[t][h][i]));
    else if (t > 0) turned = Math.max(turned, Math.abs(ys[t][h][i] - xs[t][h][i]));
    inverseDiff = Math.max(inverseDiff, Math.abs(bs[t][h][i] - xs[t][h][i]));
  }
  assert.equal(passDiff, 0, 'dims past rotary_dim are untouched');
  assert.ok(turned > 0.1, `the rotary dims turn (${turned})`);
  assert.ok(inverseDiff < 1e-5, `the backward's rotation inverts the forward's (${inverseDiff})`);
  tf.dispose([x, y, back]);
  tables.dispose();
});

test('GPT-2: Conv1D [in, out] weights, LayerNorm with bias, learned positions, gelu_new, unprefixed checkpoints', async () => {
  const shape: SynthShape = { ...BASE, seed: 26, arch: 'gpt2', kvHeads: 4, tied: true, intermediateSize: 64 };
  await checkAgainstReference('gpt2', shape);
  await checkAgainstReference('gpt2-unprefixed', { ...shape, unprefixed: true }, [], [21, 13]);
});

test('GPT-NeoX (Pythia): parallel residual, per-head [q, k, v] query_key_value, RoPE over a quarter of each head, exact GELU, untied embed_out', async () => {
  const shape: SynthShape = { ...BASE, seed: 37, arch: 'gpt_neox', kvHeads: 4, intermediateSize: 64 };
  // Each feature, taken away in the reference, moves the loss by far more than the tolerance.
  await checkAgainstReference('gpt_neox', shape, [{ use_parallel_residual: false }, { rotary_pct: 1 }]);
  await checkAgainstReference('gpt_neox-sequential', { ...shape, seed: 38, config: { use_parallel_residual: false, rotary_pct: 0.5 } }, [], [23, 11]);
  assert.deepEqual([...ARCHITECTURES.gpt_neox.modules.kinds], ['query_key_value', 'dense', 'dense_h_to_4h', 'dense_4h_to_h']);
});

test('SmolLM3: no RoPE on the layers no_rope_layers marks (every 4th by default), tied head, a window on the NoPE layers', async () => {
  const shape: SynthShape = { ...BASE, layers: 4, seed: 51, arch: 'smollm3', tied: true };
  // The default list leaves layer 3 unrotated; rotating it too moves the loss.
  await checkAgainstReference('smollm3', shape, [{ no_rope_layers: [1, 1, 1, 1] }]);
  // A list of its own (layers 0 and 2 NoPE), with use_sliding_window: the window lands on the NoPE layers.
  await checkAgainstReference('smollm3-list-window', { ...shape, seed: 52, config: { no_rope_layers: [0, 1, 0, 1], use_sliding_window: true, sliding_window: 8 } },
    [{ no_rope_layers: [1, 1, 1, 1], use_sliding_window: false }, { use_sliding_window: false }], [40, 17]);
  // SmolLM3Config's rules, transcribed: the interval when there is no list, layer_types when given, the defaults.
  const base = { model_type: 'smollm3', hidden_size: 64, intermediate_size: 96, num_hidden_layers: 8, num_attention_heads: 4, vocab_size: 100 };
  const c = normaliseConfig(base);
  assert.deepEqual(c.ropeLayers, [true, true, true, false, true, true, true, false]);
  assert.deepEqual([c.tieWordEmbeddings, c.ropeTheta, c.maxPositionEmbeddings, c.normEps], [true, 2000000, 32768, 1e-6]);
  assert.deepEqual(c.slidingWindows, Array(8).fill(null));
  assert.deepEqual(normaliseConfig({ ...base, no_rope_layer_interval: 3 }).ropeLayers, [true, true, false, true, true, false, true, true]);
  assert.deepEqual(normaliseConfig({ ...base, num_hidden_layers: 2, no_rope_layers: [0, 1, 1] }).ropeLayers, [false, true], 'a longer list is read as far as the layers go');
  assert.deepEqual(normaliseConfig({ ...base, use_sliding_window: true, sliding_window: 16 }).slidingWindows, [null, null, null, 16, null, null, null, 16]);
  assert.deepEqual(normaliseConfig({ ...base, sliding_window: 16 }).slidingWindows, Array(8).fill(null), 'no window unless use_sliding_window');
  assert.deepEqual(normaliseConfig({ ...base, num_hidden_layers: 2, sliding_window: 16, layer_types: ['sliding_attention', 'full_attention'] }).slidingWindows, [16, null]);
  assert.throws(() => normaliseConfig({ ...base, no_rope_layers: [1, 1, 0] }, 'cfg.json'), /cfg\.json: "no_rope_layers" must list 1 \(RoPE\) or 0 \(no RoPE\) for each of the 8 layers/);
  assert.throws(() => normaliseConfig({ ...base, no_rope_layer_interval: 0 }), /"no_rope_layer_interval" must be a positive integer/);
});

test('OLMo 2: norms on the blocks\' outputs only, RMSNorm q_norm / k_norm over the whole projection before RoPE', async () => {
  await checkAgainstReference('olmo2', { ...BASE, seed: 53, arch: 'olmo2' });
  // With q/k/v/o biases and head_dim x heads != hidden: the q norm is 48 wide, the k norm 24, the hidden state 32.
  await checkAgainstReference('olmo2-bias-head-dim', { ...BASE, seed: 54, arch: 'olmo2', attentionBias: true, headDim: 12 }, [], [33, 21]);
  const c = normaliseConfig({ model_type: 'olmo2', hidden_size: 64, intermediate_size: 96, num_hidden_layers: 2, num_attention_heads: 4, vocab_size: 100 });
  assert.deepEqual([c.qkNorm, c.sandwichNorms, c.tieWordEmbeddings, c.normEps, c.numKvHeads], ['projection', true, false, 1e-5, 4]);
});

test('Granite: embedding_multiplier, residual_multiplier, attention_multiplier (the attention scale) and logits_scaling match PyTorch', async () => {
  const shape: SynthShape = { ...BASE, seed: 55, arch: 'granite', config: { embedding_multiplier: 6, residual_multiplier: 0.5, attention_multiplier: 0.3, logits_scaling: 3 } };
  // Each multiplier, set back to what Llama does, moves the loss.
  await checkAgainstReference('granite', shape,
    [{ embedding_multiplier: 1 }, { residual_multiplier: 1 }, { attention_multiplier: 1 / Math.sqrt(8) }, { logits_scaling: 1 }]);
  // granite-3.1-2b-base's own values (12, 0.22, 0.015625, 8), tied.
  await checkAgainstReference('granite-3.1-values', { ...BASE, seed: 56, arch: 'granite', tied: true }, [], [33, 21]);
  const c = normaliseConfig({ model_type: 'granite', hidden_size: 64, intermediate_size: 96, num_hidden_layers: 2, num_attention_heads: 4, vocab_size: 100 });
  assert.deepEqual([c.embedScale, c.residualScale, c.attnScale, c.logitScale], [1, 1, 1, 1], 'GraniteConfig\'s defaults are 1.0, the attention scale too');
});

test('head_dim other than hidden / heads (Mistral-Nemo: 128, not 5120 / 32) matches PyTorch; without the key it is hidden / heads', async () => {
  // 4 heads of 16 over a 32-wide hidden state; Qwen 3's test above does the same with its q/k norms.
  await checkAgainstReference('mistral-head-dim', { ...BASE, seed: 57, arch: 'mistral', headDim: 16 });
  const raw = { model_type: 'mistral', hidden_size: 5120, intermediate_size: 14336, num_hidden_layers: 40, num_attention_heads: 32, num_key_value_heads: 8, vocab_size: 131072 };
  assert.equal(normaliseConfig({ ...raw, head_dim: 128 }).headDim, 128);
  assert.equal(normaliseConfig(raw).headDim, 160);
  const q = candidateModules(normaliseConfig({ ...raw, head_dim: 128, num_hidden_layers: 1 }))[0];
  assert.deepEqual([q.name, q.dIn, q.dOut], ['model.layers.0.self_attn.q_proj', 5120, 4096]);
});

test('exact GELU (erf) and its derivative, as GPT-NeoX uses it', async () => {
  const dir = path.join(tmpDir(), 'gelu-exact');
  await writeSynthModel(dir, { ...BASE, layers: 1, seed: 39, arch: 'gpt_neox', kvHeads: 4 });
  const folder = openModelFolder(dir);
  assert.equal(folder.cfg.hiddenAct, 'gelu');
  const m = { activation: (g: tf.Tensor2D) => activation(folder.cfg, g), activationWithGrad: (g: tf.Tensor2D) => activationWithGrad(folder.cfg, g) };
  const xs = [-3, -1, -0.5, 0, 0.5, 1, 2];
  // x Phi(x), from the normal CDF's tabled values (the tanh approximation is off by up to 1.5e-4 here).
  const want = [-0.0040496, -0.15865525, -0.15426877, 0, 0.34573123, 0.84134475, 1.95449974];
  const g = tf.tensor2d(xs, [1, xs.length]);
  const a = Array.from(m.activation(g).dataSync());
  a.forEach((v, i) => assert.ok(Math.abs(v - want[i]) < 2e-6, `gelu(${xs[i]}) = ${v}, want ${want[i]}`));
  const { a: a2, da } = m.activationWithGrad(g);
  assert.deepEqual(Array.from(a2.dataSync()), a);
  const h = 1e-2;
  const fd = xs.map((x) => { const lo = m.activation(tf.tensor2d([x - h], [1, 1])).dataSync()[0], hi = m.activation(tf.tensor2d([x + h], [1, 1])).dataSync()[0]; return (hi - lo) / (2 * h); });
  Array.from(da.dataSync()).forEach((v, i) => assert.ok(Math.abs(v - fd[i]) < 1e-3, `gelu'(${xs[i]}) = ${v}, finite difference ${fd[i]}`));
});

test('RoPE scaling: linear, dynamic (beyond max_position_embeddings only), llama3 and yarn match PyTorch', async () => {
  const llama = { ...BASE, seed: 27, arch: 'llama' as const };
  const off = [{ rope_scaling: null }];
  await checkAgainstReference('rope-linear', { ...llama, config: { rope_scaling: { type: 'linear', factor: 4 } } }, off);
  // 40 and 29 tokens exceed max_position_embeddings 24, 17 does not (and must be plain RoPE).
  await checkAgainstReference('rope-dynamic', { ...llama, config: { max_position_embeddings: 24, rope_scaling: { type: 'dynamic', factor: 3 } } }, off);
  await checkAgainstReference('rope-llama3', {
    ...llama, config: { rope_scaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 64 } },
  }, off);
  await checkAgainstReference('rope-yarn', {
    ...llama, config: { max_position_embeddings: 64, rope_scaling: { rope_type: 'yarn', factor: 4, original_max_position_embeddings: 16 } },
  }, off);
});

test('RoPE scaling: Phi-3 LongRoPE (short factors up to original_max_position_embeddings, long beyond) matches PyTorch', async () => {
  await checkAgainstReference('rope-longrope', {
    ...BASE, seed: 28, arch: 'phi3',
    config: { max_position_embeddings: 96, original_max_position_embeddings: 24, rope_scaling: { type: 'longrope', short_factor: [1, 1.5, 2, 4], long_factor: [1, 2, 4, 8] } },
  }, [{ rope_scaling: null }]);
});

test('PEFT export: names, target_modules and fan_in_fan_out, applied by PEFT\'s rules, reproduce the engine\'s loss; merged export too', async () => {
  const shapes: [string, SynthShape][] = [
    ['qwen2', { ...BASE, layers: 2, seed: 31, arch: 'qwen2' }],
    ['qwen3', { ...BASE, layers: 2, seed: 32, arch: 'qwen3', headDim: 16 }],
    ['gemma2', { ...BASE, layers: 2, seed: 33, arch: 'gemma2', tied: true, headDim: 12, config: { sliding_window: 8 } }],
    ['phi3', { ...BASE, layers: 2, seed: 34, arch: 'phi3' }],
    ['gpt2', { ...BASE, layers: 2, seed: 35, arch: 'gpt2', kvHeads: 4, tied: true, intermediateSize: 64, unprefixed: true }],
    ['gpt_neox', { ...BASE, layers: 2, seed: 36, arch: 'gpt_neox', kvHeads: 4, intermediateSize: 64 }],
    ['gemma3_text', { ...BASE, layers: 2, seed: 44, arch: 'gemma3_text', tied: true, headDim: 12, config: { sliding_window: 8, sliding_window_pattern: 2 } }],
    ['smollm3', { ...BASE, layers: 2, seed: 58, arch: 'smollm3', tied: true, config: { no_rope_layers: [1, 0] } }],
    ['olmo2', { ...BASE, layers: 2, seed: 59, arch: 'olmo2', headDim: 12 }],
    ['granite', { ...BASE, layers: 2, seed: 60, arch: 'granite', config: { embedding_multiplier: 6, residual_multiplier: 0.5, attention_multiplier: 0.3, logits_scaling: 3 } }],
  ];
  for (const [label, shape] of shapes) {
    const dir = path.join(tmpDir(), label);
    await writeSynthModel(dir, shape);
    const folder = openModelFolder(dir);
    const model = Decoder.load(folder.cfg, folder.store);
    const modules = candidateModules(folder.cfg);
    const down = ARCHITECTURES[folder.cfg.modelType].modules.roles.down;
    const recs = randomRecords(shape.seed, [30, 19], shape.vocabSize);
    const asRef = recs.map((r) => ({ input_ids: r.inputIds, loss_mask: r.lossMask }));
    // One module (DomLoRA's placement) and every module (vanilla LoRA).
    for (const specs of [modules.filter((m) => m.layer === 1 && m.kind === down), modules]) {
      const rank = 4, alpha = 8, rng = new Rng(shape.seed);
      const tensors = specs.map((spec) => ({ spec, a: initLoraA(1, spec.name, rank, spec.dIn), b: Float32Array.from({ length: spec.dOut * rank }, () => rng.uniform(-0.1, 0.1)) }));
      const peftCfg = buildPeftConfig(specs, folder.cfg.numLayers, rank, alpha, dir);
      assert.equal(peftCfg.fan_in_fan_out, label === 'gpt2', `${label}: fan_in_fan_out`);
      if (specs.length === 1) {
        assert.deepEqual(peftCfg.target_modules, [down]);
        assert.deepEqual(peftCfg.layers_to_transform, [1]);
        if (label === 'gpt2') assert.equal(down, 'mlp.c_proj', 'never a bare c_proj: attention has one too');
      } else {
        assert.deepEqual(peftCfg.target_modules, [...ARCHITECTURES[folder.cfg.modelType].modules.kinds]);
      }
      const adir = path.join(dir, `adapter-${specs.length}`);
      fs.mkdirSync(adir);
      writeAdapterFiles(adir, tensors, peftCfg, {});
      const loaded = loadAdapter(adir, folder);
      const ours = recs.map((r) => model.recordLoss(r.inputIds, r.lossMask, loaded.adapters).loss);
      for (const a of loaded.adapters.values()) disposeAdapter(a);
      const ref = reference<{ losses: number[]; adaptedModules: string[]; ignoredModules: string[] }>({ model_dir: dir, records: asRef, mode: 'eval-adapter', adapter_dir: adir });
      assert.deepEqual(ref.adaptedModules, specs.map((s) => s.name).sort(), `${label}: PEFT adapts exactly the exported modules`);
      assert.deepEqual(ref.ignoredModules, []);
      ours.forEach((l, i) => assert.ok(Math.abs(l - ref.losses[i]) < 1e-5, `${label} (${specs.length} modules): ${l} vs ${ref.losses[i]}`));
      if (specs.length === 1) {
        // The merged folder (W + s B A folded in, Conv1D transposed) is the base model PEFT would have produced.
        const merged = path.join(dir, 'merged');
        await runExport({ adapterDir: adir, format: 'merged', out: merged, modelDir: dir });
        const base = reference<{ losses: number[] }>({ model_dir: merged, records: asRef, mode: 'loss' });
        base.losses.forEach((l, i) => assert.ok(Math.abs(l - ref.losses[i]) < 1e-5, `${label} merged: ${l} vs ${ref.losses[i]}`));
      }
    }
    model.dispose();
  }
});

test('an unsupported model_type fails with the list of supported ones; info reads every architecture from headers', async () => {
  for (const [arch, extra] of [['gpt2', { kvHeads: 4, unprefixed: true }], ['phi3', {}], ['gemma2', { tied: true }], ['gpt_neox', { kvHeads: 4 }],
    ['smollm3', { tied: true }], ['olmo2', {}], ['granite', {}]] as const) {
    const dir = path.join(tmpDir(), arch);
    await writeSynthModel(dir, { ...BASE, layers: 2, seed: 40, arch, ...extra });
    const info = modelInfo(dir);
    assert.deepEqual(info.kinds, [...ARCHITECTURES[arch].modules.kinds]);
    assert.equal(info.modules.length, 2 * info.kinds.length);
    // The count from the config is what the weight files hold (OLMo 2: no input norms, q/k norms projection-wide).
    const { store } = openModelFolder(dir);
    assert.equal(info.model.parameters, store.names.reduce((s, n) => s + store.entry(n).shape.reduce((a, b) => a * b, 1), 0), `${arch}: parameters`);
    // GPT-NeoX's untied head is embed_out, not lm_head.
    if (arch === 'gpt_neox') assert.equal(info.model.tiedEmbeddings, false);
  }
  const dir = path.join(tmpDir(), 'mixtral');
  await writeSynthModel(dir, { ...BASE, layers: 1, seed: 41, config: { model_type: 'mixtral' } });
  assert.throws(() => modelInfo(dir), /model_type "mixtral" is not supported; supported: llama, mistral, qwen2, qwen3, gemma, gemma2, gemma3_text, phi3, gpt2, gpt_neox, smollm3, olmo2, granite$/);
});

test('normaliseConfig: HF defaults per architecture, sliding windows per layer, GPT-2 key names', () => {
  const base = { hidden_size: 64, intermediate_size: 96, num_hidden_layers: 4, num_attention_heads: 4, vocab_size: 100 };
  const cfg = (raw: Record<string, unknown>) => normaliseConfig(raw);
  // Gemma 2 ties its head, has head_dim 256 and gelu_pytorch_tanh unless told, scales embeddings by sqrt(H).
  const g = cfg({ ...base, model_type: 'gemma2', sliding_window: 16 });
  assert.equal(g.tieWordEmbeddings, true);
  assert.equal(g.headDim, 256);
  assert.equal(g.hiddenAct, 'gelu_tanh');
  assert.equal(g.embedScale, Math.fround(8));
  assert.equal(g.attnScale, 1 / 16); // query_pre_attn_scalar 256
  assert.deepEqual([g.attnSoftcap, g.finalSoftcap], [50, 30]);
  assert.deepEqual(g.slidingWindows, [16, null, 16, null]);
  assert.deepEqual(cfg({ ...base, model_type: 'gemma2', sliding_window: 16, layer_types: ['full_attention', 'sliding_attention', 'full_attention', 'full_attention'] }).slidingWindows, [null, 16, null, null]);
  assert.deepEqual(cfg({ ...base, model_type: 'gemma2', attn_logit_softcapping: null, final_logit_softcapping: null }).attnSoftcap, null);
  // Mistral and Phi-3: every layer; Llama never; Qwen only with use_sliding_window, from max_window_layers up.
  assert.deepEqual(cfg({ ...base, model_type: 'mistral', sliding_window: 4096 }).slidingWindows, [4096, 4096, 4096, 4096]);
  assert.deepEqual(cfg({ ...base, model_type: 'mistral', sliding_window: null }).slidingWindows, [null, null, null, null]);
  assert.deepEqual(cfg({ ...base, model_type: 'phi3', sliding_window: 2047 }).slidingWindows, [2047, 2047, 2047, 2047]);
  assert.deepEqual(cfg({ ...base, model_type: 'llama', sliding_window: 8 }).slidingWindows, [null, null, null, null]);
  assert.deepEqual(cfg({ ...base, model_type: 'qwen2', sliding_window: 8, max_window_layers: 2 }).slidingWindows, [null, null, null, null]);
  assert.deepEqual(cfg({ ...base, model_type: 'qwen2', sliding_window: 8, max_window_layers: 2, use_sliding_window: true }).slidingWindows, [null, null, 8, 8]);
  assert.deepEqual(cfg({ ...base, model_type: 'qwen2', sliding_window: 8, layer_types: Array(4).fill('sliding_attention') }).slidingWindows, [null, null, null, null]);
  assert.equal(cfg({ ...base, model_type: 'qwen2' }).attentionBias, true);
  assert.equal(cfg({ ...base, model_type: 'qwen3' }).headDim, 128);
  assert.equal(cfg({ ...base, model_type: 'qwen3' }).qkNorm, 'head');
  assert.equal(cfg({ ...base, model_type: 'phi3' }).normEps, 1e-5);
  // GPT-2 keeps its own keys; n_inner defaults to 4 * n_embd; LayerNorm; learned positions; tied head.
  const gpt2 = cfg({ model_type: 'gpt2', n_embd: 48, n_layer: 2, n_head: 4, n_positions: 128, vocab_size: 100 });
  assert.deepEqual([gpt2.hiddenSize, gpt2.intermediateSize, gpt2.numLayers, gpt2.numHeads, gpt2.numKvHeads, gpt2.headDim], [48, 192, 2, 4, 4, 12]);
  assert.deepEqual([gpt2.normType, gpt2.positions, gpt2.tieWordEmbeddings, gpt2.hiddenAct, gpt2.maxPositionEmbeddings], ['layernorm', 'learned', true, 'gelu_tanh', 128]);
  const names = candidateModules(gpt2).filter((m) => m.layer === 1).map((m) => m.name);
  assert.deepEqual(names, ['transformer.h.1.attn.c_attn', 'transformer.h.1.attn.c_proj', 'transformer.h.1.mlp.c_fc', 'transformer.h.1.mlp.c_proj']);
  const phi = candidateModules(cfg({ ...base, model_type: 'phi3', num_key_value_heads: 2 })).slice(0, 4);
  assert.deepEqual(phi.map((m) => [m.name, m.dIn, m.dOut]), [
    ['model.layers.0.self_attn.qkv_proj', 64, 64 + 2 * 32], ['model.layers.0.self_attn.o_proj', 64, 64],
    ['model.layers.0.mlp.gate_up_proj', 64, 192], ['model.layers.0.mlp.down_proj', 96, 64]]);
});

test('probe and train end to end on Phi-3 and GPT-2: the report has the architecture\'s 4 columns, the adapter PEFT\'s names', async () => {
  for (const [arch, extra] of [['phi3', {}], ['gpt2', { kvHeads: 4, tied: true, intermediateSize: 64 }]] as const) {
    const dir = tmpDir();
    const modelDir = path.join(dir, arch);
    await writeSynthModel(modelDir, { ...BASE, layers: 2, seed: 50, arch, ...extra });
    const data = path.join(dir, 'qa.jsonl');
    // 16 records: a 25% eval split holds out 4, the fewest an eval split may have.
    synthDataset(data, 16);
    const { report } = await runProbe({ modelDir, data, samples: 3, seqLen: 48, backend: 'wasm', bootstrap: 20 });
    assert.deepEqual(report.kinds, [...ARCHITECTURES[arch].modules.kinds]);
    assert.equal(report.modules.length, 2 * 4);
    assert.ok(report.modules.every((m) => report.kinds.includes(m.kind)));
    const reportFile = path.join(dir, 'report.json');
    fs.writeFileSync(reportFile, JSON.stringify(report));
    const out = path.join(dir, 'adapter');
    await runTrain({ modelDir, data, fromReport: reportFile, out, steps: 2, batchSize: 2, seqLen: 48, backend: 'wasm', evalSplit: 0.25 });
    const peftCfg = JSON.parse(fs.readFileSync(path.join(out, 'adapter_config.json'), 'utf8'));
    assert.deepEqual(peftCfg.target_modules, [report.dominant.kind]);
    assert.equal(peftCfg.fan_in_fan_out, arch === 'gpt2');
  }
});
