// Hugging Face config.json, normalised once at the edge into the one shape the engine reads.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { badInput } from '../runtime/errors';

/**
 * Which kind of module plays which part of a decoder layer. An architecture has either separate q/k/v or one fused
 * qkv; either a gated MLP (gate and up, separate or fused) or a plain one (fc then an activation).
 */
export interface ArchRoles {
  q?: string; k?: string; v?: string; qkv?: string; o: string;
  gate?: string; up?: string; gateUp?: string; fc?: string; down: string;
}

export interface ArchSpec {
  /** The candidate module kinds, in heatmap column order. A kind is also what PEFT's target_modules matches. */
  readonly kinds: readonly string[];
  /** Each kind's path under its layer (Hugging Face's names). */
  readonly paths: Readonly<Record<string, string>>;
  /** Layer N's modules live under `${layerPrefix}.N`. */
  readonly layerPrefix: string;
  readonly roles: Readonly<ArchRoles>;
  /** Weights stored [in, out] (GPT-2's Conv1D), so PEFT needs fan_in_fan_out. */
  readonly conv1d?: boolean;
}

const LLAMA_KINDS = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] as const;
const LLAMA_LIKE = {
  kinds: LLAMA_KINDS,
  paths: {
    q_proj: 'self_attn.q_proj', k_proj: 'self_attn.k_proj', v_proj: 'self_attn.v_proj', o_proj: 'self_attn.o_proj',
    gate_proj: 'mlp.gate_proj', up_proj: 'mlp.up_proj', down_proj: 'mlp.down_proj',
  },
  layerPrefix: 'model.layers',
  roles: { q: 'q_proj', k: 'k_proj', v: 'v_proj', o: 'o_proj', gate: 'gate_proj', up: 'up_proj', down: 'down_proj' },
} as const;

/** Architectures the engine can run, with the module kinds that are adapter candidates, in heatmap column order. */
export const ARCHITECTURES = {
  llama: LLAMA_LIKE,
  mistral: LLAMA_LIKE,
  qwen2: LLAMA_LIKE,
  qwen3: LLAMA_LIKE,
  gemma2: LLAMA_LIKE,
  gemma3_text: LLAMA_LIKE,
  phi3: {
    // Phi-3 fuses q, k, v into one projection and gate, up into another: PEFT (and so we) adapt the fused modules.
    kinds: ['qkv_proj', 'o_proj', 'gate_up_proj', 'down_proj'],
    paths: { qkv_proj: 'self_attn.qkv_proj', o_proj: 'self_attn.o_proj', gate_up_proj: 'mlp.gate_up_proj', down_proj: 'mlp.down_proj' },
    layerPrefix: 'model.layers',
    roles: { qkv: 'qkv_proj', o: 'o_proj', gateUp: 'gate_up_proj', down: 'down_proj' },
  },
  gpt2: {
    // Both blocks of GPT-2 have a `c_proj`: the kinds carry their block, so a PEFT target never means both.
    kinds: ['attn.c_attn', 'attn.c_proj', 'mlp.c_fc', 'mlp.c_proj'],
    paths: { 'attn.c_attn': 'attn.c_attn', 'attn.c_proj': 'attn.c_proj', 'mlp.c_fc': 'mlp.c_fc', 'mlp.c_proj': 'mlp.c_proj' },
    layerPrefix: 'transformer.h',
    roles: { qkv: 'attn.c_attn', o: 'attn.c_proj', fc: 'mlp.c_fc', down: 'mlp.c_proj' },
    conv1d: true,
  },
  gpt_neox: {
    // Pythia and GPT-NeoX: one query_key_value projection (per head [q, k, v], not three blocks), a plain GELU MLP,
    // attention and MLP side by side on the same input (use_parallel_residual).
    kinds: ['query_key_value', 'dense', 'dense_h_to_4h', 'dense_4h_to_h'],
    paths: {
      query_key_value: 'attention.query_key_value', dense: 'attention.dense',
      dense_h_to_4h: 'mlp.dense_h_to_4h', dense_4h_to_h: 'mlp.dense_4h_to_h',
    },
    layerPrefix: 'gpt_neox.layers',
    roles: { qkv: 'query_key_value', o: 'dense', fc: 'dense_h_to_4h', down: 'dense_4h_to_h' },
  },
} as const satisfies Record<string, ArchSpec>;
export type ModelType = keyof typeof ARCHITECTURES;
export const SUPPORTED_MODEL_TYPES = Object.keys(ARCHITECTURES) as ModelType[];

export const archOf = (t: ModelType): ArchSpec => ARCHITECTURES[t];

export interface RopeScaling { type: string; factor?: number; [k: string]: unknown }

export interface ModelConfig {
  modelType: ModelType;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  vocabSize: number;
  /** The epsilon of every norm (RMSNorm, or GPT-2's LayerNorm). */
  rmsNormEps: number;
  ropeTheta: number;
  ropeScaling: RopeScaling | null;
  /** Leading dimensions of each head that RoPE rotates: head_dim x partial_rotary_factor (Phi-4-mini: 0.75). */
  rotaryDim: number;
  maxPositionEmbeddings: number;
  tieWordEmbeddings: boolean;
  attentionBias: boolean;
  mlpBias: boolean;
  /** `silu`, `gelu_tanh` (gelu_pytorch_tanh, gelu_new: the same tanh approximation) or `gelu` (exact, erf). */
  hiddenAct: string;
  dtype: string;
  bosTokenId?: number;
  eosTokenId?: number | number[];
  /** `rms` (RMSNorm) or `layernorm` (GPT-2: mean-centred, with a bias). */
  normType: 'rms' | 'layernorm';
  /** Added to every norm weight: Gemma scales by (1 + weight). */
  normOffset: number;
  /** Qwen 3: RMSNorm over head_dim on every query and key head, before RoPE. */
  qkNorm: boolean;
  /** Gemma 2: norms on the attention and MLP outputs too, before each residual add. */
  sandwichNorms: boolean;
  /** Multiplies the token embeddings (Gemma: sqrt(hidden), rounded to float32). */
  embedScale: number;
  /** `rope`, or `learned` absolute position embeddings (GPT-2). */
  positions: 'rope' | 'learned';
  /** The factor on q.k (1/sqrt(head_dim), or Gemma 2's query_pre_attn_scalar^-1/2). */
  attnScale: number;
  /** GPT-2's scale_attn_by_inverse_layer_idx: scores of layer l also divided by l + 1. */
  attnScaleByLayer: boolean;
  /** Gemma 2: scores become cap * tanh(scores / cap) before the mask. */
  attnSoftcap: number | null;
  /** Gemma 2: logits become cap * tanh(logits / cap). */
  finalSoftcap: number | null;
  /** Per layer: how many positions (itself included) a query sees, or null for all earlier ones. */
  slidingWindows: (number | null)[];
  /** Gemma 3: the RoPE base of sliding-window layers (rope_local_base_freq, unscaled); null: every layer uses ropeTheta. */
  ropeLocalTheta: number | null;
  /** GPT-NeoX's use_parallel_residual: x + attn(ln1(x)) + mlp(ln2(x)), both blocks reading the layer's input. */
  parallelResidual: boolean;
  /** GPT-NeoX: the fused query_key_value output is [q, k, v] per head, not a block of q, then of k, then of v. */
  qkvPerHead: boolean;
  /** The config as read, for copying into exported folders. */
  raw: Record<string, unknown>;
}

export function readConfig(modelDir: string): ModelConfig {
  const file = path.join(modelDir, 'config.json');
  if (!fs.existsSync(file)) {
    throw badInput(`not a Hugging Face model folder: it has no config.json`, modelDir);
  }
  let raw: Record<string, unknown>;
  try {
    raw = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    throw badInput(`invalid JSON (${(e as Error).message})`, file);
  }
  return normaliseConfig(raw, file);
}

/** RoPE scaling types whose frequencies the engine computes (transformers' `_compute_*_parameters`). */
export const ROPE_TYPES = ['default', 'linear', 'dynamic', 'llama3', 'yarn', 'longrope'] as const;

/** Hugging Face's defaults where a config.json leaves a key out (they differ by architecture). */
const DEFAULTS: Record<ModelType, { tied: boolean; eps: number; act: string; maxPos: number; headDim?: number }> = {
  llama: { tied: false, eps: 1e-6, act: 'silu', maxPos: 2048 },
  mistral: { tied: false, eps: 1e-6, act: 'silu', maxPos: 4096 * 32 },
  qwen2: { tied: false, eps: 1e-6, act: 'silu', maxPos: 32768 },
  qwen3: { tied: false, eps: 1e-6, act: 'silu', maxPos: 32768, headDim: 128 },
  gemma2: { tied: true, eps: 1e-6, act: 'gelu_pytorch_tanh', maxPos: 8192, headDim: 256 },
  gemma3_text: { tied: true, eps: 1e-6, act: 'gelu_pytorch_tanh', maxPos: 131072, headDim: 256 },
  phi3: { tied: false, eps: 1e-5, act: 'silu', maxPos: 4096 },
  gpt2: { tied: true, eps: 1e-5, act: 'gelu_new', maxPos: 1024 },
  gpt_neox: { tied: false, eps: 1e-5, act: 'gelu', maxPos: 2048 },
};

const ACTIVATIONS: Record<string, string> = {
  silu: 'silu', swish: 'silu', gelu_pytorch_tanh: 'gelu_tanh', gelu_new: 'gelu_tanh', gelu_fast: 'gelu_tanh',
  gelu: 'gelu', // exact: x * Phi(x), with erf
};

export function normaliseConfig(raw: Record<string, unknown>, file = 'config.json'): ModelConfig {
  const modelType = raw.model_type;
  if (typeof modelType !== 'string' || !Object.hasOwn(ARCHITECTURES, modelType)) {
    throw badInput(`model_type ${JSON.stringify(modelType)} is not supported; supported: ${SUPPORTED_MODEL_TYPES.join(', ')}`, file);
  }
  const type = modelType as ModelType;
  const gpt2 = type === 'gpt2';
  const neox = type === 'gpt_neox';
  const def = DEFAULTS[type];
  const int = (key: string, fallback?: number): number => {
    const v = raw[key] ?? fallback;
    if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0) {
      throw badInput(`"${key}" must be a positive integer, got ${JSON.stringify(raw[key])}`, file);
    }
    return v;
  };
  const num = (v: unknown, key: string, fallback: number): number => {
    if (v === undefined || v === null) return fallback;
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) throw badInput(`"${key}" must be a positive number, got ${JSON.stringify(v)}`, file);
    return v;
  };
  const optNum = (key: string, fallback: number | null): number | null => {
    const v = raw[key];
    if (v === null) return null;
    return num(v, key, fallback as number) ?? null;
  };
  // GPT-2 keeps its original key names (transformers maps them with attribute_map).
  const hiddenSize = int(gpt2 ? 'n_embd' : 'hidden_size');
  const numHeads = int(gpt2 ? 'n_head' : 'num_attention_heads');
  const numKvHeads = gpt2 ? numHeads : int('num_key_value_heads', numHeads);
  if (numHeads % numKvHeads !== 0) {
    throw badInput(`num_attention_heads (${numHeads}) must be a multiple of num_key_value_heads (${numKvHeads})`, file);
  }
  const headDim = raw.head_dim != null ? int('head_dim') : (def.headDim ?? hiddenSize / numHeads);
  if (!Number.isInteger(headDim) || headDim % 2 !== 0) throw badInput(`head dimension ${headDim} must be an even integer`, file);
  const numLayers = int(gpt2 ? 'n_layer' : 'num_hidden_layers');
  const intermediateSize = gpt2 ? (raw.n_inner == null ? 4 * hiddenSize : int('n_inner')) : int('intermediate_size');
  const maxPositionEmbeddings = gpt2 ? int('n_positions', def.maxPos) : ((raw.max_position_embeddings as number) ?? def.maxPos);

  // Newer transformers releases move RoPE settings into `rope_parameters`; older ones use rope_theta + rope_scaling.
  // Per layer type ({ full_attention: {...}, sliding_attention: {...} }, Gemma 3 in transformers v5): the full layers'
  // parameters are the model's, the sliding layers' base is the local one.
  const ropeAll = (raw.rope_parameters ?? null) as Record<string, unknown> | null;
  const perType = ropeAll && typeof ropeAll.full_attention === 'object' && ropeAll.full_attention !== null;
  const ropeParams = (perType ? ropeAll!.full_attention : ropeAll) as Record<string, unknown> | null;
  const ropeLocal = (perType ? ropeAll!.sliding_attention ?? null : null) as Record<string, unknown> | null;
  // GPT-NeoX's own keys (rotary_emb_base, rotary_pct) come first, as transformers reads them.
  const ropeTheta = num((neox ? raw.rotary_emb_base : undefined) ?? ropeParams?.rope_theta ?? raw.rope_theta, neox && raw.rotary_emb_base != null ? 'rotary_emb_base' : 'rope_theta', 10000);
  // partial_rotary_factor < 1 (Phi-4-mini; GPT-NeoX's rotary_pct, 0.25 by default): RoPE rotates only the first
  // head_dim x factor dimensions of each head.
  const partial = (neox ? raw.rotary_pct : undefined) ?? raw.partial_rotary_factor ?? ropeParams?.partial_rotary_factor ?? (neox ? 0.25 : 1);
  if (typeof partial !== 'number' || !(partial > 0 && partial <= 1)) throw badInput(`partial_rotary_factor must be a number in (0, 1], got ${JSON.stringify(partial)}`, file);
  // transformers rotates part of each head only in Phi-3's and GPT-NeoX's attention; the others rotate whole heads.
  if (partial !== 1 && type !== 'phi3' && !neox) throw badInput(`partial_rotary_factor ${partial} is not supported for ${type} (transformers applies it in phi3 and gpt_neox models only)`, file);
  const rotaryDim = Math.floor(headDim * partial); // transformers: int(head_dim * partial_rotary_factor)
  if (rotaryDim < 2 || rotaryDim % 2 !== 0) throw badInput(`partial_rotary_factor ${partial} gives ${rotaryDim} rotary dimensions of the ${headDim}-wide heads; RoPE needs an even number`, file);
  const ropeScaling = gpt2 ? null : readRopeScaling((raw.rope_scaling ?? ropeParams) as Record<string, unknown> | null, rotaryDim, file);

  const gemma = type === 'gemma2' || type === 'gemma3_text';
  const gemma3 = type === 'gemma3_text';
  const actKey = gemma ? 'hidden_activation' : gpt2 ? 'activation_function' : 'hidden_act';
  const actRaw = String((gemma ? raw.hidden_activation ?? raw.hidden_act : raw[actKey]) ?? def.act);
  const hiddenAct = ACTIVATIONS[actRaw];
  if (!hiddenAct) {
    throw badInput(`${actKey === 'hidden_activation' ? 'hidden_activation' : 'hidden_act'} "${actRaw}" is not supported for ${type} (expected one of ${Object.keys(ACTIVATIONS).join(', ')})`, file);
  }

  const attnScale = gemma ? 1 / Math.sqrt(num(raw.query_pre_attn_scalar, 'query_pre_attn_scalar', 256))
    : gpt2 && raw.scale_attn_weights === false ? 1 : 1 / Math.sqrt(headDim);
  return {
    modelType: type,
    hiddenSize,
    intermediateSize,
    numLayers,
    numHeads,
    numKvHeads,
    headDim,
    vocabSize: int('vocab_size'),
    rmsNormEps: gpt2 ? num(raw.layer_norm_epsilon, 'layer_norm_epsilon', def.eps)
      : neox ? num(raw.layer_norm_eps, 'layer_norm_eps', def.eps) : num(raw.rms_norm_eps, 'rms_norm_eps', def.eps),
    ropeTheta,
    rotaryDim,
    ropeScaling,
    maxPositionEmbeddings,
    tieWordEmbeddings: raw.tie_word_embeddings == null ? def.tied : Boolean(raw.tie_word_embeddings),
    attentionBias: Boolean(raw.attention_bias ?? neox) || type === 'qwen2' || gpt2,
    mlpBias: Boolean(raw.mlp_bias) || gpt2 || neox,
    hiddenAct,
    dtype: String(raw.dtype ?? raw.torch_dtype ?? 'float32'),
    bosTokenId: typeof raw.bos_token_id === 'number' ? raw.bos_token_id : undefined,
    eosTokenId: (raw.eos_token_id ?? undefined) as number | number[] | undefined,
    normType: gpt2 || neox ? 'layernorm' : 'rms',
    normOffset: gemma ? 1 : 0,
    qkNorm: type === 'qwen3' || gemma3,
    sandwichNorms: gemma,
    embedScale: gemma ? Math.fround(Math.sqrt(hiddenSize)) : 1,
    positions: gpt2 ? 'learned' : 'rope',
    attnScale,
    attnScaleByLayer: gpt2 && raw.scale_attn_by_inverse_layer_idx === true,
    // Gemma 2 soft-caps by default. Gemma 3's attention never does (transformers keeps attn_logit_softcapping but does
    // not apply it); its final logits only when the config sets a cap.
    attnSoftcap: gemma && !gemma3 ? optNum('attn_logit_softcapping', 50) : null,
    finalSoftcap: gemma ? optNum('final_logit_softcapping', gemma3 ? null : 30) : null,
    slidingWindows: slidingWindows(raw, type, numLayers, file),
    // Gemma 3: sliding (local) layers rotate with rope_local_base_freq and no scaling.
    ropeLocalTheta: gemma3 ? num(ropeLocal?.rope_theta ?? raw.rope_local_base_freq, 'rope_local_base_freq', 10000) : null,
    parallelResidual: neox && raw.use_parallel_residual !== false,
    qkvPerHead: neox,
    raw,
  };
}

function readRopeScaling(src: Record<string, unknown> | null, headDim: number, file: string): RopeScaling | null {
  if (!src || typeof src !== 'object') return null;
  let type = String(src.rope_type ?? src.type ?? 'default');
  if (type === 'su') type = 'longrope'; // Phi-3's first name for it
  if (type === 'default') return null;
  if (!(ROPE_TYPES as readonly string[]).includes(type)) {
    // Another scaling changes the positions' frequencies in a way we do not compute: running it as plain RoPE
    // would silently give wrong results.
    throw badInput(`rope scaling type "${type}" is not supported (supported: ${ROPE_TYPES.join(', ')})`, file);
  }
  const need = (key: string) => {
    const v = src[key];
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) throw badInput(`rope scaling "${type}" needs a positive number "${key}", got ${JSON.stringify(v)}`, file);
  };
  if (type !== 'longrope') need('factor');
  if (type === 'llama3') for (const k of ['low_freq_factor', 'high_freq_factor', 'original_max_position_embeddings']) need(k);
  if (type === 'longrope') {
    for (const k of ['short_factor', 'long_factor']) {
      const v = src[k];
      if (!Array.isArray(v) || v.length !== headDim / 2 || v.some((x) => typeof x !== 'number')) {
        throw badInput(`rope scaling "longrope" needs "${k}": ${headDim / 2} numbers (half the rotary dimensions)`, file);
      }
    }
  }
  return { ...src, type };
}

/** Which layers attend through a sliding window, following each architecture's transformers config. */
function slidingWindows(raw: Record<string, unknown>, type: ModelType, numLayers: number, file: string): (number | null)[] {
  // Gemma 2 and 3 configs default to a 4096-token window (transformers' Gemma2Config / Gemma3TextConfig).
  const sw = raw.sliding_window === undefined && (type === 'gemma2' || type === 'gemma3_text') ? 4096 : raw.sliding_window;
  if (sw === null && type === 'gemma3_text') throw badInput('"sliding_window" null: Gemma 3\'s sliding layers need a window (transformers cannot build their mask either)', file);
  if (sw == null || type === 'llama' || type === 'gpt2' || type === 'gpt_neox') return new Array(numLayers).fill(null);
  if (typeof sw !== 'number' || !Number.isInteger(sw) || sw <= 0) throw badInput(`"sliding_window" must be a positive integer or null, got ${JSON.stringify(sw)}`, file);
  // Qwen's config drops sliding_window unless use_sliding_window, whatever layer_types says.
  if ((type === 'qwen2' || type === 'qwen3') && raw.use_sliding_window !== true) return new Array(numLayers).fill(null);
  const layerTypes = raw.layer_types;
  if (Array.isArray(layerTypes)) {
    if (layerTypes.length !== numLayers) throw badInput(`"layer_types" has ${layerTypes.length} entries for ${numLayers} layers`, file);
    return layerTypes.map((t) => (t === 'sliding_attention' ? sw : null));
  }
  return Array.from({ length: numLayers }, (_, l) => {
    switch (type) {
      case 'mistral': case 'phi3': return sw;
      // Qwen: only with use_sliding_window, and only from layer max_window_layers up.
      case 'qwen2': case 'qwen3': return raw.use_sliding_window === true && l >= Number(raw.max_window_layers ?? 0) ? sw : null;
      // Gemma 2 alternates: local (sliding) attention on even layers, global on odd ones.
      case 'gemma2': return l % 2 === 0 ? sw : null;
      // Gemma 3: every sliding_window_pattern-th layer (6 by default) is global, the others local.
      case 'gemma3_text': {
        const pattern = raw.sliding_window_pattern ?? 6;
        if (typeof pattern !== 'number' || !Number.isInteger(pattern) || pattern < 1) throw badInput(`"sliding_window_pattern" must be a positive integer, got ${JSON.stringify(pattern)}`, file);
        return (l + 1) % pattern !== 0 ? sw : null;
      }
      default: return null;
    }
  });
}

export interface ModuleSpec {
  name: string; layer: number; kind: string; dIn: number; dOut: number;
  /** GPT-2's Conv1D: the weight is stored [d_in, d_out] (PEFT: fan_in_fan_out). Absent for nn.Linear. */
  conv1d?: true;
}

/** Every candidate adapter position, layer-major, kinds in column order, with Hugging Face names. */
export function candidateModules(cfg: ModelConfig): ModuleSpec[] {
  const out: ModuleSpec[] = [];
  const conv1d = archOf(cfg.modelType).conv1d;
  for (let l = 0; l < cfg.numLayers; l++) {
    for (const kind of ARCHITECTURES[cfg.modelType].kinds) {
      const [dIn, dOut] = moduleShape(cfg, kind);
      out.push({ name: moduleName(l, kind, cfg.modelType), layer: l, kind, dIn, dOut, ...(conv1d ? { conv1d: true as const } : {}) });
    }
  }
  return out;
}

export function moduleName(layer: number, kind: string, modelType: ModelType = 'llama'): string {
  const arch: ArchSpec = ARCHITECTURES[modelType];
  const rel = arch.paths[kind] ?? `${kind === 'gate_proj' || kind === 'up_proj' || kind === 'down_proj' ? 'mlp' : 'self_attn'}.${kind}`;
  return `${arch.layerPrefix}.${layer}.${rel}`;
}

/** The layer and kind of a module name of this architecture, or undefined. */
export function parseModuleName(name: string, modelType: ModelType): { layer: number; kind: string } | undefined {
  const arch: ArchSpec = ARCHITECTURES[modelType];
  if (!name.startsWith(arch.layerPrefix + '.')) return undefined;
  const m = /^(\d+)\.(.+)$/.exec(name.slice(arch.layerPrefix.length + 1));
  if (!m) return undefined;
  const kind = arch.kinds.find((k) => arch.paths[k] === m[2]);
  return kind ? { layer: Number(m[1]), kind } : undefined;
}

/**
 * The name a tensor has in the weight files. GPT-2 checkpoints often store the base model's tensors without the
 * `transformer.` prefix that the model (and PEFT) uses.
 */
export function storedName(has: (name: string) => boolean, name: string): string {
  if (has(name)) return name;
  if (name.startsWith('transformer.') && has(name.slice('transformer.'.length))) return name.slice('transformer.'.length);
  return name;
}

/** The output head's tensor when it is not tied to the embeddings. */
export function headTensorName(modelType: ModelType): string {
  return modelType === 'gpt_neox' ? 'embed_out.weight' : 'lm_head.weight';
}

/** [d_in, d_out] of a module kind. */
export function moduleShape(cfg: ModelConfig, kind: string): [number, number] {
  const H = cfg.hiddenSize, I = cfg.intermediateSize;
  const q = cfg.numHeads * cfg.headDim;
  const kv = cfg.numKvHeads * cfg.headDim;
  switch (kind) {
    case 'q_proj': return [H, q];
    case 'k_proj': return [H, kv];
    case 'v_proj': return [H, kv];
    case 'o_proj': return [q, H];
    case 'gate_proj': return [H, I];
    case 'up_proj': return [H, I];
    case 'down_proj': return [I, H];
    case 'qkv_proj': return [H, q + 2 * kv];
    case 'gate_up_proj': return [H, 2 * I];
    case 'attn.c_attn': return [H, 3 * H];
    case 'attn.c_proj': return [H, H];
    case 'mlp.c_fc': return [H, I];
    case 'mlp.c_proj': return [I, H];
    case 'query_key_value': return [H, 3 * H];
    case 'dense': return [H, H];
    case 'dense_h_to_4h': return [H, I];
    case 'dense_4h_to_h': return [I, H];
    default: throw badInput(`unknown module kind "${kind}"`);
  }
}

/** The shape of a module's weight as stored: [d_out, d_in] for nn.Linear, [d_in, d_out] for GPT-2's Conv1D. */
export function storedWeightShape(cfg: ModelConfig, spec: { dIn: number; dOut: number }): [number, number] {
  return archOf(cfg.modelType).conv1d ? [spec.dIn, spec.dOut] : [spec.dOut, spec.dIn];
}

export function parameterCount(cfg: ModelConfig): number {
  const H = cfg.hiddenSize;
  const one = candidateModules({ ...cfg, numLayers: 1, slidingWindows: [null] });
  const norms = (cfg.sandwichNorms ? 4 : 2) * H * (cfg.normType === 'layernorm' ? 2 : 1) + (cfg.qkNorm ? 2 * cfg.headDim : 0);
  const biases = one.reduce((a, m) => a + (cfg.modelType === 'gpt2' || (cfg.mlpBias && /dense_h_to_4h|dense_4h_to_h/.test(m.kind))
    || (cfg.attentionBias && /q_proj|k_proj|v_proj|query_key_value|^dense$/.test(m.kind)) ? m.dOut : 0), 0);
  const perLayer = one.reduce((a, m) => a + m.dIn * m.dOut, 0) + norms + biases;
  const embed = cfg.vocabSize * H;
  const finalNorm = H * (cfg.normType === 'layernorm' ? 2 : 1);
  const positions = cfg.positions === 'learned' ? cfg.maxPositionEmbeddings * H : 0;
  return cfg.numLayers * perLayer + embed + positions + finalNorm + (cfg.tieWordEmbeddings ? 0 : embed);
}
