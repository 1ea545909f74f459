// Mistral: Llama's layer with a sliding attention window on every layer (when the config sets one).
import { extend } from './types';
import { llama } from './llama';
import { everyLayer } from './windows';

export const mistral = extend(llama, {
  modelType: 'mistral',
  hfClass: 'MistralForCausalLM',
  config: { defaults: { ...llama.config.defaults, maxPos: 4096 * 32 }, slidingWindows: everyLayer },
  // MistralAttention has no biases whatever the config says.
  biases: () => ({ attn: false, o: false, mlp: false }),
  synth: { config: (s, hd) => ({ ...llama.synth.config(s, hd), sliding_window: null }) },
});
