// Granite (3.x dense): Llama's layer with four scalars from the config, as transformers' modular_granite.py applies
// them: the token embeddings times embedding_multiplier, each block's output (attention's, MLP's) times
// residual_multiplier before its residual add, attention scores times attention_multiplier in place of
// 1/sqrt(head_dim), and the logits divided by logits_scaling. GraniteConfig's defaults are 1.0 for all four.
import { extend } from './types';
import { llama } from './llama';

export const granite = extend(llama, {
  modelType: 'granite',
  hfClass: 'GraniteForCausalLM',
  config: {
    flags: (c) => ({
      ...llama.config.flags(c),
      embedScale: c.num('embedding_multiplier', 1),
      residualScale: c.num('residual_multiplier', 1),
      attnScale: c.num('attention_multiplier', 1),
      logitScale: c.num('logits_scaling', 1),
    }),
  },
  synth: {
    // As Granite 3.x's config.json files; the multipliers are those of granite-3.1-2b-base.
    config: (s, hd) => ({
      ...llama.synth.config(s, hd), rms_norm_eps: 1e-5, embedding_multiplier: 12.0, residual_multiplier: 0.22,
      attention_multiplier: 0.015625, logits_scaling: 8.0,
    }),
  },
  ollama: false,
});
