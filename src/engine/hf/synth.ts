// The embedded default: a small Llama folder and a dataset that DomLoRA writes itself, deterministically, so the
// demo and the end-to-end tests need no third-party weights. The weights are random (seeded), the tokenizer is a
// character-level SentencePiece-style BPE with byte fallback, and the data is arithmetic question/answer pairs that
// a few hundred training steps can visibly learn.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Rng } from '../runtime/rng';
import { writeSafetensorsStreaming } from './safetensors';
import { writeDirAtomic, writeFileAtomic } from '../runtime/atomic';
import type { ArchDef, SynthShape } from '../arch/types';
import { archOf, BASE_MODEL_TYPE } from '../arch/registry';
import { moduleName, moduleShape, roleOf } from './modules';

export type { SynthShape };

export const DEMO_SHAPE: SynthShape = { hiddenSize: 96, intermediateSize: 256, layers: 6, heads: 6, kvHeads: 2, vocabSize: 384, tied: true, seed: 1234, embedStd: 0.02 };

/** Uniform with the same standard deviation (U(-a, a), a = std sqrt 3): ten times faster, for bench-sized models. */
function uniform(rng: Rng, n: number, std: number): Float32Array {
  const out = new Float32Array(n);
  const a = std * Math.sqrt(3);
  for (let i = 0; i < n; i++) out[i] = (2 * rng.next() - 1) * a;
  return out;
}

function normal(rng: Rng, n: number, std: number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i += 2) {
    const u = Math.max(rng.next(), 1e-12), v = rng.next();
    const r = Math.sqrt(-2 * Math.log(u)) * std;
    out[i] = r * Math.cos(2 * Math.PI * v);
    if (i + 1 < n) out[i + 1] = r * Math.sin(2 * Math.PI * v);
  }
  return out;
}

/** The tokenizer files: `<unk> <s> </s>`, 256 byte-fallback tokens, then one token per printable character. */
export function synthTokenizer(vocabSize: number): { tokenizer: object; config: object } {
  const vocab: Record<string, number> = { '<unk>': 0, '<s>': 1, '</s>': 2 };
  for (let b = 0; b < 256; b++) vocab[`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`] = 3 + b;
  let id = 259;
  for (let c = 0x21; c <= 0x7e && id < vocabSize; c++) vocab[String.fromCharCode(c)] = id++;
  if (id < vocabSize) vocab['\u2581'] = id++;
  const special = (i: number, content: string) => ({ id: i, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
  const tokenizer = {
    version: '1.0', truncation: null, padding: null,
    added_tokens: [special(0, '<unk>'), special(1, '<s>'), special(2, '</s>')],
    normalizer: { type: 'Sequence', normalizers: [{ type: 'Prepend', prepend: '\u2581' }, { type: 'Replace', pattern: { String: ' ' }, content: '\u2581' }] },
    pre_tokenizer: null,
    post_processor: {
      type: 'TemplateProcessing',
      single: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
      pair: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }, { SpecialToken: { id: '<s>', type_id: 1 } }, { Sequence: { id: 'B', type_id: 1 } }],
      special_tokens: { '<s>': { id: '<s>', ids: [1], tokens: ['<s>'] } },
    },
    decoder: { type: 'Sequence', decoders: [{ type: 'Replace', pattern: { String: '\u2581' }, content: ' ' }, { type: 'ByteFallback' }, { type: 'Fuse' }, { type: 'Strip', content: ' ', start: 1, stop: 0 }] },
    model: { type: 'BPE', dropout: null, unk_token: '<unk>', continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: true, byte_fallback: true, ignore_merges: false, vocab, merges: [] },
  };
  const config = {
    add_bos_token: true, add_eos_token: false, bos_token: '<s>', eos_token: '</s>', unk_token: '<unk>', pad_token: null,
    clean_up_tokenization_spaces: false, legacy: true, model_max_length: 512, tokenizer_class: 'LlamaTokenizer',
  };
  return { tokenizer, config };
}

/** A tensor of a synthetic folder before it is drawn: N(base, std^2) values of this shape. */
interface SynthSpec { name: string; shape: number[]; std: number; base: number }

/** The tensors of a synthetic folder, in the order the data meets them (and the seeded stream draws them). */
function synthSpecs(arch: ArchDef, shape: SynthShape, config: Record<string, unknown>): SynthSpec[] {
  const H = shape.hiddenSize;
  // Not normalised: tests write folders with configs the engine must refuse. The flags come straight from the rules.
  // The dimensions as the engine will read them from this config.json (GPT-NeoX's has no head_dim or kv heads).
  const { keys, defaults } = arch.config;
  const numHeads = Number(config[keys.heads]);
  const hdCfg = Number(config.head_dim ?? defaults.headDim ?? H / numHeads);
  const dims = {
    modelType: arch.modelType, hiddenSize: H, numHeads, headDim: hdCfg,
    intermediateSize: Number(config[keys.intermediate] ?? (defaults.intermediateTimesHidden ?? 1) * H),
    numKvHeads: Number((keys.kvHeads ? config[keys.kvHeads] : undefined) ?? numHeads),
  };
  const flags = arch.config.flags({
    raw: config, file: 'config.json', hiddenSize: H, headDim: hdCfg, numLayers: shape.layers, ropeLocal: null,
    num: (key, fallback, value) => Number(value ?? config[key] ?? fallback),
    optNum: (key, fallback) => (config[key] === null ? null : Number(config[key] ?? fallback)),
  });
  const maxPos = Number(config[arch.config.keys.maxPos] ?? arch.config.defaults.maxPos);
  const bias = arch.synth.biases(config, shape);
  const tensors: SynthSpec[] = [];
  const strip = shape.unprefixed ? arch.tensors.optionalPrefix : undefined;
  const add = (name: string, dims: number[], std: number, base = 0) => {
    tensors.push({ name: strip && name.startsWith(strip) ? name.slice(strip.length) : name, shape: dims, std, base });
  };
  const norm = (name: string, n: number) => {
    add(`${name}.weight`, [n], 0.1, flags.normOffset ? 0 : 1);
    if (flags.normType === 'layernorm') add(`${name}.bias`, [n], 0.05);
  };
  const { modules, tensors: names } = arch;
  const biasStd = arch.synth.biasStd ?? 0.02;
  const weight = (name: string, kind: string) => {
    const [dIn, dOut] = moduleShape(dims, kind);
    add(`${name}.weight`, modules.conv1d ? [dIn, dOut] : [dOut, dIn], 1 / Math.sqrt(dIn));
  };
  const biasOf = (name: string, kind: string) => add(`${name}.bias`, [moduleShape(dims, kind)[1]], biasStd);
  const hasBias = (kind: string) => {
    const role = roleOf(arch.modelType, kind);
    return role === 'o' ? bias.o : ['q', 'k', 'v', 'qkv'].includes(role) ? bias.attn : bias.mlp;
  };
  const linears = (l: number, kinds: string[]) => {
    for (const kind of kinds) {
      const name = moduleName(l, kind, arch.modelType);
      weight(name, kind);
      if (hasBias(kind)) biasOf(name, kind);
    }
  };
  const R = modules.roles;
  const attnIn = [R.q, R.k, R.v, R.qkv].filter((k): k is string => Boolean(k));
  const mlpIn = [R.gate, R.up, R.gateUp, R.fc].filter((k): k is string => Boolean(k));
  add(names.embed, [shape.vocabSize, H], shape.embedStd ?? 0.5);
  if (names.positions) add(names.positions, [maxPos, H], 0.1);
  for (let l = 0; l < shape.layers; l++) {
    const p = `${modules.layerPrefix}.${l}`;
    const n = names.norms;
    if (n.input) norm(`${p}.${n.input}`, H);
    linears(l, attnIn);
    if (n.q && n.k) {
      // One head wide, or the whole projection (OLMo 2).
      const whole = n.qkOver === 'projection';
      norm(`${p}.${n.q}`, whole ? dims.numHeads * hdCfg : hdCfg);
      norm(`${p}.${n.k}`, whole ? dims.numKvHeads * hdCfg : hdCfg);
    }
    linears(l, [R.o]);
    if (n.attnOut) norm(`${p}.${n.attnOut}`, H);
    if (n.preMlp) norm(`${p}.${n.preMlp}`, H);
    if (n.mlpOut) norm(`${p}.${n.mlpOut}`, H);
    linears(l, [...mlpIn, R.down]);
  }
  norm(names.finalNorm, H);
  if (!shape.tied) add(names.head, [shape.vocabSize, H], 1 / Math.sqrt(H));
  return tensors;
}

function synthPlan(shape: SynthShape): { config: Record<string, unknown>; specs: SynthSpec[] } {
  const arch = archOf(shape.arch ?? BASE_MODEL_TYPE);
  const hd = shape.headDim ?? shape.hiddenSize / shape.heads;
  const config: Record<string, unknown> = { architectures: [arch.hfClass], model_type: arch.modelType, ...arch.synth.config(shape, hd), ...shape.config };
  return { config, specs: synthSpecs(arch, shape, config) };
}

/**
 * The config.json and the tensors (names and shapes, in file order) of a synthetic folder of this shape, with no
 * weight drawn: for tests that need the headers of a model far too big to write (sparse files, header-only reads).
 */
export function synthLayout(shape: SynthShape): { config: Record<string, unknown>; tensors: { name: string; shape: number[] }[] } {
  const { config, specs } = synthPlan(shape);
  return { config, tensors: specs.map((t) => ({ name: t.name, shape: t.shape })) };
}

/**
 * Writes a random model folder (config, weights, tokenizer) of the given shape and architecture, every name and key
 * from the architecture's definition (../arch). Atomic: the folder appears whole. Weights are N(0, 1/d_in) so
 * activations stay of order one; norm weights near 1 (near 0 for Gemma's 1 + w), biases small.
 */
export async function writeSynthModel(dir: string, shape: SynthShape = DEMO_SHAPE): Promise<void> {
  const { config, specs } = synthPlan(shape);
  // Drawn one tensor at a time, in order, and written as drawn: a multi-GB model never sits in memory whole.
  const rng = new Rng(shape.seed);
  const draw = async (_name: string, i: number): Promise<Float32Array> => {
    const { shape: dims, std, base } = specs[i];
    const n = dims.reduce((a, b) => a * b, 1);
    const data = shape.init === 'uniform' ? uniform(rng, n, std) : normal(rng, n, std);
    if (base) for (let k = 0; k < n; k++) data[k] += base;
    return data;
  };
  const { tokenizer, config: tokConfig } = synthTokenizer(shape.vocabSize);
  await writeDirAtomic(dir, async (tmp) => {
    fs.writeFileSync(path.join(tmp, 'config.json'), JSON.stringify(config, null, 2) + '\n');
    await writeSafetensorsStreaming(path.join(tmp, 'model.safetensors'), specs.map((t) => ({ name: t.name, shape: t.shape, dtype: shape.dtype })), draw, { format: 'pt' });
    fs.writeFileSync(path.join(tmp, 'tokenizer.json'), JSON.stringify(tokenizer));
    fs.writeFileSync(path.join(tmp, 'tokenizer_config.json'), JSON.stringify(tokConfig, null, 2) + '\n');
    fs.writeFileSync(path.join(tmp, 'README.md'), DEMO_MODEL_MARKER + '\n\nRandom weights (seeded) written by `domlora make-demo-model`; ' +
      'a stand-in for a real checkpoint in the demo and tests.\n');
  });
}

/** The first line of a demo model's README.md: how `--force` knows a folder is one DomLoRA wrote (runtime/outputs.ts). */
export const DEMO_MODEL_MARKER = '# DomLoRA demo model';

/** Arithmetic question/answer records in the `qa` shape, deterministic by seed, written to `file`. */
export function synthDataset(file: string, count = 96, seed = 7): void {
  writeFileAtomic(file, synthDatasetText(count, seed));
}

/** The text synthDataset writes: JSON Lines, so an existing file can be recognised as ours by its content. */
export function synthDatasetText(count = 96, seed = 7): string {
  const rng = new Rng(seed);
  const lines: string[] = [];
  for (let i = 0; i < count; i++) {
    const a = rng.nextInt(50), b = rng.nextInt(50);
    const op = rng.nextInt(2);
    const question = op === 0 ? `What is ${a} plus ${b}?` : `What is ${a + b} minus ${b}?`;
    const answer = op === 0 ? `${a} plus ${b} is ${a + b}.` : `${a + b} minus ${b} is ${a}.`;
    lines.push(JSON.stringify({ question, answer }));
  }
  return lines.join('\n') + '\n';
}
