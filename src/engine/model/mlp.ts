// The MLP block, forward and backward: gated (act(gate) * up, with gate and up separate or fused as Phi-3's
// gate_up_proj) or plain (act(fc)), then the down projection. Activations: SiLU, tanh-GELU, exact (erf) GELU, each
// with its derivative written out.
import * as tf from '@tensorflow/tfjs-core';
import type { ModelConfig } from '../hf/config';
import { linearBackward, linearForward } from './linear';
import type { BackwardContext, BackwardStop, LayerContext, LayerWeights, LoraAdapter } from './types';

const SQRT_2_OVER_PI = Math.sqrt(2 / Math.PI);

/** What the MLP backward needs, kept from the forward. */
export interface MlpCache {
  h2: tf.Tensor2D; // normed input of the MLP [T, H]
  g: tf.Tensor2D; // gate pre-activation (or fc's output, for a plain MLP) [T, I]
  u?: tf.Tensor2D; // up [T, I] (gated MLPs)
  act: tf.Tensor2D; // act(g) * u (or act(g)), the input of down_proj [T, I]
}

/** The MLP's activation. */
export function activation(cfg: ModelConfig, g: tf.Tensor2D): tf.Tensor2D {
  if (cfg.hiddenAct === 'gelu') return tf.mul(tf.mul(g, 0.5), tf.add(tf.erf(tf.mul(g, Math.SQRT1_2)), 1)) as tf.Tensor2D;
  if (cfg.hiddenAct === 'gelu_tanh') {
    // 0.5 g (1 + tanh(sqrt(2/pi) (g + 0.044715 g^3)))
    const t = tf.tanh(tf.mul(tf.add(g, tf.mul(tf.pow(g, 3), 0.044715)), SQRT_2_OVER_PI));
    return tf.mul(tf.mul(g, 0.5), tf.add(t, 1)) as tf.Tensor2D;
  }
  return tf.mul(g, tf.sigmoid(g)) as tf.Tensor2D;
}

/** act(g) and act'(g) together (backward needs both; they share the sigmoid or the tanh). */
export function activationWithGrad(cfg: ModelConfig, g: tf.Tensor2D): { a: tf.Tensor2D; da: tf.Tensor2D } {
  if (cfg.hiddenAct === 'gelu') {
    // g Phi(g): d/dg = Phi(g) + g phi(g), Phi(g) = (1 + erf(g / sqrt 2)) / 2, phi(g) = exp(-g^2 / 2) / sqrt(2 pi)
    const cdf = tf.mul(tf.add(tf.erf(tf.mul(g, Math.SQRT1_2)), 1), 0.5);
    const pdf = tf.mul(tf.exp(tf.mul(tf.square(g), -0.5)), 1 / Math.sqrt(2 * Math.PI));
    return { a: tf.mul(g, cdf) as tf.Tensor2D, da: tf.add(cdf, tf.mul(g, pdf)) as tf.Tensor2D };
  }
  if (cfg.hiddenAct === 'gelu_tanh') {
    const g2 = tf.square(g);
    const t = tf.tanh(tf.mul(tf.mul(g, tf.add(tf.mul(g2, 0.044715), 1)), SQRT_2_OVER_PI));
    const dInner = tf.mul(tf.add(tf.mul(g2, 3 * 0.044715), 1), SQRT_2_OVER_PI);
    const halfG = tf.mul(g, 0.5);
    // d/dg: 0.5 (1 + t) + 0.5 g (1 - t^2) * inner'
    const da = tf.add(tf.mul(tf.add(t, 1), 0.5), tf.mul(tf.mul(halfG, tf.sub(1, tf.square(t))), dInner)) as tf.Tensor2D;
    return { a: tf.mul(halfG, tf.add(t, 1)) as tf.Tensor2D, da };
  }
  const sig = tf.sigmoid(g);
  return { a: tf.mul(g, sig) as tf.Tensor2D, da: tf.mul(sig, tf.add(1, tf.mul(g, tf.sub(1, sig)))) as tf.Tensor2D };
}

/** Forward from the normed input h2 [T, H] to the down projection's output [T, H]; `keep()` as attentionForward's. */
export function mlpForward(c: LayerContext, L: LayerWeights, h2: tf.Tensor2D, adapters: Map<string, LoraAdapter> | undefined,
  loraIn?: Map<string, tf.Tensor2D>): { out: tf.Tensor2D; keep(): MlpCache } {
  const R = c.roles;
  let g: tf.Tensor2D, u: tf.Tensor2D | undefined;
  if (R.gateUp) {
    const gu = linearForward(L.linears[R.gateUp], h2, adapters, loraIn); // [T, 2I]: gate, then up
    [g, u] = tf.split(gu, 2, 1) as tf.Tensor2D[];
  } else if (R.fc) {
    g = linearForward(L.linears[R.fc], h2, adapters, loraIn); // [T, I]
  } else {
    g = linearForward(L.linears[R.gate!], h2, adapters, loraIn); // [T, I]
    u = linearForward(L.linears[R.up!], h2, adapters, loraIn); // [T, I]
  }
  let act = activation(c.cfg, g);
  if (u) act = tf.mul(act, u) as tf.Tensor2D; // act(gate) * up
  const out = linearForward(L.linears[R.down], act, adapters, loraIn); // [T, H]
  return { out, keep: () => ({ h2: tf.keep(h2), g: tf.keep(g), act: tf.keep(act), ...(u ? { u: tf.keep(u) } : {}) }) };
}

/** Backward from dL/d(down's output) [T, H] to dL/dh2 [T, H]; undefined when the pass stops here. */
export function mlpBackward(c: LayerContext, L: LayerWeights, dOut: tf.Tensor2D, cache: MlpCache, loraIn: Map<string, tf.Tensor2D>,
  ctx: BackwardContext, stop: BackwardStop): tf.Tensor2D | undefined {
  const R = c.roles;
  const dAct = linearBackward(L.linears[R.down], cache.act, dOut, ctx, loraIn, true)!; // [T, I]
  if (stop.done(R.down)) return undefined;
  const { a: actG, da: dActG } = activationWithGrad(c.cfg, cache.g);
  let dh2: tf.Tensor2D;
  if (cache.u) {
    const dg = tf.mul(tf.mul(dAct, cache.u), dActG) as tf.Tensor2D;
    const du = tf.mul(dAct, actG) as tf.Tensor2D;
    if (R.gateUp) {
      dh2 = linearBackward(L.linears[R.gateUp], cache.h2, tf.concat([dg, du], 1) as tf.Tensor2D, ctx, loraIn, true)!;
    } else {
      const dhGate = linearBackward(L.linears[R.gate!], cache.h2, dg, ctx, loraIn, true)!;
      const dhUp = linearBackward(L.linears[R.up!], cache.h2, du, ctx, loraIn, true)!;
      dh2 = tf.add(dhGate, dhUp) as tf.Tensor2D;
    }
  } else {
    dh2 = linearBackward(L.linears[R.fc!], cache.h2, tf.mul(dAct, dActG) as tf.Tensor2D, ctx, loraIn, true)!;
  }
  if (stop.done(R.gate, R.up, R.gateUp, R.fc)) return undefined;
  return dh2;
}
