// Gemma 2: Gemma's layer with norms on the attention and MLP outputs too (before each residual add), attention and
// final-logit soft-capping, query_pre_attn_scalar in place of head_dim in the attention scale, and a sliding window on
// every even layer (4096 tokens unless the config says otherwise).
import { extend } from './types';
import { llama, decoderConfig } from './llama';
import { gemma } from './gemma';
import { byLayer, windowSize } from './windows';

export const gemma2 = extend(gemma, {
  modelType: 'gemma2',
  hfClass: 'Gemma2ForCausalLM',
  tensors: { norms: { attnOut: 'post_attention_layernorm', preMlp: 'pre_feedforward_layernorm', mlpOut: 'post_feedforward_layernorm' } },
  config: {
    keys: { ...gemma.config.keys, act: ['hidden_activation', 'hidden_act'] },
    flags: (c) => ({
      ...gemma.config.flags(c),
      attnScale: 1 / Math.sqrt(c.num('query_pre_attn_scalar', 256)),
      attnSoftcap: c.optNum('attn_logit_softcapping', 50),
      finalSoftcap: c.optNum('final_logit_softcapping', 30),
    }),
    // Gemma 2 alternates: local (sliding) attention on even layers, global on odd ones.
    slidingWindows: (c) => byLayer(c, windowSize(c, 4096), (l) => l % 2 === 0),
  },
  synth: {
    config: (s, hd) => {
      const { hidden_act: _act, ...rest } = decoderConfig(s, hd);
      return {
        ...rest, hidden_activation: 'gelu_pytorch_tanh', rms_norm_eps: 1e-6, query_pre_attn_scalar: hd,
        attn_logit_softcapping: 50.0, final_logit_softcapping: 30.0, sliding_window: 4096,
      };
    },
    biases: llama.synth.biases,
  },
});
