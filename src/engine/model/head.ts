// The ends of the decoder: token (and GPT-2's position) embeddings in, and out the final norm, the LM head and the
// cross-entropy at the supervised positions, fused and in chunks so the [tokens, vocab] logits never exist at once.
// Its backward is computed in the same pass: dL/dlogits = (softmax - onehot) / S, then through the head and the norm.
import * as tf from '@tensorflow/tfjs-core';
import type { ModelConfig } from '../hf/config';
import { badInput } from '../runtime/errors';
import { read, type Steps } from '../runtime/jobs';
import { normBackward, normForward } from './norm';
import type { Norm, NormCache } from './types';

/**
 * A slice of a [V, H] table, vocabulary rows start .. start + Vp. A table larger than one GPU binding (the embedding
 * and head of a 128k-vocabulary model are 0.5-2 GB in f32; WebGPU binds 128 MiB to a few GiB) is held in parts; on
 * CPU backends there is one part.
 */
export interface VocabPart {
  start: number;
  rows: tf.Tensor2D; // [Vp, H]
  /** The head's transpose [H, Vp], what the logits multiply by. */
  cols?: tf.Tensor2D;
}

/** The tensors outside the layers. */
export interface EndWeights {
  embed: VocabPart[];
  /** The output head's parts (the embedding's rows themselves when tied), with their transposes. */
  head: VocabPart[];
  finalNorm: Norm;
  /** Learned absolute position embeddings [maxPos, H] (GPT-2). */
  positions?: tf.Tensor2D;
}

/** Token rows of a table in parts: one gather per part that holds any of the ids, scattered into place. [T, H] */
function gatherRows(parts: VocabPart[], ids: number[], H: number): tf.Tensor2D {
  if (parts.length === 1) return tf.gather(parts[0].rows, tf.tensor1d(ids, 'int32')) as tf.Tensor2D;
  const out: tf.Tensor2D[] = [];
  for (const p of parts) {
    const end = p.start + p.rows.shape[0];
    const at: number[] = [], local: number[] = [];
    ids.forEach((id, t) => { if (id >= p.start && id < end) { at.push(t); local.push(id - p.start); } });
    if (!at.length) continue;
    const rows = tf.gather(p.rows, tf.tensor1d(local, 'int32'));
    out.push(tf.scatterND(tf.tensor2d(at, [at.length, 1], 'int32'), rows, [ids.length, H]) as tf.Tensor2D);
  }
  return (out.length === 1 ? out[0] : tf.addN(out)) as tf.Tensor2D;
}

export interface HeadPass { loss: number; tokens: number; dHidden?: tf.Tensor2D }

/** Token embeddings (times Gemma's sqrt(H)), plus GPT-2's learned position embeddings. [T, H] */
export function embedTokens(cfg: ModelConfig, w: EndWeights, ids: number[]): tf.Tensor2D {
  const T = ids.length;
  if (w.positions && T > cfg.maxPositionEmbeddings) {
    throw badInput(`a record of ${T} tokens is longer than this model's ${cfg.maxPositionEmbeddings} positions; lower --seq-len`);
  }
  return tf.tidy(() => {
    let x = gatherRows(w.embed, ids, cfg.hiddenSize);
    if (cfg.embedScale !== 1) x = tf.mul(x, cfg.embedScale) as tf.Tensor2D;
    if (w.positions) x = tf.add(x, tf.slice(w.positions, [0, 0], [T, -1])) as tf.Tensor2D;
    return x;
  });
}

/** Logits from final-normed hidden states; Gemma 2 soft-caps them. Returns tanh(logits / cap) too when capped. */
function headLogits(cfg: ModelConfig, w: EndWeights, h: tf.Tensor2D): { logits: tf.Tensor2D; th?: tf.Tensor2D } {
  const parts = w.head.map((p) => tf.matMul(h, p.cols!) as tf.Tensor2D); // [n, Vp] each
  const logits = parts.length === 1 ? parts[0] : tf.concat(parts, 1) as tf.Tensor2D; // [n, V]
  const cap = cfg.finalSoftcap;
  if (!cap) return { logits };
  const th = tf.tanh(tf.div(logits, cap)) as tf.Tensor2D;
  return { logits: tf.mul(th, cap) as tf.Tensor2D, th };
}

/** dL/dh from dL/dlogits [n, V]: through each part of the head. [n, H] */
function headBackward(w: EndWeights, dLogits: tf.Tensor2D): tf.Tensor2D {
  if (w.head.length === 1) return tf.matMul(dLogits, w.head[0].rows) as tf.Tensor2D;
  const n = dLogits.shape[0];
  return tf.addN(w.head.map((p) => tf.matMul(tf.slice(dLogits, [0, p.start], [n, p.rows.shape[0]]), p.rows))) as tf.Tensor2D;
}

/** Final norm + LM head logits at the given positions [P, V] (evaluation outputs, not training). */
export function logitsAt(cfg: ModelConfig, w: EndWeights, hidden: tf.Tensor2D, positions: number[]): tf.Tensor2D {
  return tf.tidy(() => {
    const h = tf.gather(hidden, tf.tensor1d(positions, 'int32')) as tf.Tensor2D;
    return headLogits(cfg, w, normForward(cfg, h, w.finalNorm).y).logits;
  });
}

/** Rows of logits the head computes at once: about 32 MiB of [rows, vocab] float32, at most 256 rows. */
export function headChunkRows(rows: number, vocab: number): number {
  return Math.max(1, Math.min(rows, Math.floor((32 * 1024 * 1024) / (4 * vocab)) || 1, 256));
}

/**
 * Final norm, LM head and cross-entropy at the supervised positions only, as steps, one per chunk of positions (a
 * large vocabulary makes each chunk a long one). Returns the record's mean loss and, when asked, dL/d(hidden) [T, H].
 */
export function* headLossSteps(cfg: ModelConfig, w: EndWeights, hidden: tf.Tensor2D, ids: number[], mask: number[], wantGrad: boolean): Steps<HeadPass> {
  const T = hidden.shape[0];
  const pos: number[] = [], tgt: number[] = [];
  for (let t = 1; t < T; t++) if (mask[t]) { pos.push(t - 1); tgt.push(ids[t]); }
  const S = pos.length;
  if (S === 0) throw new Error('record has no supervised tokens');
  const V = cfg.vocabSize;
  const chunk = headChunkRows(S, V);
  const lossParts: tf.Scalar[] = [];
  const dParts: tf.Tensor2D[] = [];
  const held: tf.Tensor[] = []; // disposed at the end, on a throw, or when the steps are stopped
  try {
    const posT = tf.tensor1d(pos, 'int32');
    held.push(posT);
    const hS = tf.tidy(() => tf.gather(hidden, posT) as tf.Tensor2D); // [S, H]
    held.push(hS);
    const normed = tf.tidy(() => { const o = normForward(cfg, hS, w.finalNorm); return o.c.mu ? { y: o.y, r: o.c.r, mu: o.c.mu } : { y: o.y, r: o.c.r }; });
    held.push(...Object.values(normed) as tf.Tensor[]);
    const nS = normed.y as tf.Tensor2D;
    const cS: NormCache = { x: hS, r: normed.r as tf.Tensor2D, mu: normed.mu as tf.Tensor2D | undefined };
    for (let c0 = 0; c0 < S; c0 += chunk) {
      if (c0 > 0) yield;
      const c1 = Math.min(S, c0 + chunk);
      const n = c1 - c0;
      const res = tf.tidy(() => {
        const h = tf.slice(nS, [c0, 0], [n, -1]) as tf.Tensor2D;
        const { logits, th } = headLogits(cfg, w, h); // [n, V]
        const lse = tf.logSumExp(logits, 1, true); // [n, 1]
        const tIdx = tf.tensor1d(tgt.slice(c0, c1).map((t, i) => i * V + t), 'int32');
        const picked = tf.gather(tf.reshape(logits, [-1]), tIdx); // [n]
        const loss = tf.sum(tf.sub(tf.reshape(lse, [-1]), picked));
        if (!wantGrad) return { loss };
        // tfjs-wasm 4.22's OneHot writes int bits into float32 outputs (1 becomes 1.4e-45): build it as int32, then cast.
        const onehot = tf.cast(tf.oneHot(tf.tensor1d(tgt.slice(c0, c1), 'int32'), V), 'float32');
        let dLogits = tf.div(tf.sub(tf.exp(tf.sub(logits, lse)), onehot), S) as tf.Tensor2D; // [n, V]
        if (th) dLogits = tf.mul(dLogits, tf.sub(1, tf.square(th))) as tf.Tensor2D; // through cap * tanh(z / cap)
        return { loss, dh: headBackward(w, dLogits) }; // [n, H]
      });
      lossParts.push(res.loss as tf.Scalar);
      if (res.dh) dParts.push(res.dh);
    }
    // One read for the whole record (a GPU read waits for the queue): the chunks' sums, added up in double precision.
    const sums = tf.stack(lossParts);
    held.push(sums);
    let lossSum = 0;
    for (const v of yield* read(sums)) lossSum += v;
    let dHidden: tf.Tensor2D | undefined;
    if (wantGrad) {
      dHidden = tf.tidy(() => {
        const dnS = dParts.length === 1 ? dParts[0] : tf.concat(dParts, 0); // [S, H]
        const dhS = normBackward(dnS, cS, w.finalNorm);
        return tf.scatterND(tf.reshape(posT, [S, 1]), dhS, [T, cfg.hiddenSize]) as tf.Tensor2D;
      });
    }
    return { loss: lossSum / S, tokens: S, dHidden };
  } finally {
    // Also when stopped between chunks (a cancel) or on a throw.
    tf.dispose([...lossParts, ...dParts, ...held]);
  }
}
