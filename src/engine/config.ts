// Hugging Face config.json, normalised once at the edge into the one shape the engine reads.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { badInput } from './errors';

/** Architectures the engine can run, with the module kinds that are adapter candidates, in heatmap column order. */
export const ARCHITECTURES = {
  llama: { kinds: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] },
} as const;
export type ModelType = keyof typeof ARCHITECTURES;
export const SUPPORTED_MODEL_TYPES = Object.keys(ARCHITECTURES) as ModelType[];

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
  rmsNormEps: number;
  ropeTheta: number;
  ropeScaling: RopeScaling | null;
  maxPositionEmbeddings: number;
  tieWordEmbeddings: boolean;
  attentionBias: boolean;
  mlpBias: boolean;
  hiddenAct: string;
  dtype: string;
  bosTokenId?: number;
  eosTokenId?: number | number[];
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

export function normaliseConfig(raw: Record<string, unknown>, file = 'config.json'): ModelConfig {
  const modelType = raw.model_type;
  if (typeof modelType !== 'string' || !Object.hasOwn(ARCHITECTURES, modelType)) {
    throw badInput(`model_type ${JSON.stringify(modelType)} is not supported; supported: ${SUPPORTED_MODEL_TYPES.join(', ')}`, file);
  }
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
  const hiddenSize = int('hidden_size');
  const numHeads = int('num_attention_heads');
  const numKvHeads = int('num_key_value_heads', numHeads);
  if (numHeads % numKvHeads !== 0) {
    throw badInput(`num_attention_heads (${numHeads}) must be a multiple of num_key_value_heads (${numKvHeads})`, file);
  }
  const headDim = raw.head_dim != null ? int('head_dim') : hiddenSize / numHeads;
  if (!Number.isInteger(headDim) || headDim % 2 !== 0) throw badInput(`head dimension ${headDim} must be an even integer`, file);

  // Newer transformers releases move RoPE settings into `rope_parameters`; older ones use rope_theta + rope_scaling.
  const ropeParams = (raw.rope_parameters ?? null) as Record<string, unknown> | null;
  const ropeTheta = num(ropeParams?.rope_theta ?? raw.rope_theta, 'rope_theta', 10000);
  let ropeScaling: RopeScaling | null = null;
  const scalingSrc = (raw.rope_scaling ?? ropeParams) as Record<string, unknown> | null;
  if (scalingSrc && typeof scalingSrc === 'object') {
    const type = (scalingSrc.rope_type ?? scalingSrc.type ?? 'default') as string;
    if (type !== 'default') {
      // Scaled RoPE changes the positions' frequencies; running it as plain RoPE would silently give wrong results.
      throw badInput(`rope scaling type "${type}" is not supported yet (only unscaled RoPE)`, file);
    }
  }
  const hiddenAct = (raw.hidden_act ?? raw.hidden_activation ?? 'silu') as string;
  if (hiddenAct !== 'silu') throw badInput(`hidden_act "${hiddenAct}" is not supported for ${modelType} (expected "silu")`, file);
  return {
    modelType: modelType as ModelType,
    hiddenSize,
    intermediateSize: int('intermediate_size'),
    numLayers: int('num_hidden_layers'),
    numHeads,
    numKvHeads,
    headDim,
    vocabSize: int('vocab_size'),
    rmsNormEps: num(raw.rms_norm_eps, 'rms_norm_eps', 1e-6),
    ropeTheta,
    ropeScaling,
    maxPositionEmbeddings: (raw.max_position_embeddings as number) ?? 2048,
    tieWordEmbeddings: raw.tie_word_embeddings === undefined ? false : Boolean(raw.tie_word_embeddings),
    attentionBias: Boolean(raw.attention_bias),
    mlpBias: Boolean(raw.mlp_bias),
    hiddenAct,
    dtype: String(raw.dtype ?? raw.torch_dtype ?? 'float32'),
    bosTokenId: typeof raw.bos_token_id === 'number' ? raw.bos_token_id : undefined,
    eosTokenId: (raw.eos_token_id ?? undefined) as number | number[] | undefined,
    raw,
  };
}

export interface ModuleSpec { name: string; layer: number; kind: string; dIn: number; dOut: number }

/** Every candidate adapter position, layer-major, kinds in column order, with Hugging Face names. */
export function candidateModules(cfg: ModelConfig): ModuleSpec[] {
  const out: ModuleSpec[] = [];
  for (let l = 0; l < cfg.numLayers; l++) {
    for (const kind of ARCHITECTURES[cfg.modelType].kinds) {
      const [dIn, dOut] = moduleShape(cfg, kind);
      out.push({ name: moduleName(l, kind), layer: l, kind, dIn, dOut });
    }
  }
  return out;
}

export function moduleName(layer: number, kind: string): string {
  const block = kind === 'gate_proj' || kind === 'up_proj' || kind === 'down_proj' ? 'mlp' : 'self_attn';
  return `model.layers.${layer}.${block}.${kind}`;
}

/** [d_in, d_out] of a module kind. */
export function moduleShape(cfg: ModelConfig, kind: string): [number, number] {
  const q = cfg.numHeads * cfg.headDim;
  const kv = cfg.numKvHeads * cfg.headDim;
  switch (kind) {
    case 'q_proj': return [cfg.hiddenSize, q];
    case 'k_proj': return [cfg.hiddenSize, kv];
    case 'v_proj': return [cfg.hiddenSize, kv];
    case 'o_proj': return [q, cfg.hiddenSize];
    case 'gate_proj': return [cfg.hiddenSize, cfg.intermediateSize];
    case 'up_proj': return [cfg.hiddenSize, cfg.intermediateSize];
    case 'down_proj': return [cfg.intermediateSize, cfg.hiddenSize];
    default: throw badInput(`unknown module kind "${kind}"`);
  }
}

export function parameterCount(cfg: ModelConfig): number {
  const perLayer = candidateModules({ ...cfg, numLayers: 1 }).reduce((a, m) => a + m.dIn * m.dOut, 0) + 2 * cfg.hiddenSize;
  const embed = cfg.vocabSize * cfg.hiddenSize;
  return cfg.numLayers * perLayer + embed + cfg.hiddenSize + (cfg.tieWordEmbeddings ? 0 : embed);
}
