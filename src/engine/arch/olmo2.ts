// OLMo 2: Llama's projections and MLP with the norms moved after the blocks, as transformers' modeling_olmo2.py has
// them. No norm before attention or before the MLP; post_attention_layernorm normalises the attention's output and
// post_feedforward_layernorm the MLP's, each before its residual add. q_norm and k_norm are RMSNorms over the whole
// q and k projections (num_heads x head_dim and num_key_value_heads x head_dim wide), applied before the heads are
// split and before RoPE. attention_bias puts biases on q, k, v and o; the MLP has none.
import { extend } from './types';
import { llama, decoderConfig } from './llama';

export const olmo2 = extend(llama, {
  modelType: 'olmo2',
  hfClass: 'Olmo2ForCausalLM',
  tensors: {
    norms: {
      input: undefined, preMlp: undefined, attnOut: 'post_attention_layernorm', mlpOut: 'post_feedforward_layernorm',
      q: 'self_attn.q_norm', k: 'self_attn.k_norm', qkOver: 'projection',
    },
  },
  config: {
    // Olmo2Config's defaults: rms_norm_eps 1e-5, 2048 positions, an untied head.
    defaults: { ...llama.config.defaults, eps: 1e-5 },
    flags: (c) => ({ ...llama.config.flags(c), mlpBias: false }),
  },
  synth: {
    // As OLMo 2's config.json files: no mlp_bias key, rms_norm_eps 1e-6, rope_theta 500000.
    config: (s, hd) => ({ ...decoderConfig(s, hd), attention_bias: Boolean(s.attentionBias), rms_norm_eps: 1e-6, rope_theta: 500000 }),
    biases: (cfg) => ({ attn: Boolean(cfg.attention_bias), o: Boolean(cfg.attention_bias), mlp: false }),
  },
  ollama: false,
});
