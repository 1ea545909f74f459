// GPT-NeoX and Pythia: one query_key_value projection holding [q, k, v] per head (not three blocks), a plain GELU MLP
// (exact erf GELU), LayerNorm with biases, RoPE over rotary_pct of each head (0.25 by default, with its own
// rotary_emb_base), attention and MLP side by side on the same input (use_parallel_residual), an untied embed_out.
import { extend } from './types';
import { llama, windowsNone } from './llama';

export const gpt_neox = extend(llama, {
  modelType: 'gpt_neox',
  hfClass: 'GPTNeoXForCausalLM',
  modules: {
    kinds: ['query_key_value', 'dense', 'dense_h_to_4h', 'dense_4h_to_h'],
    paths: {
      query_key_value: 'attention.query_key_value', dense: 'attention.dense',
      dense_h_to_4h: 'mlp.dense_h_to_4h', dense_4h_to_h: 'mlp.dense_4h_to_h',
    },
    layerPrefix: 'gpt_neox.layers',
    roles: { qkv: 'query_key_value', o: 'dense', fc: 'dense_h_to_4h', down: 'dense_4h_to_h' },
  },
  tensors: {
    embed: 'gpt_neox.embed_in.weight', finalNorm: 'gpt_neox.final_layer_norm', head: 'embed_out.weight',
    norms: { input: 'input_layernorm', preMlp: 'post_attention_layernorm' },
  },
  config: {
    keys: { ...llama.config.keys, eps: 'layer_norm_eps', ropeTheta: 'rotary_emb_base', partialRotary: 'rotary_pct' },
    defaults: { tied: false, eps: 1e-5, act: 'gelu', maxPos: 2048, partialRotary: 0.25 },
    partialRotary: true,
    flags: (c) => ({
      ...llama.config.flags(c), normType: 'layernorm',
      parallelResidual: c.raw.use_parallel_residual !== false, qkvPerHead: true,
      attentionBias: Boolean(c.raw.attention_bias ?? true), mlpBias: true,
    }),
    slidingWindows: windowsNone,
  },
  biases: (f) => ({ attn: f.attentionBias, o: f.attentionBias, mlp: true }),
  synth: {
    // As Pythia's config.json: no num_key_value_heads or head_dim (head_dim = hidden / heads).
    config: (s) => ({
      hidden_size: s.hiddenSize, intermediate_size: s.intermediateSize, num_hidden_layers: s.layers, num_attention_heads: s.heads,
      max_position_embeddings: 1024, layer_norm_eps: 1e-5, rotary_pct: 0.25, rotary_emb_base: 10000, use_parallel_residual: true,
      hidden_act: 'gelu', attention_bias: s.attentionBias ?? (s.config?.attention_bias === undefined ? true : Boolean(s.config.attention_bias)),
      attention_dropout: 0.0, hidden_dropout: 0.0, rope_scaling: null,
      vocab_size: s.vocabSize, tie_word_embeddings: s.tied, bos_token_id: 1, eos_token_id: 2, torch_dtype: 'float32',
    }),
    biases: (cfg) => ({ attn: Boolean(cfg.attention_bias ?? true), o: Boolean(cfg.attention_bias ?? true), mlp: true }),
  },
  ollama: false,
});
