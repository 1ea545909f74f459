// Qwen 3: Qwen's layer without the q/k/v biases (attention_bias, off by default) and with RMSNorm over head_dim on
// every query and key head, before RoPE. head_dim defaults to 128, not hidden / heads.
import { extend } from './types';
import { llama, decoderConfig } from './llama';
import { qwenWindows } from './qwen2';

export const qwen3 = extend(llama, {
  modelType: 'qwen3',
  hfClass: 'Qwen3ForCausalLM',
  tensors: { norms: { q: 'self_attn.q_norm', k: 'self_attn.k_norm' } },
  config: { defaults: { ...llama.config.defaults, maxPos: 32768, headDim: 128 }, slidingWindows: qwenWindows },
  synth: {
    config: (s, hd) => ({ ...decoderConfig(s, hd), attention_bias: false, use_sliding_window: false, sliding_window: null, max_window_layers: s.layers }),
  },
  ollama: false,
});
