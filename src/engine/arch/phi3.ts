// Phi-3 and Phi-4-mini: q, k, v fused into qkv_proj and gate, up into gate_up_proj (split after the matmul; PEFT, and
// so we, adapt the fused modules), a sliding window on every layer when set, and RoPE over partial_rotary_factor of
// each head (Phi-4-mini: 0.75).
import { extend } from './types';
import { llama } from './llama';
import { everyLayer } from './windows';

export const phi3 = extend(llama, {
  modelType: 'phi3',
  hfClass: 'Phi3ForCausalLM',
  modules: {
    kinds: ['qkv_proj', 'o_proj', 'gate_up_proj', 'down_proj'],
    paths: { qkv_proj: 'self_attn.qkv_proj', o_proj: 'self_attn.o_proj', gate_up_proj: 'mlp.gate_up_proj', down_proj: 'mlp.down_proj' },
    roles: { qkv: 'qkv_proj', o: 'o_proj', gateUp: 'gate_up_proj', down: 'down_proj' },
  },
  config: { defaults: { ...llama.config.defaults, eps: 1e-5, maxPos: 4096 }, partialRotary: true, slidingWindows: everyLayer },
  // Phi-3's fused projections have no biases.
  biases: () => ({ attn: false, o: false, mlp: false }),
  synth: { config: (s, hd) => ({ ...llama.synth.config(s, hd), sliding_window: null, original_max_position_embeddings: 1024 }) },
});
