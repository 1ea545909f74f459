// Hugging Face config.json, normalised once at the edge into the one shape the engine reads. What differs between
// architectures (key names, defaults, flags, sliding windows) is the architecture's definition in ../arch; this file
// holds only what every config shares: the dimensions, RoPE and its scaling, the activation, token ids.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { badInput } from '../runtime/errors';
import { archOf, SUPPORTED_MODEL_TYPES } from '../arch/registry';
import type { ArchDef, ArchFlags, ConfigReader } from '../arch/types';

export interface RopeScaling { type: string; factor?: number; [k: string]: unknown }

export interface ModelConfig extends ArchFlags {
  /** The architecture: a key of ../arch/registry's ARCHITECTURES. */
  modelType: string;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  vocabSize: number;
  /** The epsilon of every norm (RMSNorm's, or LayerNorm's). */
  normEps: number;
  ropeTheta: number;
  ropeScaling: RopeScaling | null;
  /** Leading dimensions of each head that RoPE rotates: head_dim x partial_rotary_factor (Phi-4-mini: 0.75). */
  rotaryDim: number;
  maxPositionEmbeddings: number;
  tieWordEmbeddings: boolean;
  /** `silu`, `gelu_tanh` (gelu_pytorch_tanh, gelu_new: the same tanh approximation) or `gelu` (exact, erf). */
  hiddenAct: string;
  dtype: string;
  bosTokenId?: number;
  eosTokenId?: number | number[];
  /**
   * Norms on the queries and keys before RoPE: over head_dim on every head (`head`, Qwen 3 and Gemma 3), over the
   * whole projection (`projection`, OLMo 2), or none.
   */
  qkNorm: 'head' | 'projection' | null;
  /** Gemma 2 and 3, OLMo 2: norms on the attention and MLP outputs, before each residual add. */
  sandwichNorms: boolean;
  /** Per layer: whether RoPE rotates its queries and keys (false on SmolLM3's NoPE layers). */
  ropeLayers: boolean[];
  /** `rope`, or `learned` absolute position embeddings (GPT-2). */
  positions: 'rope' | 'learned';
  /** Per layer: how many positions (itself included) a query sees, or null for all earlier ones. */
  slidingWindows: (number | null)[];
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

const ACTIVATIONS: Record<string, string> = {
  silu: 'silu', swish: 'silu', gelu_pytorch_tanh: 'gelu_tanh', gelu_new: 'gelu_tanh', gelu_fast: 'gelu_tanh',
  gelu: 'gelu', // exact: x * Phi(x), with erf
};

export function normaliseConfig(raw: Record<string, unknown>, file = 'config.json'): ModelConfig {
  const arch = archOf(raw.model_type, file);
  const { keys, defaults: def } = arch.config;
  const int = (key: string, fallback?: number): number => {
    const v = raw[key] ?? fallback;
    if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0) {
      throw badInput(`"${key}" must be a positive integer, got ${JSON.stringify(raw[key])}`, file);
    }
    return v;
  };
  const num = (key: string, fallback: number, value: unknown = raw[key]): number => {
    const v = value ?? raw[key];
    if (v === undefined || v === null) return fallback;
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) throw badInput(`"${key}" must be a positive number, got ${JSON.stringify(v)}`, file);
    return v;
  };
  const optNum = (key: string, fallback: number | null): number | null => {
    const v = raw[key];
    if (v === null) return null;
    if (v === undefined) return fallback;
    return num(key, 0);
  };
  const hiddenSize = int(keys.hidden);
  const numHeads = int(keys.heads);
  const numKvHeads = keys.kvHeads ? int(keys.kvHeads, numHeads) : numHeads;
  if (numHeads % numKvHeads !== 0) {
    throw badInput(`num_attention_heads (${numHeads}) must be a multiple of num_key_value_heads (${numKvHeads})`, file);
  }
  const headDim = raw.head_dim != null ? int('head_dim') : (def.headDim ?? hiddenSize / numHeads);
  if (!Number.isInteger(headDim) || headDim % 2 !== 0) throw badInput(`head dimension ${headDim} must be an even integer`, file);
  const numLayers = int(keys.layers);
  const intermediateSize = def.intermediateTimesHidden && raw[keys.intermediate] == null
    ? def.intermediateTimesHidden * hiddenSize : int(keys.intermediate);
  const maxPositionEmbeddings = int(keys.maxPos, def.maxPos);

  const rope = readRope(raw, arch, headDim, num, file);

  const actKey = keys.act.find((k) => raw[k] != null) ?? keys.act[0];
  const actRaw = String(raw[actKey] ?? def.act);
  const hiddenAct = ACTIVATIONS[actRaw];
  if (!hiddenAct) {
    throw badInput(`${keys.act[0]} "${actRaw}" is not supported for ${arch.modelType} (expected one of ${Object.keys(ACTIVATIONS).join(', ')})`, file);
  }
  const reader: ConfigReader = { raw, file, hiddenSize, headDim, numLayers, ropeLocal: rope.local, num, optNum };
  return {
    modelType: arch.modelType,
    hiddenSize,
    intermediateSize,
    numLayers,
    numHeads,
    numKvHeads,
    headDim,
    vocabSize: int('vocab_size'),
    normEps: num(keys.eps, def.eps),
    ropeTheta: rope.theta,
    rotaryDim: rope.rotaryDim,
    ropeScaling: rope.scaling,
    maxPositionEmbeddings,
    tieWordEmbeddings: raw.tie_word_embeddings == null ? def.tied : Boolean(raw.tie_word_embeddings),
    hiddenAct,
    dtype: String(raw.dtype ?? raw.torch_dtype ?? 'float32'),
    bosTokenId: typeof raw.bos_token_id === 'number' ? raw.bos_token_id : undefined,
    eosTokenId: (raw.eos_token_id ?? undefined) as number | number[] | undefined,
    qkNorm: arch.tensors.norms.q && arch.tensors.norms.k ? arch.tensors.norms.qkOver ?? 'head' : null,
    sandwichNorms: Boolean(arch.tensors.norms.attnOut && arch.tensors.norms.mlpOut),
    positions: arch.config.positions,
    ...arch.config.flags(reader),
    slidingWindows: arch.config.slidingWindows(reader),
    ropeLayers: arch.config.positions === 'rope' ? arch.config.ropeLayers?.(reader) ?? new Array(numLayers).fill(true) : new Array(numLayers).fill(false),
    raw,
  };
}

/**
 * RoPE's settings: the base, the rotary dimensions of each head and the scaling. Newer transformers releases move them
 * into `rope_parameters`; older ones use rope_theta + rope_scaling. Per layer type ({ full_attention: {...},
 * sliding_attention: {...} }, Gemma 3 in transformers v5): the full layers' parameters are the model's, the sliding
 * layers' base is the local one.
 */
function readRope(raw: Record<string, unknown>, arch: ArchDef, headDim: number, num: ConfigReader['num'], file: string):
  { theta: number; rotaryDim: number; scaling: RopeScaling | null; local: Record<string, unknown> | null } {
  const { keys, defaults: def } = arch.config;
  const ropeAll = (raw.rope_parameters ?? null) as Record<string, unknown> | null;
  const perType = ropeAll && typeof ropeAll.full_attention === 'object' && ropeAll.full_attention !== null;
  const ropeParams = (perType ? ropeAll!.full_attention : ropeAll) as Record<string, unknown> | null;
  const local = (perType ? ropeAll!.sliding_attention ?? null : null) as Record<string, unknown> | null;
  // An architecture's own keys (GPT-NeoX's rotary_emb_base, rotary_pct) come first, as transformers reads them.
  const ownTheta = keys.ropeTheta ? raw[keys.ropeTheta] : undefined;
  const theta = num(ownTheta != null ? keys.ropeTheta! : 'rope_theta', def.ropeTheta ?? 10000, ownTheta ?? ropeParams?.rope_theta ?? raw.rope_theta);
  // partial_rotary_factor < 1 (Phi-4-mini; GPT-NeoX's rotary_pct, 0.25 by default): RoPE rotates only the first
  // head_dim x factor dimensions of each head.
  const partial = (keys.partialRotary ? raw[keys.partialRotary] : undefined) ?? raw.partial_rotary_factor
    ?? ropeParams?.partial_rotary_factor ?? def.partialRotary ?? 1;
  if (typeof partial !== 'number' || !(partial > 0 && partial <= 1)) throw badInput(`partial_rotary_factor must be a number in (0, 1], got ${JSON.stringify(partial)}`, file);
  if (partial !== 1 && !arch.config.partialRotary) {
    throw badInput(`partial_rotary_factor ${partial} is not supported for ${arch.modelType} (transformers applies it in ${SUPPORTED_MODEL_TYPES.filter((t) => archOf(t).config.partialRotary).join(' and ')} models only)`, file);
  }
  const rotaryDim = Math.floor(headDim * partial); // transformers: int(head_dim * partial_rotary_factor)
  if (rotaryDim < 2 || rotaryDim % 2 !== 0) throw badInput(`partial_rotary_factor ${partial} gives ${rotaryDim} rotary dimensions of the ${headDim}-wide heads; RoPE needs an even number`, file);
  const scaling = arch.config.positions === 'learned' ? null
    : readRopeScaling((raw.rope_scaling ?? ropeParams) as Record<string, unknown> | null, rotaryDim, file);
  return { theta, rotaryDim, scaling, local };
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
