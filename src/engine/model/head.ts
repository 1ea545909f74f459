// The ends of the decoder: token (and GPT-2's position) embeddings in, and out the final norm, the LM head and the
// cross-entropy at the supervised positions, fused and in chunks so the [tokens, vocab] logits never exist at once.
// Its backward is computed in the same pass: dL/dlogits = (softmax - onehot) / S, then through the head and the norm.
import * as tf from '@tensorflow/tfjs-core';
import type { ModelConfig } from '../hf/config';
import { badInput } from '../runtime/errors';
import { read, type Steps } from '../runtime/jobs';
import { normBackward, normForward } from './norm';
import type { Norm, NormCache } from './types';
import type { Vocab, VocabPart } from './vocab';

/** The tensors outside the layers. */
export interface EndWeights {
  embed: Vocab;
  /** The output head (the embedding's table itself when tied). */
  head: Vocab;
  finalNorm: Norm;
  /** Learned absolute position embeddings [maxPos, H] (GPT-2). */
  positions?: tf.Tensor2D;
}

export interface HeadPass { loss: number; tokens: number; dHidden?: tf.Tensor2D }

/** Token embeddings (times Gemma's sqrt(H)), plus GPT-2's learned position embeddings. [T, H] */
export function embedTokens(cfg: ModelConfig, w: EndWeights, ids: number[]): tf.Tensor2D {
  const T = ids.length;
  if (w.positions && T > cfg.maxPositionEmbeddings) {
    throw badInput(`a record of ${T} tokens is longer than this model's ${cfg.maxPositionEmbeddings} positions; lower --seq-len`);
  }
  return tf.tidy(() => {
    let x = w.embed.gather(ids);
    if (cfg.embedScale !== 1) x = tf.mul(x, cfg.embedScale) as tf.Tensor2D;
    if (w.positions) x = tf.add(x, tf.slice(w.positions, [0, 0], [T, -1])) as tf.Tensor2D;
    return x;
  });
}

/** Logits from final-normed hidden states; Gemma 2 soft-caps them. Returns tanh(logits / cap) too when capped. */
function headLogits(cfg: ModelConfig, w: EndWeights, h: tf.Tensor2D): { logits: tf.Tensor2D; th?: tf.Tensor2D } {
  const parts = w.head.ranges.map((_, i) => withPart(w.head, i, true, (p) => tf.matMul(h, p.cols!) as tf.Tensor2D)); // [n, Vp] each
  const logits = parts.length === 1 ? parts[0] : tf.concat(parts, 1) as tf.Tensor2D; // [n, V]
  const cap = cfg.finalSoftcap;
  if (!cap) return { logits };
  const th = tf.tanh(tf.div(logits, cap)) as tf.Tensor2D;
  return { logits: tf.mul(th, cap) as tf.Tensor2D, th };
}

/** dL/dh from dL/dlogits [n, V]: through each part of the head. [n, H] */
function headBackward(w: EndWeights, dLogits: tf.Tensor2D): tf.Tensor2D {
  const { ranges } = w.head;
  if (ranges.length === 1) return withPart(w.head, 0, false, (p) => tf.matMul(dLogits, p.rows) as tf.Tensor2D);
  const n = dLogits.shape[0];
  return tf.addN(ranges.map(({ start, count }, i) => withPart(w.head, i, false, (p) => tf.matMul(tf.slice(dLogits, [0, start], [n, count]), p.rows)))) as tf.Tensor2D;
}

/** Runs `fn` with part i of a table on the backend (uploaded for the call when the table is streamed). */
function withPart<T>(v: Vocab, i: number, cols: boolean, fn: (p: VocabPart) => T): T {
  const p = v.part(i, cols);
  try {
    return fn(p);
  } finally {
    v.release(p);
  }
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

/** One record for the head of many records: its last hidden state [T, H], its tokens and its loss mask. */
export interface HeadItem { hidden: tf.Tensor2D; ids: number[]; mask: number[] }

/**
 * The head and loss of many records at once, the vocabulary's parts in the outer loop: each part of the head is
 * brought to the backend once for the forward (a running log-sum-exp over the parts, the target's logit picked where
 * it falls) and once more for the backward, whatever the number of records. This is how a streamed head (a 128k
 * vocabulary left in the files) serves a layer-major pass. The record-major headLossSteps is the same maths with the
 * whole vocabulary in one pass per chunk of rows; both agree to f32 rounding.
 */
export function* headLossManySteps(cfg: ModelConfig, w: EndWeights, items: HeadItem[], wantGrad: boolean): Steps<HeadPass[]> {
  const H = cfg.hiddenSize, cap = cfg.finalSoftcap;
  const held: tf.Tensor[] = [];
  const keep = <T extends tf.Tensor>(t: T): T => { held.push(t); return t; };
  try {
    // The supervised rows of every record, final-normed, one after another: row r belongs to record itemOf[r].
    const rowsOf: { pos: number[]; tgt: number[] }[] = items.map(({ ids, mask }) => {
      const pos: number[] = [], tgt: number[] = [];
      for (let t = 1; t < ids.length; t++) if (mask[t]) { pos.push(t - 1); tgt.push(ids[t]); }
      if (!pos.length) throw new Error('record has no supervised tokens');
      return { pos, tgt };
    });
    const normed = items.map((it, i) => {
      const [y, x, r, mu] = tf.tidy(() => {
        const hS = tf.gather(it.hidden, tf.tensor1d(rowsOf[i].pos, 'int32')) as tf.Tensor2D; // [S, H]
        const o = normForward(cfg, hS, w.finalNorm);
        return [o.y, hS, o.c.r, ...(o.c.mu ? [o.c.mu] : [])];
      }) as tf.Tensor2D[];
      return { y, c: { x, r, ...(mu ? { mu } : {}) } as NormCache };
    });
    for (const n of normed) { keep(n.y); keep(n.c.x); keep(n.c.r); if (n.c.mu) keep(n.c.mu); }
    const all = keep(normed.length === 1 ? normed[0].y.clone() : tf.concat(normed.map((n) => n.y), 0) as tf.Tensor2D); // [R, H]
    const targets = rowsOf.flatMap((r) => r.tgt);
    const weights = rowsOf.flatMap((r) => r.tgt.map(() => 1 / r.tgt.length)); // each record's mean over its rows
    const R = targets.length;
    // The single record's chunking (headChunkRows): about 32 MiB of logits at once, which also keeps each binding far
    // under a GPU's limit (lavapipe binds 128 MiB; 256 rows of a 152k vocabulary would be 155 MB).
    const chunk = headChunkRows(R, cfg.vocabSize);
    const chunks: { c0: number; n: number; h: tf.Tensor2D; m: tf.Tensor2D; s: tf.Tensor2D; picked: tf.Tensor1D }[] = [];
    for (let c0 = 0; c0 < R; c0 += chunk) {
      const n = Math.min(chunk, R - c0);
      chunks.push({ c0, n, h: keep(tf.slice(all, [c0, 0], [n, -1]) as tf.Tensor2D), m: keep(tf.fill([n, 1], -Infinity) as tf.Tensor2D),
        s: keep(tf.zeros([n, 1]) as tf.Tensor2D), picked: keep(tf.zeros([n]) as tf.Tensor1D) });
    }
    /** Logits of a chunk against a part [n, Vp], capped, and tanh(z / cap) for the backward when capped. */
    const logitsOf = (h: tf.Tensor2D, cols: tf.Tensor2D): { z: tf.Tensor2D; th?: tf.Tensor2D } => {
      const raw = tf.matMul(h, cols) as tf.Tensor2D;
      if (!cap) return { z: raw };
      const th = tf.tanh(tf.div(raw, cap)) as tf.Tensor2D;
      return { z: tf.mul(th, cap) as tf.Tensor2D, th };
    };
    /** Rows of a chunk whose target falls in the part, as [row, column in the part] pairs. */
    const targetsIn = (c0: number, n: number, start: number, count: number): [number, number][] => {
      const out: [number, number][] = [];
      for (let r = 0; r < n; r++) { const t = targets[c0 + r]; if (t >= start && t < start + count) out.push([r, t - start]); }
      return out;
    };
    // Forward: the running log-sum-exp of every row over the parts, and the target's logit.
    for (let i = 0; i < w.head.ranges.length; i++) {
      if (i > 0) yield;
      const { start, count } = w.head.ranges[i];
      const p = w.head.part(i, true);
      try {
        for (const c of chunks) {
          const [m, s, picked] = tf.tidy(() => {
            const { z } = logitsOf(c.h, p.cols!);
            const m2 = tf.maximum(c.m, tf.max(z, 1, true)) as tf.Tensor2D;
            const s2 = tf.add(tf.mul(c.s, tf.exp(tf.sub(c.m, m2))), tf.sum(tf.exp(tf.sub(z, m2)), 1, true)) as tf.Tensor2D;
            const hits = targetsIn(c.c0, c.n, start, count);
            const got = hits.length
              ? tf.add(c.picked, tf.scatterND(tf.tensor2d(hits.map(([r]) => r), [hits.length, 1], 'int32'),
                tf.gather(tf.reshape(z, [-1]), tf.tensor1d(hits.map(([r, col]) => r * count + col), 'int32')), [c.n])) as tf.Tensor1D
              : c.picked.clone();
            return [m2, s2, got];
          });
          tf.dispose([c.m, c.s, c.picked]);
          Object.assign(c, { m: keep(m), s: keep(s), picked: keep(picked) });
        }
      } finally {
        w.head.release(p);
      }
    }
    const lse = chunks.map((c) => keep(tf.tidy(() => tf.add(c.m, tf.log(c.s)) as tf.Tensor2D))); // [n, 1] per chunk
    const rowLoss = keep(tf.tidy(() => tf.concat(chunks.map((c, k) => tf.sub(tf.reshape(lse[k], [-1]), c.picked)), 0))); // [R]
    const losses = yield* read(rowLoss);
    const dParts = chunks.map((c) => keep(tf.zeros([c.n, H]) as tf.Tensor2D));
    if (wantGrad) {
      // Backward: dL/dz = (softmax - onehot) / S per row, through each part of the head again.
      for (let i = 0; i < w.head.ranges.length; i++) {
        yield;
        const { start, count } = w.head.ranges[i];
        const p = w.head.part(i, true);
        try {
          chunks.forEach((c, k) => {
            const next = tf.tidy(() => {
              const { z, th } = logitsOf(c.h, p.cols!);
              const hits = targetsIn(c.c0, c.n, start, count);
              let dz = tf.exp(tf.sub(z, lse[k])) as tf.Tensor2D;
              if (hits.length) dz = tf.sub(dz, tf.scatterND(tf.tensor2d(hits, [hits.length, 2], 'int32'), tf.ones([hits.length]), [c.n, count])) as tf.Tensor2D;
              dz = tf.mul(dz, tf.tensor2d(weights.slice(c.c0, c.c0 + c.n), [c.n, 1])) as tf.Tensor2D;
              if (th) dz = tf.mul(dz, tf.sub(1, tf.square(th))) as tf.Tensor2D; // through cap * tanh(z / cap)
              return tf.add(dParts[k], tf.matMul(dz, p.rows)) as tf.Tensor2D;
            });
            dParts[k].dispose();
            dParts[k] = keep(next);
          });
        } finally {
          w.head.release(p);
        }
      }
    }
    // Per record: its mean loss (summed in double precision) and dL/d(hidden) [T, H].
    const out: HeadPass[] = [];
    const dAll = wantGrad ? keep(dParts.length === 1 ? dParts[0].clone() : tf.concat(dParts, 0) as tf.Tensor2D) : undefined;
    let r0 = 0;
    items.forEach((it, i) => {
      const S = rowsOf[i].tgt.length;
      let sum = 0;
      for (let r = r0; r < r0 + S; r++) sum += losses[r];
      const dHidden = dAll ? tf.tidy(() => {
        const dhS = normBackward(tf.slice(dAll, [r0, 0], [S, -1]) as tf.Tensor2D, normed[i].c, w.finalNorm);
        return tf.scatterND(tf.tensor2d(rowsOf[i].pos, [S, 1], 'int32'), dhS, [it.hidden.shape[0], H]) as tf.Tensor2D;
      }) : undefined;
      out.push({ loss: sum / S, tokens: S, dHidden });
      r0 += S;
    });
    return out;
  } finally {
    tf.dispose(held);
  }
}
