// A frozen linear module with an optional LoRA path and a tap, forward and backward:
//   y = x W^T (+ b) (+ s (x A^T) B^T)
//   dx = Delta W (+ s (Delta B) A);  dB = s Delta^T (x A^T);  dA = s (Delta B)^T x
// The tap sees (x, Delta) before anything else: that is all PAGE needs. The frozen W never gets a gradient.
//
// W is kept as W^T ([in, out]) in blocks of its output columns (types.ts Linear): y is the concatenation of the blocks'
// products. dx = Delta W is the sum over blocks of Delta_k W_k, with W_k the block's [n_k, in] rows when both layouts
// are kept; with one layout, (dx)^T = sum_k W^T_k Delta_k^T: the weight is the left operand, so nothing of it is
// transposed or copied per use (on wasm XNNPACK packs the right operand, here the small Delta_k^T, not the weight).
import * as tf from '@tensorflow/tfjs-core';
import type { BackwardContext, Linear, LoraAdapter, LoraGrads } from './types';

/**
 * Uploads one module's weight, read from its file as f32 in the stored layout ([out, in] for nn.Linear, [in, out] for
 * GPT-2's Conv1D), as W^T's column blocks of at most `blockBytes` (runtime/estimate.ts WEIGHT_BLOCK_BYTES for
 * streamed layers), and W's row blocks when `both`. Only a block at a time is made on the backend beside what is
 * kept: a whole 8B-sized module (235 MB) and its transpose would be two large buffers freed and allocated again layer
 * after layer, which fragments a wasm heap whose allocator cannot move them. On a throw, nothing of it stays uploaded.
 */
export function uploadLinear(data: Float32Array, dIn: number, dOut: number, storedAsInOut: boolean, both: boolean,
  blockBytes = Infinity): { wt: tf.Tensor2D[]; w?: tf.Tensor2D[] } {
  // As many blocks as the size needs, of equal widths (no one-column tail block).
  const blocks = Math.ceil(dOut / Math.max(1, Math.min(dOut, Math.floor(blockBytes / (4 * dIn)))));
  const cols = Math.ceil(dOut / blocks);
  const wt: tf.Tensor2D[] = [], w: tf.Tensor2D[] = [];
  try {
    for (let o0 = 0; o0 < dOut; o0 += cols) {
      const n = Math.min(cols, dOut - o0);
      if (storedAsInOut) {
        // [in, out] stored: the block's columns, row by row.
        const part = n === dOut ? data : new Float32Array(dIn * n);
        if (part !== data) for (let i = 0; i < dIn; i++) part.set(data.subarray(i * dOut + o0, i * dOut + o0 + n), i * n);
        const t = tf.tensor2d(part, [dIn, n]);
        wt.push(t);
        if (both) w.push(tf.transpose(t));
      } else {
        // [out, in] stored: the block's rows are contiguous.
        const rows = tf.tensor2d(n === dOut ? data : data.subarray(o0 * dIn, (o0 + n) * dIn), [n, dIn]);
        if (both) w.push(rows); // freed with the others on a throw
        try {
          wt.push(tf.transpose(rows));
        } finally {
          if (!both) rows.dispose();
        }
      }
    }
  } catch (err) {
    tf.dispose([...wt, ...w]);
    throw err;
  }
  return { wt, w: both ? w : undefined };
}

/** Forward. Records each adapted module's LoRA input (x A^T [T, r]) in `loraIn` when the backward will need it. */
export function linearForward(lin: Linear, x: tf.Tensor2D, adapters: Map<string, LoraAdapter> | undefined,
  loraIn?: Map<string, tf.Tensor2D>): tf.Tensor2D {
  let y = concatFreeing(lin.wt.map((b) => tf.matMul(x, b))); // [T, d_out]
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
  let dx = timesW(delta, lin); // [T, d_in]
  if (ad && dXa) dx = tf.add(dx, tf.matMul(dXa, ad.a)) as tf.Tensor2D; // [T, d_in]
  return dx;
}

/** Delta W [T, d_in], summed over the blocks; each partial product freed as soon as it is added. */
export function timesW(delta: tf.Tensor2D, lin: Pick<Linear, 'wt' | 'w'>): tf.Tensor2D {
  const T = delta.shape[0];
  const one = lin.wt.length === 1;
  let acc: tf.Tensor2D | undefined;
  let o0 = 0;
  for (let k = 0; k < lin.wt.length; k++) {
    const n = lin.wt[k].shape[1];
    const part = tf.tidy(() => {
      const d = one ? delta : tf.slice(delta, [0, o0], [T, n]); // [T, n]
      // Both layouts: Delta_k W_k [T, d_in]. One: W^T_k Delta_k^T [d_in, T], transposed once at the end.
      return lin.w ? tf.matMul(d, lin.w[k]) : tf.matMul(lin.wt[k], tf.transpose(d));
    }) as tf.Tensor2D;
    o0 += n;
    if (!acc) { acc = part; continue; }
    const sum = tf.add(acc, part) as tf.Tensor2D;
    tf.dispose([acc, part]);
    acc = sum;
  }
  if (lin.w) return acc!;
  const dx = tf.transpose(acc!) as tf.Tensor2D;
  acc!.dispose();
  return dx;
}

/** Concatenates the blocks' products along their columns and frees them at once (not at the caller's tidy's end). */
function concatFreeing(parts: tf.Tensor2D[]): tf.Tensor2D {
  if (parts.length === 1) return parts[0];
  const y = tf.concat(parts, 1) as tf.Tensor2D;
  tf.dispose(parts);
  return y;
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
