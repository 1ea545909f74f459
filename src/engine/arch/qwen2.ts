// Qwen 2 / 2.5: Llama's layer with biases on q, k and v (not on o), and a sliding window only when
// use_sliding_window is set, from layer max_window_layers up.
import { extend, type ConfigReader } from './types';
import { llama, decoderConfig } from './llama';
import { byLayer, windowSize } from './windows';

/** Qwen's config drops sliding_window unless use_sliding_window, whatever layer_types says. */
export function qwenWindows(c: ConfigReader): (number | null)[] {
  const sw = windowSize(c);
  if (sw === null || c.raw.use_sliding_window !== true) return new Array(c.numLayers).fill(null);
  return byLayer(c, sw, (l) => l >= Number(c.raw.max_window_layers ?? 0));
}

export const qwen2 = extend(llama, {
  modelType: 'qwen2',
  hfClass: 'Qwen2ForCausalLM',
  config: {
    defaults: { ...llama.config.defaults, maxPos: 32768 },
    flags: (c) => ({ ...llama.config.flags(c), attentionBias: true }),
    slidingWindows: qwenWindows,
  },
  biases: () => ({ attn: true, o: false, mlp: false }),
  synth: {
    config: (s, hd) => ({ ...decoderConfig(s, hd), use_sliding_window: false, sliding_window: 4096, max_window_layers: s.layers }),
    biases: () => ({ attn: true, o: false, mlp: false }),
    // Qwen's biases are large in trained checkpoints; here large enough that dropping them changes the loss.
    biasStd: 0.3,
  },
  ollama: false,
});
