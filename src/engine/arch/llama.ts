// Llama: the base every other decoder here is written against. RMSNorm before attention and before the MLP, RoPE,
// grouped-query attention, a SiLU-gated MLP (gate_proj, up_proj, down_proj), an untied or tied LM head.
import type { ArchDef, ConfigReader, SynthShape } from './types';

/** Llama's config.json keys and transformers' LlamaConfig defaults. */
function windowsNone(c: ConfigReader): (number | null)[] {
  return new Array(c.numLayers).fill(null);
}

/** The keys transformers writes for every Llama-shaped config (the others add theirs). */
export function decoderConfig(shape: SynthShape, headDim: number): Record<string, unknown> {
  return {
    hidden_size: shape.hiddenSize, intermediate_size: shape.intermediateSize, num_hidden_layers: shape.layers,
    num_attention_heads: shape.heads, num_key_value_heads: shape.kvHeads, head_dim: headDim, max_position_embeddings: 1024,
    rms_norm_eps: 1e-5, rope_theta: 10000.0, rope_scaling: null, hidden_act: 'silu',
    vocab_size: shape.vocabSize, tie_word_embeddings: shape.tied, bos_token_id: 1, eos_token_id: 2, torch_dtype: 'float32',
  };
}

export const llama: ArchDef = {
  modelType: 'llama',
  hfClass: 'LlamaForCausalLM',
  modules: {
    kinds: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'],
    paths: {
      q_proj: 'self_attn.q_proj', k_proj: 'self_attn.k_proj', v_proj: 'self_attn.v_proj', o_proj: 'self_attn.o_proj',
      gate_proj: 'mlp.gate_proj', up_proj: 'mlp.up_proj', down_proj: 'mlp.down_proj',
    },
    layerPrefix: 'model.layers',
    roles: { q: 'q_proj', k: 'k_proj', v: 'v_proj', o: 'o_proj', gate: 'gate_proj', up: 'up_proj', down: 'down_proj' },
  },
  tensors: {
    embed: 'model.embed_tokens.weight',
    finalNorm: 'model.norm',
    head: 'lm_head.weight',
    norms: { input: 'input_layernorm', preMlp: 'post_attention_layernorm' },
  },
  config: {
    keys: {
      hidden: 'hidden_size', heads: 'num_attention_heads', kvHeads: 'num_key_value_heads', layers: 'num_hidden_layers',
      intermediate: 'intermediate_size', eps: 'rms_norm_eps', maxPos: 'max_position_embeddings', act: ['hidden_act'],
    },
    defaults: { tied: false, eps: 1e-6, act: 'silu', maxPos: 2048 },
    positions: 'rope',
    partialRotary: false,
    flags: (c) => ({
      normType: 'rms', normOffset: 0, embedScale: 1, attnScale: 1 / Math.sqrt(c.headDim), attnScaleByLayer: false,
      attnSoftcap: null, finalSoftcap: null, residualScale: 1, logitScale: 1, ropeLocalTheta: null, parallelResidual: false, qkvPerHead: false,
      attentionBias: Boolean(c.raw.attention_bias), mlpBias: Boolean(c.raw.mlp_bias),
    }),
    // Llama's attention is always full; the others here add a window.
    slidingWindows: windowsNone,
  },
  // LlamaAttention puts attention_bias on o_proj as well as on q, k and v.
  biases: (f) => ({ attn: f.attentionBias, o: f.attentionBias, mlp: f.mlpBias }),
  synth: {
    config: (shape, hd) => ({ ...decoderConfig(shape, hd), attention_bias: Boolean(shape.attentionBias), mlp_bias: false }),
    biases: (cfg) => ({ attn: Boolean(cfg.attention_bias), o: Boolean(cfg.attention_bias), mlp: Boolean(cfg.mlp_bias) }),
  },
  ollama: true,
};

export { windowsNone };
