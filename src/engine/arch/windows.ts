// Which layers attend through a sliding window, as each architecture's transformers config decides it.
import { badInput } from '../runtime/errors';
import type { ConfigReader } from './types';

/** The config's sliding_window: a positive integer, or null for none. `fallback` when the key is absent. */
export function windowSize(c: ConfigReader, fallback: number | null = null): number | null {
  const sw = c.raw.sliding_window === undefined ? fallback : c.raw.sliding_window;
  if (sw === null || sw === undefined) return null;
  if (typeof sw !== 'number' || !Number.isInteger(sw) || sw <= 0) {
    throw badInput(`"sliding_window" must be a positive integer or null, got ${JSON.stringify(sw)}`, c.file);
  }
  return sw;
}

/** transformers v4.5x+'s layer_types, when the config lists them: sliding_attention layers get the window. */
export function fromLayerTypes(c: ConfigReader, sw: number): (number | null)[] | undefined {
  const layerTypes = c.raw.layer_types;
  if (!Array.isArray(layerTypes)) return undefined;
  if (layerTypes.length !== c.numLayers) throw badInput(`"layer_types" has ${layerTypes.length} entries for ${c.numLayers} layers`, c.file);
  return layerTypes.map((t) => (t === 'sliding_attention' ? sw : null));
}

/** Mistral and Phi-3: the window, when set, applies to every layer. */
export function everyLayer(c: ConfigReader): (number | null)[] {
  const sw = windowSize(c);
  if (sw === null) return new Array(c.numLayers).fill(null);
  return fromLayerTypes(c, sw) ?? new Array(c.numLayers).fill(sw);
}

/** A window from a rule over layer indices, with layer_types taking precedence when present. */
export function byLayer(c: ConfigReader, sw: number | null, rule: (l: number) => boolean): (number | null)[] {
  if (sw === null) return new Array(c.numLayers).fill(null);
  return fromLayerTypes(c, sw) ?? Array.from({ length: c.numLayers }, (_, l) => (rule(l) ? sw : null));
}
