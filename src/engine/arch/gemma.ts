// Gemma (1): Llama's layer with a tanh-GELU gated MLP (GeGLU), RMSNorm scaling by (1 + w), the token embeddings
// multiplied by sqrt(hidden_size) (rounded to float32, as transformers' normalizer), head_dim 256 by default and tied
// embeddings.
import { extend } from './types';
import { llama, decoderConfig } from './llama';

export const gemma = extend(llama, {
  modelType: 'gemma',
  hfClass: 'GemmaForCausalLM',
  config: {
    // transformers 4.4x reads hidden_activation and, when it is absent, uses gelu_pytorch_tanh whatever hidden_act
    // says (Gemma's config.json files carry "hidden_act": "gelu" beside "hidden_activation": "gelu_pytorch_tanh").
    keys: { ...llama.config.keys, act: ['hidden_activation'] },
    defaults: { ...llama.config.defaults, tied: true, act: 'gelu_pytorch_tanh', maxPos: 8192, headDim: 256 },
    flags: (c) => ({ ...llama.config.flags(c), normOffset: 1, embedScale: Math.fround(Math.sqrt(c.hiddenSize)) }),
  },
  synth: {
    config: (s, hd) => ({ ...decoderConfig(s, hd), hidden_act: 'gelu', hidden_activation: 'gelu_pytorch_tanh', rms_norm_eps: 1e-6, attention_bias: false }),
  },
});
