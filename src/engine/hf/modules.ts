// The candidate adapter positions of a model: every linear module of every decoder layer, with Hugging Face's names
// and shapes, and the names of its tensors in the weight files. All of it follows from the config and the
// architecture's definition.
import { badInput } from '../runtime/errors';
import { archOf, BASE_MODEL_TYPE } from '../arch/registry';
import type { ArchRoles } from '../arch/types';
import type { ModelConfig } from './config';

export interface ModuleSpec {
  name: string; layer: number; kind: string; dIn: number; dOut: number;
  /** GPT-2's Conv1D: the weight is stored [d_in, d_out] (PEFT: fan_in_fan_out). Absent for nn.Linear. */
  conv1d?: true;
}

/** Every candidate adapter position, layer-major, kinds in column order, with Hugging Face names. */
export function candidateModules(cfg: ModelConfig): ModuleSpec[] {
  const { kinds, conv1d } = archOf(cfg.modelType).modules;
  const out: ModuleSpec[] = [];
  for (let l = 0; l < cfg.numLayers; l++) {
    for (const kind of kinds) {
      const [dIn, dOut] = moduleShape(cfg, kind);
      out.push({ name: moduleName(l, kind, cfg.modelType), layer: l, kind, dIn, dOut, ...(conv1d ? { conv1d: true as const } : {}) });
    }
  }
  return out;
}

export function moduleName(layer: number, kind: string, modelType = BASE_MODEL_TYPE): string {
  const m = archOf(modelType).modules;
  const rel = m.paths[kind];
  if (rel === undefined) throw badInput(`unknown module kind "${kind}" for ${modelType} (kinds: ${m.kinds.join(', ')})`);
  return `${m.layerPrefix}.${layer}.${rel}`;
}

/** The layer and kind of a module name of this architecture, or undefined. */
export function parseModuleName(name: string, modelType: string): { layer: number; kind: string } | undefined {
  const m = archOf(modelType).modules;
  if (!name.startsWith(m.layerPrefix + '.')) return undefined;
  const parts = /^(\d+)\.(.+)$/.exec(name.slice(m.layerPrefix.length + 1));
  if (!parts) return undefined;
  const kind = m.kinds.find((k) => m.paths[k] === parts[2]);
  return kind ? { layer: Number(parts[1]), kind } : undefined;
}

/** The role (q, k, v, qkv, o, gate, up, gateUp, fc, down) a module kind plays in its architecture. */
export function roleOf(modelType: string, kind: string): keyof ArchRoles {
  const roles = archOf(modelType).modules.roles;
  const role = (Object.keys(roles) as (keyof ArchRoles)[]).find((r) => roles[r] === kind);
  if (!role) throw badInput(`unknown module kind "${kind}" for ${modelType}`);
  return role;
}

/** [d_in, d_out] of a module kind, from the part it plays. */
export function moduleShape(
  cfg: Pick<ModelConfig, 'modelType' | 'hiddenSize' | 'intermediateSize' | 'numHeads' | 'numKvHeads' | 'headDim'>, kind: string,
): [number, number] {
  const H = cfg.hiddenSize, I = cfg.intermediateSize;
  const q = cfg.numHeads * cfg.headDim;
  const kv = cfg.numKvHeads * cfg.headDim;
  switch (roleOf(cfg.modelType, kind)) {
    case 'q': return [H, q];
    case 'k': case 'v': return [H, kv];
    case 'qkv': return [H, q + 2 * kv];
    case 'o': return [q, H];
    case 'gate': case 'up': case 'fc': return [H, I];
    case 'gateUp': return [H, 2 * I];
    case 'down': return [I, H];
  }
}

/**
 * The name a tensor has in the weight files. Some checkpoints (GPT-2's originals) store the base model's tensors
 * without the prefix that the model (and PEFT) uses.
 */
export function storedName(has: (name: string) => boolean, name: string, modelType: string): string {
  if (has(name)) return name;
  const prefix = archOf(modelType).tensors.optionalPrefix;
  if (prefix && name.startsWith(prefix) && has(name.slice(prefix.length))) return name.slice(prefix.length);
  return name;
}

/** The output head's tensor when it is not tied to the embeddings. */
export function headTensorName(modelType: string): string {
  return archOf(modelType).tensors.head;
}

/** The shape of a module's weight as stored: [d_out, d_in] for nn.Linear, [d_in, d_out] for GPT-2's Conv1D. */
export function storedWeightShape(cfg: ModelConfig, spec: { dIn: number; dOut: number }): [number, number] {
  return archOf(cfg.modelType).modules.conv1d ? [spec.dIn, spec.dOut] : [spec.dOut, spec.dIn];
}

export function parameterCount(cfg: ModelConfig): number {
  const arch = archOf(cfg.modelType);
  const H = cfg.hiddenSize;
  const one = candidateModules({ ...cfg, numLayers: 1, slidingWindows: [null] });
  const normSize = cfg.normType === 'layernorm' ? 2 : 1;
  const n = arch.tensors.norms;
  // The norms the layer has (OLMo 2 has neither input nor pre-MLP norm), and the q/k norms: one head wide, or the
  // whole projection (OLMo 2).
  const qkWidth = cfg.qkNorm === 'projection' ? (cfg.numHeads + cfg.numKvHeads) * cfg.headDim : cfg.qkNorm === 'head' ? 2 * cfg.headDim : 0;
  const norms = [n.input, n.preMlp, n.attnOut, n.mlpOut].filter(Boolean).length * H * normSize + qkWidth * normSize;
  const b = arch.biases(cfg);
  const biased = (kind: string) => {
    const role = roleOf(cfg.modelType, kind);
    return role === 'o' ? b.o : role === 'q' || role === 'k' || role === 'v' || role === 'qkv' ? b.attn : b.mlp;
  };
  const biases = one.reduce((a, m) => a + (biased(m.kind) ? m.dOut : 0), 0);
  const perLayer = one.reduce((a, m) => a + m.dIn * m.dOut, 0) + norms + biases;
  const embed = cfg.vocabSize * H;
  const positions = cfg.positions === 'learned' ? cfg.maxPositionEmbeddings * H : 0;
  return cfg.numLayers * perLayer + embed + positions + H * normSize + (cfg.tieWordEmbeddings ? 0 : embed);
}
