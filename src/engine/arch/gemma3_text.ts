// Gemma 3 (text): Gemma 2's layer with per-head q/k norms (times 1 + w) before RoPE and no attention soft-cap
// (transformers keeps attn_logit_softcapping but never applies it; the final cap only when set). Every
// sliding_window_pattern-th layer (6 by default) is global and rotates with rope_theta and any rope_scaling; the others
// are local, with their own unscaled base, rope_local_base_freq.
import { badInput } from '../runtime/errors';
import { extend } from './types';
import { gemma2 } from './gemma2';
import { decoderConfig } from './llama';
import { byLayer, windowSize } from './windows';

export const gemma3_text = extend(gemma2, {
  modelType: 'gemma3_text',
  hfClass: 'Gemma3ForCausalLM',
  tensors: { norms: { q: 'self_attn.q_norm', k: 'self_attn.k_norm' } },
  config: {
    defaults: { ...gemma2.config.defaults, maxPos: 131072 },
    flags: (c) => ({
      ...gemma2.config.flags(c),
      attnSoftcap: null,
      finalSoftcap: c.optNum('final_logit_softcapping', null),
      ropeLocalTheta: c.num('rope_local_base_freq', 10000, c.ropeLocal?.rope_theta),
    }),
    slidingWindows: (c) => {
      if (c.raw.sliding_window === null) throw badInput('"sliding_window" null: Gemma 3\'s sliding layers need a window (transformers cannot build their mask either)', c.file);
      return byLayer(c, windowSize(c, 4096), (l) => {
        const pattern = c.raw.sliding_window_pattern ?? 6;
        if (typeof pattern !== 'number' || !Number.isInteger(pattern) || pattern < 1) throw badInput(`"sliding_window_pattern" must be a positive integer, got ${JSON.stringify(pattern)}`, c.file);
        return (l + 1) % pattern !== 0;
      });
    },
  },
  synth: {
    // Gemma3TextConfig as Gemma3ForCausalLM checkpoints write it. No layer_types here, so that sliding_window_pattern
    // decides unless a test passes layer_types in shape.config.
    config: (s, hd) => {
      const { hidden_act: _act, ...rest } = decoderConfig(s, hd);
      return {
        ...rest, hidden_activation: 'gelu_pytorch_tanh', rms_norm_eps: 1e-6, attention_bias: Boolean(s.attentionBias),
        query_pre_attn_scalar: hd, attn_logit_softcapping: null, final_logit_softcapping: null, sliding_window: 4096,
        sliding_window_pattern: 6, rope_theta: 1000000.0, rope_local_base_freq: 10000.0,
      };
    },
  },
  ollama: false,
});
