// The embedded default: a small Llama folder and a dataset that DomLoRA writes itself, deterministically, so the
// demo and the end-to-end tests need no third-party weights. The weights are random (seeded), the tokenizer is a
// character-level SentencePiece-style BPE with byte fallback, and the data is arithmetic question/answer pairs that
// a few hundred training steps can visibly learn.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Rng } from '../runtime/rng';
import { encodeSafetensors, TensorToWrite } from './safetensors';
import { writeDirAtomic, writeFileAtomic } from '../runtime/atomic';
import type { ModelType } from './config';

export interface SynthShape {
  hiddenSize: number; intermediateSize: number; layers: number; heads: number; kvHeads: number; vocabSize: number;
  tied: boolean; seed: number; headDim?: number; dtype?: 'F32' | 'F16' | 'BF16'; attentionBias?: boolean;
  /** The architecture (default llama): its weight names, its extra tensors and its config keys. */
  arch?: ModelType;
  /** Standard deviation of the token embeddings (default 0.5). Real checkpoints are near 0.02, which starts the loss
   *  near ln(vocab) instead of far above it. */
  embedStd?: number;
  /** Merged into config.json last (sliding_window, rope_scaling, soft-capping values, ...). */
  config?: Record<string, unknown>;
  /** GPT-2 only: store the base model's tensors without the `transformer.` prefix, as the original checkpoints do. */
  unprefixed?: boolean;
}

export const DEMO_SHAPE: SynthShape = { hiddenSize: 96, intermediateSize: 256, layers: 6, heads: 6, kvHeads: 2, vocabSize: 384, tied: true, seed: 1234, embedStd: 0.02 };

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

/**
 * Writes a random model folder (config, weights, tokenizer) of the given shape and architecture. Atomic: the folder
 * appears whole. Weights are N(0, 1/d_in) so activations stay of order one.
 */
export async function writeSynthModel(dir: string, shape: SynthShape = DEMO_SHAPE): Promise<void> {
  const rng = new Rng(shape.seed);
  const arch = shape.arch ?? 'llama';
  const H = shape.hiddenSize, I = shape.intermediateSize, hd = shape.headDim ?? H / shape.heads;
  const q = shape.heads * hd, kv = shape.kvHeads * hd;
  const tensors: TensorToWrite[] = [];
  const add = (name: string, dims: number[], std: number, base = 0) => {
    const n = dims.reduce((a, b) => a * b, 1);
    const data = normal(rng, n, std);
    if (base) for (let i = 0; i < n; i++) data[i] += base;
    tensors.push({ name, shape: dims, data, dtype: shape.dtype });
  };
  // Gemma stores norm weights as offsets from 1 (it multiplies by 1 + w).
  const gemma = arch === 'gemma2' || arch === 'gemma3_text';
  const normW = (name: string, n: number) => add(name, [n], 0.1, gemma ? 0 : 1);
  if (arch === 'gpt2') {
    const pre = shape.unprefixed ? '' : 'transformer.';
    const maxPos = Number(shape.config?.n_positions ?? 256);
    add(`${pre}wte.weight`, [shape.vocabSize, H], shape.embedStd ?? 0.5);
    add(`${pre}wpe.weight`, [maxPos, H], 0.1);
    for (let l = 0; l < shape.layers; l++) {
      const p = `${pre}h.${l}`;
      // Conv1D weights are stored [in, out].
      const conv = (name: string, dIn: number, dOut: number) => { add(`${name}.weight`, [dIn, dOut], 1 / Math.sqrt(dIn)); add(`${name}.bias`, [dOut], 0.02); };
      normW(`${p}.ln_1.weight`, H); add(`${p}.ln_1.bias`, [H], 0.05);
      conv(`${p}.attn.c_attn`, H, 3 * H);
      conv(`${p}.attn.c_proj`, H, H);
      normW(`${p}.ln_2.weight`, H); add(`${p}.ln_2.bias`, [H], 0.05);
      conv(`${p}.mlp.c_fc`, H, I);
      conv(`${p}.mlp.c_proj`, I, H);
    }
    normW(`${pre}ln_f.weight`, H); add(`${pre}ln_f.bias`, [H], 0.05);
  } else if (arch === 'gpt_neox') {
    // GPTNeoXForCausalLM: nn.Linear [out, in] with biases (attention's unless attention_bias is false), LayerNorms
    // with biases, query_key_value holding [q, k, v] per head (the layout is the engine's business, not ours).
    const bias = neoxAttentionBias(shape);
    const linear = (name: string, dIn: number, dOut: number, withBias: boolean) => {
      add(`${name}.weight`, [dOut, dIn], 1 / Math.sqrt(dIn));
      if (withBias) add(`${name}.bias`, [dOut], 0.02);
    };
    add('gpt_neox.embed_in.weight', [shape.vocabSize, H], shape.embedStd ?? 0.5);
    for (let l = 0; l < shape.layers; l++) {
      const p = `gpt_neox.layers.${l}`;
      normW(`${p}.input_layernorm.weight`, H); add(`${p}.input_layernorm.bias`, [H], 0.05);
      normW(`${p}.post_attention_layernorm.weight`, H); add(`${p}.post_attention_layernorm.bias`, [H], 0.05);
      linear(`${p}.attention.query_key_value`, H, 3 * H, bias);
      linear(`${p}.attention.dense`, H, H, bias);
      linear(`${p}.mlp.dense_h_to_4h`, H, I, true);
      linear(`${p}.mlp.dense_4h_to_h`, I, H, true);
    }
    normW('gpt_neox.final_layer_norm.weight', H); add('gpt_neox.final_layer_norm.bias', [H], 0.05);
  } else {
    add('model.embed_tokens.weight', [shape.vocabSize, H], shape.embedStd ?? 0.5);
    for (let l = 0; l < shape.layers; l++) {
      const p = `model.layers.${l}`;
      normW(`${p}.input_layernorm.weight`, H);
      if (arch === 'phi3') {
        add(`${p}.self_attn.qkv_proj.weight`, [q + 2 * kv, H], 1 / Math.sqrt(H));
      } else {
        add(`${p}.self_attn.q_proj.weight`, [q, H], 1 / Math.sqrt(H));
        add(`${p}.self_attn.k_proj.weight`, [kv, H], 1 / Math.sqrt(H));
        add(`${p}.self_attn.v_proj.weight`, [kv, H], 1 / Math.sqrt(H));
      }
      if (shape.attentionBias || arch === 'qwen2') {
        // Qwen's biases are large in trained checkpoints; here large enough that dropping them changes the loss.
        const bstd = arch === 'qwen2' ? 0.3 : 0.02;
        add(`${p}.self_attn.q_proj.bias`, [q], bstd);
        add(`${p}.self_attn.k_proj.bias`, [kv], bstd);
        add(`${p}.self_attn.v_proj.bias`, [kv], bstd);
      }
      if (arch === 'qwen3' || arch === 'gemma3_text') {
        // Per-head RMSNorms over head_dim on q and k, before RoPE (Gemma 3's are offsets from 1 as well).
        normW(`${p}.self_attn.q_norm.weight`, hd);
        normW(`${p}.self_attn.k_norm.weight`, hd);
      }
      add(`${p}.self_attn.o_proj.weight`, [H, q], 1 / Math.sqrt(q));
      normW(`${p}.post_attention_layernorm.weight`, H);
      if (gemma) {
        normW(`${p}.pre_feedforward_layernorm.weight`, H);
        normW(`${p}.post_feedforward_layernorm.weight`, H);
      }
      if (arch === 'phi3') {
        add(`${p}.mlp.gate_up_proj.weight`, [2 * I, H], 1 / Math.sqrt(H));
      } else {
        add(`${p}.mlp.gate_proj.weight`, [I, H], 1 / Math.sqrt(H));
        add(`${p}.mlp.up_proj.weight`, [I, H], 1 / Math.sqrt(H));
      }
      add(`${p}.mlp.down_proj.weight`, [H, I], 1 / Math.sqrt(I));
    }
    normW('model.norm.weight', H);
  }
  // GPT-NeoX calls its (untied) output projection embed_out.
  if (!shape.tied) add(arch === 'gpt_neox' ? 'embed_out.weight' : 'lm_head.weight', [shape.vocabSize, H], 1 / Math.sqrt(H));
  const config = { ...synthConfig(arch, shape, hd), ...shape.config };
  const { tokenizer, config: tokConfig } = synthTokenizer(shape.vocabSize);
  await writeDirAtomic(dir, (tmp) => {
    fs.writeFileSync(path.join(tmp, 'config.json'), JSON.stringify(config, null, 2) + '\n');
    fs.writeFileSync(path.join(tmp, 'model.safetensors'), encodeSafetensors(tensors, { format: 'pt' }));
    fs.writeFileSync(path.join(tmp, 'tokenizer.json'), JSON.stringify(tokenizer));
    fs.writeFileSync(path.join(tmp, 'tokenizer_config.json'), JSON.stringify(tokConfig, null, 2) + '\n');
    fs.writeFileSync(path.join(tmp, 'README.md'), '# DomLoRA demo model\n\nRandom weights (seeded) written by `domlora make-demo-model`; ' +
      'a stand-in for a real checkpoint in the demo and tests.\n');
  });
}

/** GPT-NeoX's attention biases: on unless the shape (or its config override) says attention_bias false. */
function neoxAttentionBias(shape: SynthShape): boolean {
  return shape.attentionBias ?? (shape.config?.attention_bias === undefined ? true : Boolean(shape.config.attention_bias));
}

/** config.json as transformers writes it for each architecture (its own class name and keys). */
function synthConfig(arch: ModelType, shape: SynthShape, hd: number): Record<string, unknown> {
  const H = shape.hiddenSize;
  const common = { vocab_size: shape.vocabSize, tie_word_embeddings: shape.tied, bos_token_id: 1, eos_token_id: 2, torch_dtype: 'float32' };
  const decoder = {
    hidden_size: H, intermediate_size: shape.intermediateSize, num_hidden_layers: shape.layers, num_attention_heads: shape.heads,
    num_key_value_heads: shape.kvHeads, head_dim: hd, max_position_embeddings: 1024, rms_norm_eps: 1e-5, rope_theta: 10000.0,
    rope_scaling: null, hidden_act: 'silu', ...common,
  };
  switch (arch) {
    case 'llama':
      return { architectures: ['LlamaForCausalLM'], model_type: 'llama', ...decoder, attention_bias: Boolean(shape.attentionBias), mlp_bias: false };
    case 'mistral':
      return { architectures: ['MistralForCausalLM'], model_type: 'mistral', ...decoder, sliding_window: null };
    case 'qwen2':
      return { architectures: ['Qwen2ForCausalLM'], model_type: 'qwen2', ...decoder, use_sliding_window: false, sliding_window: 4096, max_window_layers: shape.layers };
    case 'qwen3':
      return { architectures: ['Qwen3ForCausalLM'], model_type: 'qwen3', ...decoder, attention_bias: false, use_sliding_window: false, sliding_window: null, max_window_layers: shape.layers };
    case 'phi3':
      return { architectures: ['Phi3ForCausalLM'], model_type: 'phi3', ...decoder, sliding_window: null, original_max_position_embeddings: 1024 };
    case 'gemma2': {
      const { hidden_act: _act, ...rest } = decoder;
      return {
        architectures: ['Gemma2ForCausalLM'], model_type: 'gemma2', ...rest, hidden_activation: 'gelu_pytorch_tanh', rms_norm_eps: 1e-6,
        query_pre_attn_scalar: hd, attn_logit_softcapping: 50.0, final_logit_softcapping: 30.0, sliding_window: 4096,
      };
    }
    case 'gemma3_text': {
      // Gemma3TextConfig as Gemma3ForCausalLM checkpoints write it: no soft-capping, q_norm / k_norm, every
      // sliding_window_pattern-th layer full attention (rope_theta, rope_scaling), the others sliding
      // (rope_local_base_freq, no scaling). No layer_types here, so that sliding_window_pattern decides unless a test
      // passes layer_types in shape.config.
      const { hidden_act: _act, ...rest } = decoder;
      return {
        architectures: ['Gemma3ForCausalLM'], model_type: 'gemma3_text', ...rest, hidden_activation: 'gelu_pytorch_tanh', rms_norm_eps: 1e-6,
        attention_bias: Boolean(shape.attentionBias), query_pre_attn_scalar: hd, attn_logit_softcapping: null, final_logit_softcapping: null,
        sliding_window: 4096, sliding_window_pattern: 6, rope_theta: 1000000.0, rope_local_base_freq: 10000.0,
      };
    }
    case 'gpt2':
      return {
        architectures: ['GPT2LMHeadModel'], model_type: 'gpt2', n_embd: H, n_layer: shape.layers, n_head: shape.heads, n_inner: shape.intermediateSize,
        n_positions: 256, n_ctx: 256, activation_function: 'gelu_new', layer_norm_epsilon: 1e-5, ...common,
      };
    case 'gpt_neox':
      // As Pythia's config.json: no num_key_value_heads or head_dim (head_dim = hidden / heads), RoPE over the first
      // rotary_pct of each head, attention and MLP in parallel, exact (erf) GELU.
      return {
        architectures: ['GPTNeoXForCausalLM'], model_type: 'gpt_neox', hidden_size: H, intermediate_size: shape.intermediateSize,
        num_hidden_layers: shape.layers, num_attention_heads: shape.heads, max_position_embeddings: 1024, layer_norm_eps: 1e-5,
        rotary_pct: 0.25, rotary_emb_base: 10000, use_parallel_residual: true, hidden_act: 'gelu', attention_bias: neoxAttentionBias(shape),
        attention_dropout: 0.0, hidden_dropout: 0.0, rope_scaling: null, ...common,
      };
  }
}

/** Arithmetic question/answer records in the `qa` shape, deterministic by seed. */
export function synthDataset(file: string, count = 96, seed = 7): void {
  const rng = new Rng(seed);
  const lines: string[] = [];
  for (let i = 0; i < count; i++) {
    const a = rng.nextInt(50), b = rng.nextInt(50);
    const op = rng.nextInt(2);
    const question = op === 0 ? `What is ${a} plus ${b}?` : `What is ${a + b} minus ${b}?`;
    const answer = op === 0 ? `${a} plus ${b} is ${a + b}.` : `${a + b} minus ${b} is ${a}.`;
    lines.push(JSON.stringify({ question, answer }));
  }
  writeFileAtomic(file, lines.join('\n') + '\n');
}
