// One decoder layer, composed of its parts (the way llm.c's gpt2_forward strings its *_forward calls):
//   x2 = x + s * [attnOutNorm](attention([inputNorm](x)))
//   y  = x2 + s * [mlpOutNorm](mlp([preMlpNorm](x2)))     (GPT-NeoX's parallel residual: preMlpNorm(x), and y = x2 + mlp)
// and its backward in reverse. A norm in brackets is there when the architecture has it (OLMo 2 has only the output
// norms); s is Granite's residual_multiplier, 1 elsewhere. One flag-driven layer serves every architecture; the flags
// come from ../arch.
import * as tf from '@tensorflow/tfjs-core';
import { attentionBackward, attentionForward, type AttentionCache } from './attention';
import { mlpBackward, mlpForward, type MlpCache } from './mlp';
import { keepNorm, normBackward, normForward } from './norm';
import type { BackwardContext, BackwardStop, LayerContext, LayerWeights, LoraAdapter, NormCache } from './types';

/** Everything the layer's backward needs: what the forward kept. */
export interface LayerCache extends AttentionCache, MlpCache {
  n1?: NormCache; // input norm (x = the layer input [T, H])
  an?: NormCache; // norm of o_proj's output [T, H] (Gemma 2, OLMo 2)
  n2?: NormCache; // pre-MLP norm (x = residual after attention [T, H], or a copy of the layer input when parallel)
  mn?: NormCache; // norm of down_proj's output [T, H] (Gemma 2)
  /** Inputs of LoRA paths (x @ A^T), per adapted module name. */
  loraIn: Map<string, tf.Tensor2D>;
}

/** One layer forward. Returns the output and, when `keepCache`, everything the backward needs (kept). */
export function layerForward(c: LayerContext, l: number, L: LayerWeights, x: tf.Tensor2D,
  adapters: Map<string, LoraAdapter> | undefined, keepCache: boolean): { out: tf.Tensor2D; cache?: LayerCache } {
  const { cfg } = c;
  const loraIn = keepCache ? new Map<string, tf.Tensor2D>() : undefined;
  let cache: LayerCache | undefined;
  const rs = cfg.residualScale;
  const out = tf.tidy(() => {
    const n1 = L.inputNorm ? normForward(cfg, x, L.inputNorm) : undefined;
    // Without an input norm the attention reads the layer input itself: a clone (the same buffer), so that what the
    // cache keeps is its own handle and freeing the cache never frees the caller's tensor.
    const attn = attentionForward(c, l, L, n1 ? n1.y : x.clone(), adapters, loraIn);
    let attOut = attn.out;
    let an: ReturnType<typeof normForward> | undefined;
    if (L.attnOutNorm) { an = normForward(cfg, attOut, L.attnOutNorm); attOut = an.y; }
    if (rs !== 1) attOut = tf.mul(attOut, rs) as tf.Tensor2D;
    const x2 = tf.add(x, attOut) as tf.Tensor2D;
    // Parallel residual (GPT-NeoX): the MLP reads the layer's input, not the attention's output.
    const mlpIn = cfg.parallelResidual ? x : x2;
    const n2 = L.preMlpNorm ? normForward(cfg, mlpIn, L.preMlpNorm) : undefined;
    const mlp = mlpForward(c, L, n2 ? n2.y : mlpIn.clone(), adapters, loraIn);
    let mlpOut = mlp.out;
    let mn: ReturnType<typeof normForward> | undefined;
    if (L.mlpOutNorm) { mn = normForward(cfg, mlpOut, L.mlpOutNorm); mlpOut = mn.y; }
    if (rs !== 1) mlpOut = tf.mul(mlpOut, rs) as tf.Tensor2D;
    const y = tf.add(x2, mlpOut) as tf.Tensor2D;
    if (loraIn) {
      cache = {
        ...attn.keep(), ...mlp.keep(), loraIn,
        ...(n1 ? { n1: keepNorm(n1.c, true) } : {}),
        ...(n2 ? { n2: keepNorm(n2.c, cfg.parallelResidual) } : {}),
        ...(an ? { an: keepNorm(an.c) } : {}),
        ...(mn ? { mn: keepNorm(mn.c) } : {}),
      };
    }
    return y;
  });
  return { out, cache };
}

/**
 * One layer backward given dL/d(output); returns dL/d(input). At the lowest layer of a pass (`ctx.needInputGrad`
 * false) it stops as soon as every module in `ctx.lowestKinds` has been seen, and returns undefined: nothing below
 * needs a gradient.
 */
export function layerBackward(c: LayerContext, kinds: readonly string[], L: LayerWeights, l: number, dy: tf.Tensor2D,
  cache: LayerCache, ctx: BackwardContext): tf.Tensor2D | undefined {
  const { cfg } = c;
  const full = ctx.needInputGrad !== false;
  const left = new Set(full ? kinds : (ctx.lowestKinds ?? kinds));
  const stop: BackwardStop = {
    full,
    done: (...ks) => { for (const k of ks) if (k) left.delete(k); return !full && left.size === 0; },
  };
  const rs = cfg.residualScale;
  return tf.tidy(() => {
    const dMlpScaled = rs !== 1 ? tf.mul(dy, rs) as tf.Tensor2D : dy;
    const dMlpOut = cache.mn ? normBackward(dMlpScaled, cache.mn, L.mlpOutNorm!) : dMlpScaled;
    const dh2 = mlpBackward(c, L, dMlpOut, cache, cache.loraIn, ctx, stop);
    if (!dh2) return undefined;
    const dx2 = tf.add(dy, cache.n2 ? normBackward(dh2, cache.n2, L.preMlpNorm!) : dh2) as tf.Tensor2D;
    // Parallel residual: the attention's output reaches y directly (dy); dx2 already carries the MLP's path to x.
    const dAttIn = cfg.parallelResidual ? dy : dx2;
    const dAttScaled = rs !== 1 ? tf.mul(dAttIn, rs) as tf.Tensor2D : dAttIn;
    const dAttOut = cache.an ? normBackward(dAttScaled, cache.an, L.attnOutNorm!) : dAttScaled;
    const dh1 = attentionBackward(c, l, L, dAttOut, cache, cache.loraIn, ctx, stop);
    if (!dh1) return undefined;
    return tf.add(dx2, cache.n1 ? normBackward(dh1, cache.n1, L.inputNorm!) : dh1) as tf.Tensor2D;
  });
}

/** Frees a layer's cache. */
export function disposeCache(c: LayerCache): void {
  const all: tf.Tensor[] = [...c.loraIn.values()];
  for (const v of Object.values(c)) {
    if (v instanceof tf.Tensor) all.push(v);
    else if (v && typeof v === 'object' && 'r' in v) all.push(...Object.values(v as NormCache).filter((t): t is tf.Tensor2D => t instanceof tf.Tensor));
  }
  tf.dispose(all);
}
