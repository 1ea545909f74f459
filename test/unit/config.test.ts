import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { normaliseConfig, readConfig, ModelConfig } from '../../src/engine/hf/config';
import { candidateModules, moduleName, moduleShape, parameterCount } from '../../src/engine/hf/modules';
import { SUPPORTED_MODEL_TYPES, ARCHITECTURES } from '../../src/engine/arch/registry';
import { DomLoraError } from '../../src/engine/runtime/errors';
import { WeightStore } from '../../src/engine/hf/safetensors';

const MODEL = path.resolve('test/fixtures/models/stories260K');
const RAW: Record<string, unknown> = JSON.parse(fs.readFileSync(path.join(MODEL, 'config.json'), 'utf8'));
const FILE = '/models/x/config.json';

const tempRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'domlora-config-'));
after(() => fs.rmSync(tempRoot, { recursive: true, force: true }));

/** stories260K's config with some keys replaced (undefined deletes a key). */
function variant(changes: Record<string, unknown>): Record<string, unknown> {
  const raw: Record<string, unknown> = { ...RAW, ...changes };
  for (const [k, v] of Object.entries(changes)) if (v === undefined) delete raw[k];
  return raw;
}

function withoutRaw(cfg: ModelConfig): Omit<ModelConfig, 'raw'> {
  const { raw: _raw, ...rest } = cfg;
  return rest;
}

function assertBadInput(fn: () => unknown, problem: RegExp, file = FILE): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof DomLoraError, `expected a DomLoraError, got ${String(err)}`);
    assert.equal(err.code, 'bad-input');
    assert.equal(err.file, file);
    assert.ok(err.message.startsWith(`${file}: `), err.message);
    assert.match(err.message, problem);
    return true;
  });
}

test('normaliseConfig reads stories260K', () => {
  const cfg = normaliseConfig(RAW, FILE);
  assert.deepEqual(withoutRaw(cfg), {
    modelType: 'llama', hiddenSize: 64, intermediateSize: 172, numLayers: 5, numHeads: 8, numKvHeads: 4, headDim: 8,
    vocabSize: 512, normEps: 1e-5, ropeTheta: 10000, ropeScaling: null, rotaryDim: 8, maxPositionEmbeddings: 512,
    tieWordEmbeddings: true, attentionBias: false, mlpBias: false, hiddenAct: 'silu', dtype: 'float32',
    bosTokenId: 1, eosTokenId: 2, normType: 'rms', normOffset: 0, qkNorm: null, sandwichNorms: false, embedScale: 1,
    positions: 'rope', attnScale: 1 / Math.sqrt(8), attnScaleByLayer: false, attnSoftcap: null, finalSoftcap: null,
    residualScale: 1, logitScale: 1, slidingWindows: [null, null, null, null, null], ropeLayers: [true, true, true, true, true],
    ropeLocalTheta: null, parallelResidual: false, qkvPerHead: false,
  });
  assert.equal(cfg.raw, RAW);
});

test('readConfig reads a folder, and names the folder or file when it cannot', () => {
  assert.deepEqual(withoutRaw(readConfig(MODEL)), withoutRaw(normaliseConfig(RAW)));
  const empty = fs.mkdtempSync(path.join(tempRoot, 'empty-'));
  assertBadInput(() => readConfig(empty), /not a Hugging Face model folder: it has no config\.json/, empty);
  const broken = fs.mkdtempSync(path.join(tempRoot, 'broken-'));
  fs.writeFileSync(path.join(broken, 'config.json'), '{"model_type": "llama",');
  assertBadInput(() => readConfig(broken), /invalid JSON/, path.join(broken, 'config.json'));
});

test('older (rope_theta, torch_dtype) and newer (rope_parameters, dtype) spellings give the same config', () => {
  const base = { rope_theta: undefined, rope_scaling: undefined, torch_dtype: undefined };
  const older = normaliseConfig(variant({ ...base, rope_theta: 500000, rope_scaling: null, torch_dtype: 'bfloat16' }), FILE);
  const newer = normaliseConfig(variant({ ...base, rope_parameters: { rope_theta: 500000, rope_type: 'default' }, dtype: 'bfloat16' }), FILE);
  assert.equal(older.ropeTheta, 500000);
  assert.equal(older.dtype, 'bfloat16');
  assert.equal(older.ropeScaling, null);
  assert.deepEqual(withoutRaw(newer), withoutRaw(older));
  // Newer releases may keep a null rope_scaling next to rope_parameters.
  const both = normaliseConfig(variant({ ...base, rope_scaling: null, rope_parameters: { rope_theta: 500000, rope_type: 'default' }, dtype: 'bfloat16' }), FILE);
  assert.deepEqual(withoutRaw(both), withoutRaw(older));
  // With neither spelling: RoPE base 10000, float32.
  const neither = normaliseConfig(variant(base), FILE);
  assert.equal(neither.ropeTheta, 10000);
  assert.equal(neither.dtype, 'float32');
});

test('rope_scaling of type default is accepted under either key', () => {
  assert.equal(normaliseConfig(variant({ rope_scaling: { type: 'default' } }), FILE).ropeScaling, null);
  assert.equal(normaliseConfig(variant({ rope_scaling: { rope_type: 'default' } }), FILE).ropeScaling, null);
});

test('head_dim defaults to hidden_size / num_attention_heads', () => {
  const cfg = normaliseConfig(variant({ head_dim: undefined, hidden_size: 96, num_attention_heads: 6, num_key_value_heads: 2 }), FILE);
  assert.equal(cfg.headDim, 16);
  const explicit = normaliseConfig(variant({ head_dim: 32, hidden_size: 96, num_attention_heads: 6, num_key_value_heads: 2 }), FILE);
  assert.equal(explicit.headDim, 32);
  assert.deepEqual(moduleShape(explicit, 'q_proj'), [96, 192]);
  assert.deepEqual(moduleShape(explicit, 'k_proj'), [96, 64]);
  assert.deepEqual(moduleShape(explicit, 'o_proj'), [192, 96]);
  assertBadInput(() => normaliseConfig(variant({ head_dim: undefined, hidden_size: 100, num_attention_heads: 8, num_key_value_heads: 4 }), FILE),
    /head dimension 12\.5 must be an even integer/);
  assertBadInput(() => normaliseConfig(variant({ head_dim: 7 }), FILE), /head dimension 7 must be an even integer/);
});

test('num_key_value_heads defaults to num_attention_heads', () => {
  const cfg = normaliseConfig(variant({ num_key_value_heads: undefined }), FILE);
  assert.equal(cfg.numKvHeads, 8);
  assert.deepEqual(moduleShape(cfg, 'k_proj'), [64, 64]);
  assert.equal(normaliseConfig(variant({ num_key_value_heads: null }), FILE).numKvHeads, 8);
});

test('num_attention_heads must be a multiple of num_key_value_heads', () => {
  assertBadInput(() => normaliseConfig(variant({ num_key_value_heads: 3 }), FILE),
    /num_attention_heads \(8\) must be a multiple of num_key_value_heads \(3\)/);
});

test('an unsupported model_type lists the supported ones', () => {
  assert.ok(SUPPORTED_MODEL_TYPES.length >= 1);
  assert.deepEqual(SUPPORTED_MODEL_TYPES, Object.keys(ARCHITECTURES));
  for (const modelType of ['mixtral', 'toString', 'constructor', undefined, 7]) {
    assert.throws(() => normaliseConfig(variant({ model_type: modelType }), FILE), (err: unknown) => {
      assert.ok(err instanceof DomLoraError);
      assert.equal(err.code, 'bad-input');
      assert.ok(err.message.startsWith(`${FILE}: `), err.message);
      assert.ok(err.message.includes(`model_type ${JSON.stringify(modelType)} is not supported`), err.message);
      for (const t of SUPPORTED_MODEL_TYPES) assert.ok(err.message.includes(t), `message lists ${t}: ${err.message}`);
      assert.match(err.message, new RegExp(`supported: ${SUPPORTED_MODEL_TYPES.join(', ')}$`));
      return true;
    }, `model_type ${String(modelType)}`);
  }
});

test('a missing or invalid required size names the key', () => {
  for (const key of ['hidden_size', 'intermediate_size', 'num_hidden_layers', 'num_attention_heads', 'vocab_size']) {
    assertBadInput(() => normaliseConfig(variant({ [key]: undefined }), FILE), new RegExp(`"${key}" must be a positive integer, got undefined`));
    assertBadInput(() => normaliseConfig(variant({ [key]: 0 }), FILE), new RegExp(`"${key}" must be a positive integer, got 0`));
    assertBadInput(() => normaliseConfig(variant({ [key]: '64' }), FILE), new RegExp(`"${key}" must be a positive integer, got "64"`));
  }
  assertBadInput(() => normaliseConfig(variant({ rms_norm_eps: -1 }), FILE), /"rms_norm_eps" must be a positive number, got -1/);
  assertBadInput(() => normaliseConfig(variant({ rope_theta: 'big' }), FILE), /"rope_theta" must be a positive number, got "big"/);
});

test('the default file name is config.json', () => {
  assertBadInput(() => normaliseConfig(variant({ hidden_size: undefined })), /"hidden_size"/, 'config.json');
});

test('scaled RoPE: linear, dynamic, llama3, yarn and longrope are read; other types are refused with the list', () => {
  const cases: [Record<string, unknown>, string][] = [
    [{ rope_scaling: { type: 'linear', factor: 2 } }, 'linear'],
    [{ rope_scaling: { type: 'dynamic', factor: 2 } }, 'dynamic'],
    [{ rope_scaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 } }, 'llama3'],
    [{ rope_scaling: undefined, rope_theta: undefined, rope_parameters: { rope_theta: 500000, rope_type: 'yarn', factor: 4 } }, 'yarn'],
    [{ rope_scaling: { type: 'su', short_factor: [1, 1, 1, 1], long_factor: [2, 2, 2, 2] } }, 'longrope'],
  ];
  for (const [changes, type] of cases) assert.equal(normaliseConfig(variant(changes), FILE).ropeScaling?.type, type);
  assertBadInput(() => normaliseConfig(variant({ rope_scaling: { rope_type: 'mrope', factor: 2 } }), FILE),
    /rope scaling type "mrope" is not supported \(supported: default, linear, dynamic, llama3, yarn, longrope\)/);
  assertBadInput(() => normaliseConfig(variant({ rope_scaling: { type: 'linear' } }), FILE), /rope scaling "linear" needs a positive number "factor"/);
  assertBadInput(() => normaliseConfig(variant({ rope_scaling: { type: 'llama3', factor: 8 } }), FILE), /needs a positive number "low_freq_factor"/);
  assertBadInput(() => normaliseConfig(variant({ rope_scaling: { type: 'longrope', short_factor: [1] } }), FILE), /"short_factor": 4 numbers/);
  // partial_rotary_factor (Phi-4-mini): int(head_dim x factor) leading dimensions rotate; it must be even and >= 2.
  // transformers applies it in Phi-3's attention only.
  const phi = (extra: Record<string, unknown>) => normaliseConfig(variant({ model_type: 'phi3', ...extra }), FILE);
  assert.equal(phi({ partial_rotary_factor: 0.75 }).rotaryDim, 6);
  assert.equal(phi({ rope_parameters: { rope_theta: 10000, partial_rotary_factor: 0.5 } }).rotaryDim, 4);
  assertBadInput(() => normaliseConfig(variant({ partial_rotary_factor: 0.75 }), FILE), /partial_rotary_factor 0\.75 is not supported for llama/);
  assertBadInput(() => phi({ partial_rotary_factor: 0.625 }), /gives 5 rotary dimensions of the 8-wide heads; RoPE needs an even number/);
  assertBadInput(() => phi({ partial_rotary_factor: 0.1 }), /gives 0 rotary dimensions/);
  assertBadInput(() => phi({ partial_rotary_factor: 1.5 }), /partial_rotary_factor must be a number in \(0, 1\], got 1\.5/);
  // LongRoPE's factors cover the rotary dimensions only.
  assert.equal(phi({ partial_rotary_factor: 0.5, rope_scaling: { type: 'longrope', short_factor: [1, 2], long_factor: [1, 3] } }).ropeScaling?.type, 'longrope');
});

test('Gemma 3 text: q/k norms, no soft-caps unless set, every sliding_window_pattern-th layer global, a local RoPE base', () => {
  const g3 = (extra: Record<string, unknown>) => normaliseConfig(variant({ model_type: 'gemma3_text', num_hidden_layers: 7, hidden_activation: 'gelu_pytorch_tanh', ...extra }), FILE);
  const c = g3({ sliding_window: 512 });
  assert.deepEqual(c.slidingWindows, [512, 512, 512, 512, 512, null, 512]);
  assert.equal(c.qkNorm, 'head');
  assert.equal(c.normOffset, 1);
  assert.equal(c.sandwichNorms, true);
  assert.equal(c.attnSoftcap, null);
  assert.equal(c.finalSoftcap, null);
  assert.equal(c.ropeLocalTheta, 10000);
  assert.deepEqual(g3({ sliding_window: 8, sliding_window_pattern: 2 }).slidingWindows, [8, null, 8, null, 8, null, 8]);
  assert.deepEqual(g3({}).slidingWindows.slice(0, 2), [4096, 4096], 'transformers\' default window');
  const capped = g3({ attn_logit_softcapping: 50, final_logit_softcapping: 30, rope_local_base_freq: 5000 });
  assert.deepEqual([capped.attnSoftcap, capped.finalSoftcap, capped.ropeLocalTheta], [null, 30, 5000], 'as transformers: the attention cap is never applied');
  assertBadInput(() => g3({ sliding_window_pattern: 0 }), /"sliding_window_pattern" must be a positive integer, got 0/);
  assertBadInput(() => g3({ sliding_window: null }), /Gemma 3's sliding layers need a window/);
  // transformers v5 keeps the two RoPE settings per layer type in rope_parameters.
  const v5 = g3({ rope_parameters: { full_attention: { rope_type: 'linear', factor: 8, rope_theta: 1000000 }, sliding_attention: { rope_type: 'default', rope_theta: 10000 } } });
  assert.deepEqual([v5.ropeTheta, v5.ropeScaling?.type, v5.ropeScaling?.factor, v5.ropeLocalTheta], [1000000, 'linear', 8, 10000]);
  // Gemma 2 also defaults to a 4096-token window on its even layers.
  assert.deepEqual(normaliseConfig(variant({ model_type: 'gemma2', hidden_activation: 'gelu_pytorch_tanh' }), FILE).slidingWindows, [4096, null, 4096, null, 4096]);
});

test('a hidden_act the engine does not compute is refused', () => {
  assertBadInput(() => normaliseConfig(variant({ hidden_act: 'relu2' }), FILE), /hidden_act "relu2" is not supported for llama \(expected one of silu, swish, gelu_pytorch_tanh, gelu_new, gelu_fast, gelu\)/);
});

test('optional flags: tie_word_embeddings, biases, token ids', () => {
  const cfg = normaliseConfig(variant({ tie_word_embeddings: undefined, attention_bias: true, mlp_bias: undefined, bos_token_id: undefined, eos_token_id: [2, 7], max_position_embeddings: undefined }), FILE);
  assert.equal(cfg.tieWordEmbeddings, false);
  assert.equal(cfg.attentionBias, true);
  assert.equal(cfg.mlpBias, false);
  assert.equal(cfg.bosTokenId, undefined);
  assert.deepEqual(cfg.eosTokenId, [2, 7]);
  assert.equal(cfg.maxPositionEmbeddings, 2048);
});

test('candidateModules: 35 modules of stories260K, layer-major, kinds in column order, with shapes', () => {
  const cfg = normaliseConfig(RAW, FILE);
  const mods = candidateModules(cfg);
  assert.equal(mods.length, 35);
  const kinds = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];
  assert.deepEqual([...ARCHITECTURES.llama.modules.kinds], kinds);
  const shapes: Record<string, [number, number]> = {
    q_proj: [64, 64], k_proj: [64, 32], v_proj: [64, 32], o_proj: [64, 64], gate_proj: [64, 172], up_proj: [64, 172], down_proj: [172, 64],
  };
  mods.forEach((m, i) => {
    const layer = Math.floor(i / 7), kind = kinds[i % 7];
    const block = i % 7 < 4 ? 'self_attn' : 'mlp';
    assert.deepEqual(m, { name: `model.layers.${layer}.${block}.${kind}`, layer, kind, dIn: shapes[kind][0], dOut: shapes[kind][1] });
  });
  assert.equal(mods[0].name, 'model.layers.0.self_attn.q_proj');
  assert.equal(mods[13].name, 'model.layers.1.mlp.down_proj');
  assert.deepEqual([mods[13].dIn, mods[13].dOut], [172, 64]);
  assert.equal(mods[34].name, 'model.layers.4.mlp.down_proj');
  assert.equal(new Set(mods.map((m) => m.name)).size, 35);
  assert.equal(moduleName(3, 'v_proj'), 'model.layers.3.self_attn.v_proj');
  assert.equal(moduleName(2, 'up_proj'), 'model.layers.2.mlp.up_proj');
  assert.throws(() => moduleShape(cfg, 'lm_head'), /unknown module kind "lm_head"/);
});

test('candidateModules agree with the weight shapes in stories260K ([dOut, dIn])', () => {
  const store = WeightStore.open(MODEL);
  for (const m of candidateModules(normaliseConfig(RAW, FILE))) {
    assert.deepEqual(store.entry(`${m.name}.weight`).shape, [m.dOut, m.dIn], m.name);
  }
});

test('parameterCount', () => {
  const cfg = normaliseConfig(RAW, FILE);
  assert.equal(parameterCount(cfg), 260032);
  // The same count from the weights file itself (tied embeddings: no lm_head).
  const store = WeightStore.open(MODEL);
  const fromWeights = store.names.reduce((s, n) => s + store.entry(n).shape.reduce((a, b) => a * b, 1), 0);
  assert.equal(fromWeights, 260032);
  // Untied embeddings add a vocab x hidden output matrix.
  assert.equal(parameterCount({ ...cfg, tieWordEmbeddings: false }), 260032 + 512 * 64);
});
