// RMSNorm and LayerNorm over the last axis, forward and backward (llm.c's layernorm_forward / layernorm_backward):
//   RMSNorm    y = x * rsqrt(mean(x^2) + eps) * w                  (Gemma's 1 + w is folded into w at load)
//   LayerNorm  y = (x - mean) * rsqrt(var + eps) * w + b
import * as tf from '@tensorflow/tfjs-core';
import type { ModelConfig } from '../hf/config';
import type { Norm, NormCache } from './types';

export function normForward(cfg: ModelConfig, x: tf.Tensor2D, n: Norm): { y: tf.Tensor2D; c: NormCache } {
  if (cfg.normType === 'layernorm') {
    const mu = tf.mean(x, 1, true) as tf.Tensor2D; // [T, 1]
    const xc = tf.sub(x, mu);
    const r = tf.rsqrt(tf.add(tf.mean(tf.square(xc), 1, true), cfg.normEps)) as tf.Tensor2D; // [T, 1]
    return { y: tf.add(tf.mul(tf.mul(xc, r), n.w), n.b!) as tf.Tensor2D, c: { x, r, mu } };
  }
  const r = tf.rsqrt(tf.add(tf.mean(tf.square(x), 1, true), cfg.normEps)) as tf.Tensor2D; // [T, 1]
  return { y: tf.mul(tf.mul(x, r), n.w) as tf.Tensor2D, c: { x, r } };
}

/** dL/dx from dL/dy. The weights are frozen: no gradient for w or b. */
export function normBackward(dy: tf.Tensor2D, c: NormCache, n: Norm): tf.Tensor2D {
  const xhat = c.mu ? tf.mul(tf.sub(c.x, c.mu), c.r) : tf.mul(c.x, c.r); // [T, H]
  const dxhat = tf.mul(dy, n.w); // [T, H]
  const dot = tf.mean(tf.mul(dxhat, xhat), 1, true); // [T, 1]
  const centred = c.mu ? tf.sub(dxhat, tf.mean(dxhat, 1, true)) : dxhat;
  return tf.mul(c.r, tf.sub(centred, tf.mul(xhat, dot))) as tf.Tensor2D;
}

/** A norm's cache kept past the tf.tidy that made it (the input cloned when the caller still owns it). */
export function keepNorm(c: NormCache, cloneX = false): NormCache {
  return { x: tf.keep(cloneX ? c.x.clone() : c.x), r: tf.keep(c.r), ...(c.mu ? { mu: tf.keep(c.mu) } : {}) };
}

export function normTensors(n: Norm): tf.Tensor[] {
  return n.b ? [n.w, n.b] : [n.w];
}
