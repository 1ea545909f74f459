// PAGE, Projected Adapter Gradient Energy (shared/docs/DESIGN.md section 1), for every candidate module.
// One forward and backward pass per record; at every linear module the backward pass hands us its input X [T, d_in]
// and output gradient Delta [T, d_out], from which both quantities follow without any d_out x d_in matrix:
//   sampled  P_m  = || dl/dB ||^2 = s^2 || Delta^T (X A^T) ||^2 = s^2 <U U^T, Delta Delta^T>,  U = X A^T [T, r]
//   expected E[P] = s^2 r / (3 d_in) || Delta^T X ||^2 = s^2 r / (3 d_in) <X X^T, Delta Delta^T>
// The Gram X X^T is shared by modules reading the same input (q, k, v; gate, up).
import * as tf from '@tensorflow/tfjs-core';
import type { ModuleSpec } from '../hf/modules';
import type { TokenizedRecord } from '../data/tokenize';
import { read, runSteps, type Steps, type Values } from '../runtime/jobs';
import type { Decoder } from '../model/decoder';
import type { Linear } from '../model/types';

export interface RecordPage { loss: number; tokens: number; sampled: Float64Array; expected: Float64Array }

/** The probe's core, separated from I/O so tests can call it on a model they built. */
export function pageForRecord(
  model: Decoder, rec: TokenizedRecord, modules: ModuleSpec[],
  aT: Map<string, tf.Tensor2D>, rank: number, scale: number, route: 'auto' | 'gram' | 'direct' = 'auto',
): RecordPage {
  return runSteps(pageForRecordSteps(model, rec, modules, aT, rank, scale, route));
}

/** pageForRecord as steps, one per layer (runStepsAsync: a cancel lands within a layer). */
export function* pageForRecordSteps(
  model: Decoder, rec: TokenizedRecord, modules: ModuleSpec[],
  aT: Map<string, tf.Tensor2D>, rank: number, scale: number, route: 'auto' | 'gram' | 'direct' = 'auto',
): Steps<RecordPage> {
  const index = new Map(modules.map((m, i) => [m.name, i]));
  const sampledT: tf.Scalar[] = new Array(modules.length);
  const expectedT: tf.Scalar[] = new Array(modules.length);
  const xGrams = new Map<number, tf.Tensor2D>(); // by input tensor id: q/k/v and gate/up share theirs
  const tap = (lin: Linear, x: tf.Tensor2D, delta: tf.Tensor2D) => {
    const i = index.get(lin.name);
    if (i === undefined) return;
    const T = x.shape[0];
    const deltaT = tf.transpose(delta) as tf.Tensor2D; // [d_out, T]
    // Sampled: dl/dB = s Delta^T (X A^T), a [d_out, r] product: cheap for any T.
    const dB = tf.matMul(deltaT, tf.matMul(x, aT.get(lin.name)!)); // [d_out, r]
    sampledT[i] = tf.keep(tf.mul(tf.sum(tf.square(dB)), scale * scale));
    // Expected needs ||Delta^T X||^2. Two exact routes: the Gram identity <X X^T, Delta Delta^T>, T^2 (d_in + d_out)
    // (X X^T shared by modules reading the same input), or the product itself, T d_in d_out, summed at once and
    // dropped. Short records favour the Gram route, long ones the product; the product is only formed when small.
    const xg = xGrams.get(x.id);
    const gramCost = T * T * (lin.dOut + (xg ? 0 : lin.dIn));
    const directCost = T * lin.dIn * lin.dOut;
    let energy: tf.Scalar;
    const direct = route === 'auto' ? directCost < gramCost && lin.dIn * lin.dOut <= 16 * 1024 * 1024 : route === 'direct';
    if (direct) {
      energy = tf.sum(tf.square(tf.matMul(deltaT, x))); // ||dl/dW||^2, the [d_out, d_in] product never kept
    } else {
      let gram = xg;
      if (!gram) {
        gram = tf.keep(tf.matMul(x, tf.transpose(x) as tf.Tensor2D)) as tf.Tensor2D; // [T, T]
        xGrams.set(x.id, gram);
      }
      energy = tf.sum(tf.mul(gram, tf.matMul(delta, deltaT))); // <X X^T, Delta Delta^T>
    }
    expectedT[i] = tf.keep(tf.mul(energy, (scale * scale * rank) / (3 * lin.dIn)));
  };
  const lowestLayer = Math.min(...modules.map((m) => m.layer));
  const lowestKinds = [...new Set(modules.filter((m) => m.layer === lowestLayer).map((m) => m.kind))];
  try {
    const pass = yield* model.recordBackwardSteps(rec.inputIds, rec.lossMask, { tap, lowestKinds }, lowestLayer);
    const missing = modules.filter((_, i) => !sampledT[i]);
    if (missing.length) throw new Error(`PAGE: no gradient reached ${missing[0].name}`);
    const both = tf.tidy(() => tf.concat([tf.stack(sampledT), tf.stack(expectedT)]));
    let vals: Values;
    try { vals = yield* read(both); } finally { both.dispose(); }
    const n = modules.length;
    return {
      loss: pass.loss, tokens: pass.tokens,
      sampled: Float64Array.from(vals.subarray(0, n)), expected: Float64Array.from(vals.subarray(n, 2 * n)),
    };
  } finally {
    tf.dispose([...sampledT.filter(Boolean), ...expectedT.filter(Boolean), ...xGrams.values()]);
  }
}

