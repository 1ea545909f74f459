// A frozen linear module with an optional LoRA path and a tap, forward and backward:
//   y = x W^T (+ b) (+ s (x A^T) B^T)
//   dx = Delta W (+ s (Delta B) A);  dB = s Delta^T (x A^T);  dA = s (Delta B)^T x
// The tap sees (x, Delta) before anything else: that is all PAGE needs. The frozen W never gets a gradient.
import * as tf from '@tensorflow/tfjs-core';
import { TRANSPOSE_BLOCK_BYTES } from '../runtime/estimate';
import type { BackwardContext, Linear, LoraAdapter, LoraGrads } from './types';

/** Forward. Records each adapted module's LoRA input (x A^T [T, r]) in `loraIn` when the backward will need it. */
export function linearForward(lin: Linear, x: tf.Tensor2D, adapters: Map<string, LoraAdapter> | undefined,
  loraIn?: Map<string, tf.Tensor2D>): tf.Tensor2D {
  let y: tf.Tensor2D = tf.matMul(x, lin.wt); // [T, d_out]
  if (lin.bias) y = tf.add(y, lin.bias) as tf.Tensor2D;
  const ad = adapters?.get(lin.name);
  if (ad) {
    const xa = tf.matMul(x, ad.at); // [T, r]
    if (loraIn) loraIn.set(lin.name, tf.keep(xa) as tf.Tensor2D);
    y = tf.add(y, tf.mul(tf.matMul(xa, ad.bt), ad.scale)) as tf.Tensor2D;
  }
  return y;
}

/**
 * Backward of one linear module: returns dx = Delta W (+ the LoRA path) when `needDx`, and accumulates the LoRA
 * gradients into ctx.loraGrads.
 */
export function linearBackward(lin: Linear, x: tf.Tensor2D, delta: tf.Tensor2D, ctx: BackwardContext,
  loraIn: Map<string, tf.Tensor2D>, needDx: boolean): tf.Tensor2D | undefined {
  ctx.tap?.(lin, x, delta);
  const ad = ctx.adapters?.get(lin.name);
  let dXa: tf.Tensor2D | undefined;
  if (ad) {
    const xa = loraIn.get(lin.name)!; // [T, r]
    dXa = tf.mul(tf.matMul(delta, ad.b), ad.scale) as tf.Tensor2D; // [T, r]
    if (ctx.loraGrads) {
      const db = tf.mul(tf.matMul(tf.transpose(delta), xa), ad.scale) as tf.Tensor2D; // [d_out, r]
      const da = tf.matMul(tf.transpose(dXa), x) as tf.Tensor2D; // [r, d_in]
      accumulate(ctx.loraGrads, lin.name, da, db);
    }
  }
  if (!needDx) return undefined;
  let dx = lin.w ? tf.matMul(delta, lin.w) as tf.Tensor2D : timesTransposed(delta, lin.wt); // [T, d_in]
  if (ad && dXa) dx = tf.add(dx, tf.matMul(dXa, ad.a)) as tf.Tensor2D; // [T, d_in]
  return dx;
}

/**
 * delta W for a linear kept in one layout (a streamed layer when memory is short): wt [d_in, d_out] is transposed a
 * block of its rows at a time, each block multiplied and freed at once. Freed at once, not at the end of the caller's
 * tidy: kept there, every module's transpose and its packed copy would pile up until the layer's backward ends, a
 * second copy of the layer (issue #13: an 8B-shaped layer's backward reached the 4 GiB wasm heap). In blocks: a whole
 * 235 MB transpose and its packed copy (a few KB larger), freed and allocated again module after module, record after
 * record, between the activations, fragment the heap (its allocator cannot move blocks); blocks fit more holes.
 */
export function timesTransposed(delta: tf.Tensor2D, wt: tf.Tensor2D, blockBytes = TRANSPOSE_BLOCK_BYTES): tf.Tensor2D {
  const [dIn, dOut] = wt.shape;
  const rows = Math.max(1, Math.floor(blockBytes / (4 * dOut)));
  const parts: tf.Tensor2D[] = [];
  try {
    for (let r0 = 0; r0 < dIn; r0 += rows) {
      const n = Math.min(rows, dIn - r0);
      const w = tf.tidy(() => tf.transpose(n === dIn ? wt : tf.slice(wt, [r0, 0], [n, dOut])) as tf.Tensor2D); // [d_out, n]
      try {
        parts.push(tf.matMul(delta, w)); // [T, n]
      } finally {
        w.dispose();
      }
    }
    return parts.length === 1 ? parts.splice(0)[0] : tf.concat(parts, 1) as tf.Tensor2D;
  } finally {
    tf.dispose(parts);
  }
}

/** Sums a record's LoRA gradients into the batch's (kept past the layer's tf.tidy). */
function accumulate(acc: Map<string, LoraGrads>, name: string, da: tf.Tensor2D, db: tf.Tensor2D): void {
  const prev = acc.get(name);
  if (!prev) {
    acc.set(name, { da: tf.keep(da), db: tf.keep(db) });
  } else {
    acc.set(name, { da: tf.keep(tf.add(prev.da, da) as tf.Tensor2D), db: tf.keep(tf.add(prev.db, db) as tf.Tensor2D) });
    prev.da.dispose();
    prev.db.dispose();
  }
}
