// SmolLM3: Llama's layer with no RoPE on the layers `no_rope_layers` marks (NoPE), tied embeddings, and a sliding
// window, when use_sliding_window is set, on the NoPE layers. Transcribed from transformers' configuration_smollm3.py
// and modular_smollm3.py:
//   no_rope_layers: one entry per layer (at least), 1 = rotate, 0 = NoPE; when absent,
//     [int((i + 1) % no_rope_layer_interval != 0) for i in range(num_hidden_layers)], every 4th layer NoPE by default;
//   layer_types: when absent, "sliding_attention" where use_sliding_window and sliding_window are set and the layer
//     has no RoPE, else "full_attention"; SmolLM3Model (Qwen2Model's) masks the sliding_attention layers with
//     sliding_window, whatever use_sliding_window says once layer_types is given.
import { badInput } from '../runtime/errors';
import { extend, type ConfigReader } from './types';
import { llama, decoderConfig } from './llama';
import { fromLayerTypes, windowSize } from './windows';

/** Per layer, whether it rotates (SmolLM3Config's no_rope_layers, or the rule of no_rope_layer_interval). */
function ropeLayers(c: ConfigReader): boolean[] {
  const list = c.raw.no_rope_layers;
  if (list === undefined || list === null) {
    const interval = c.raw.no_rope_layer_interval ?? 4;
    if (typeof interval !== 'number' || !Number.isInteger(interval) || interval < 1) {
      throw badInput(`"no_rope_layer_interval" must be a positive integer, got ${JSON.stringify(interval)}`, c.file);
    }
    return Array.from({ length: c.numLayers }, (_, l) => (l + 1) % interval !== 0);
  }
  // transformers indexes the list by layer: it must cover every layer, and a longer one is read only that far.
  if (!Array.isArray(list) || list.length < c.numLayers || list.some((v) => v !== 0 && v !== 1 && v !== true && v !== false)) {
    throw badInput(`"no_rope_layers" must list 1 (RoPE) or 0 (no RoPE) for each of the ${c.numLayers} layers, got ${JSON.stringify(list)}`, c.file);
  }
  return list.slice(0, c.numLayers).map((v) => Boolean(v));
}

function smollm3Windows(c: ConfigReader): (number | null)[] {
  const sw = windowSize(c);
  if (sw === null) return new Array(c.numLayers).fill(null);
  const rope = ropeLayers(c);
  return fromLayerTypes(c, sw) ?? rope.map((r) => (c.raw.use_sliding_window === true && !r ? sw : null));
}

export const smollm3 = extend(llama, {
  modelType: 'smollm3',
  hfClass: 'SmolLM3ForCausalLM',
  config: {
    // SmolLM3Config's defaults (transformers 4.53, where SmolLM3 arrived): tied, rope_theta 2e6, 32k positions.
    defaults: { ...llama.config.defaults, tied: true, maxPos: 32768, ropeTheta: 2000000 },
    slidingWindows: smollm3Windows,
    ropeLayers,
  },
  synth: {
    // As SmolLM3-3B's config.json: no_rope_layers written out, use_sliding_window off.
    config: (s, hd) => ({
      ...decoderConfig(s, hd), rms_norm_eps: 1e-6, attention_bias: false, mlp_bias: false,
      no_rope_layer_interval: 4, no_rope_layers: Array.from({ length: s.layers }, (_, l) => Number((l + 1) % 4 !== 0)),
      use_sliding_window: false, sliding_window: null,
    }),
  },
  ollama: false,
});
