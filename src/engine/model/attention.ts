// The attention block, forward and backward: the q/k/v projections (or one fused qkv), Qwen 3's and Gemma 3's
// per-head q/k norms (OLMo 2's over the whole projection), RoPE (not on SmolLM3's NoPE layers), causal (and
// sliding-window) softmax attention with grouped key/value heads, Gemma 2's soft-cap, and the output projection.
//
// Grouped-query attention: heads h = g*rep + j share key/value head g (HF repeat_kv), so stacking a group's queries
// as [rep*T, hd] needs no repeat at all. On wasm each group runs as plain 2-D matmuls ('grouped'); on a GPU one
// batched matmul covers the groups ('batched'; runtime/backend.ts attentionShape decides). The softmax backward is
// written out: dS = P * (dP - rowsum(dP * P)).
import * as tf from '@tensorflow/tfjs-core';
import { linearBackward, linearForward } from './linear';
import { normBackward, normForward, keepNorm } from './norm';
import type { BackwardContext, BackwardStop, LayerContext, LayerWeights, LoraAdapter, NormCache } from './types';

/** What the attention backward needs, kept from the forward. */
export interface AttentionCache {
  h1: tf.Tensor2D; // normed input of q, k, v (or qkv) [T, H]
  qn?: NormCache; // q norm, x = q before it [T*nH, hd] (per head) or [T, nH*hd] (over the projection)
  kn?: NormCache; // [T*nKV, hd] or [T, nKV*hd]
  q: tf.Tensor3D; // roped queries, kv-group major [nKV, rep*T, hd]
  k: tf.Tensor3D; // roped keys [nKV, T, hd]
  v: tf.Tensor3D; // values [nKV, T, hd]
  p: tf.Tensor3D; // attention probabilities [nKV, rep*T, T]
  capT?: tf.Tensor3D; // soft-capping: tanh(scores / cap) [nKV, rep*T, T]
  att: tf.Tensor2D; // attention output, the input of o_proj [T, nH*hd]
}

/** The 2-D shape a q/k norm works on for n heads: a row per head ([T*n, hd]), or a row per token ([T, n*hd], OLMo 2). */
function qkNormShape(c: LayerContext, T: number, n: number): [number, number] {
  return c.cfg.qkNorm === 'projection' ? [T, n * c.cfg.headDim] : [T * n, c.cfg.headDim];
}

/** Scores' factor at layer l (1/sqrt(hd), Gemma 2's query_pre_attn_scalar, GPT-2's optional 1/(l+1)). */
function attnScale(c: LayerContext, l: number): number {
  return c.cfg.attnScale / (c.cfg.attnScaleByLayer ? l + 1 : 1);
}

/**
 * Forward from the normed input h1 [T, H] to the output projection's output [T, H]. `keep()` returns the cache for
 * the backward (kept past the caller's tf.tidy); call it only when a backward follows.
 */
export function attentionForward(c: LayerContext, l: number, L: LayerWeights, h1: tf.Tensor2D,
  adapters: Map<string, LoraAdapter> | undefined, loraIn?: Map<string, tf.Tensor2D>): { out: tf.Tensor2D; keep(): AttentionCache } {
  const { cfg, roles: R } = c;
  const T = h1.shape[0];
  const nH = cfg.numHeads, nKV = cfg.numKvHeads, hd = cfg.headDim, rep = nH / nKV;
  let q0: tf.Tensor2D, k0: tf.Tensor2D, v0: tf.Tensor2D;
  if (R.qkv) {
    const qkv = linearForward(L.linears[R.qkv], h1, adapters, loraIn); // [T, (nH + 2 nKV) hd]
    if (cfg.qkvPerHead) {
      // GPT-NeoX: [T, nH, 3 hd], each head's q, k and v side by side.
      [q0, k0, v0] = tf.split(tf.reshape(qkv, [T, nH, 3 * hd]), 3, 2).map((t) => tf.reshape(t, [T, nH * hd])) as tf.Tensor2D[];
    } else {
      [q0, k0, v0] = tf.split(qkv, [nH * hd, nKV * hd, nKV * hd], 1) as tf.Tensor2D[];
    }
  } else {
    q0 = linearForward(L.linears[R.q!], h1, adapters, loraIn); // [T, nH*hd]
    k0 = linearForward(L.linears[R.k!], h1, adapters, loraIn); // [T, nKV*hd]
    v0 = linearForward(L.linears[R.v!], h1, adapters, loraIn); // [T, nKV*hd]
  }
  let qn: { y: tf.Tensor2D; c: NormCache } | undefined, kn: typeof qn;
  if (L.qNorm && L.kNorm) {
    // Every head normed over hd (Qwen 3, Gemma 3), or the whole projection at once (OLMo 2).
    qn = normForward(cfg, tf.reshape(q0, qkNormShape(c, T, nH)), L.qNorm);
    kn = normForward(cfg, tf.reshape(k0, qkNormShape(c, T, nKV)), L.kNorm);
    q0 = qn.y; k0 = kn.y;
  }
  let qr = tf.reshape(q0, [T, nH, hd]) as tf.Tensor3D;
  let kr = tf.reshape(k0, [T, nKV, hd]) as tf.Tensor3D;
  if (cfg.ropeLayers[l]) {
    qr = c.rope.apply(qr, T, false, l);
    kr = c.rope.apply(kr, T, false, l);
  }
  const q = tf.reshape(tf.transpose(qr, [1, 0, 2]), [nKV, rep * T, hd]) as tf.Tensor3D;
  const k = tf.transpose(kr, [1, 0, 2]) as tf.Tensor3D; // [nKV, T, hd]
  const v = tf.transpose(tf.reshape(v0, [T, nKV, hd]), [1, 0, 2]) as tf.Tensor3D; // [nKV, T, hd]
  const scale = attnScale(c, l);
  const cap = cfg.attnSoftcap;
  const mask = c.masks.get(T, cfg.slidingWindows[l]); // [rep*T, T], the same for every group
  let o: tf.Tensor3D, keepP: () => tf.Tensor3D, keepCaps: () => tf.Tensor3D | undefined;
  if (c.attention === 'batched') {
    let s = tf.mul(tf.matMul(q, k, false, true), scale) as tf.Tensor3D; // [nKV, rep*T, T]
    let th: tf.Tensor3D | undefined;
    if (cap) {
      th = tf.tanh(tf.div(s, cap)) as tf.Tensor3D; // Gemma 2: cap * tanh(s / cap), before the mask
      s = tf.mul(th, cap) as tf.Tensor3D;
    }
    const p = tf.softmax(tf.add(s, mask)) as tf.Tensor3D;
    o = tf.matMul(p, v) as tf.Tensor3D; // [nKV, rep*T, hd]
    keepP = () => tf.keep(p);
    keepCaps = () => (th ? tf.keep(th) : undefined);
  } else {
    const kT = tf.transpose(kr, [1, 2, 0]) as tf.Tensor3D; // [nKV, hd, T]
    const qs = tf.unstack(q), kTs = tf.unstack(kT), vs = tf.unstack(v);
    const ps: tf.Tensor2D[] = [], os: tf.Tensor2D[] = [], caps: tf.Tensor2D[] = [];
    for (let g = 0; g < nKV; g++) {
      let s = tf.mul(tf.matMul(qs[g] as tf.Tensor2D, kTs[g] as tf.Tensor2D), scale) as tf.Tensor2D; // [rep*T, T]
      if (cap) {
        const th = tf.tanh(tf.div(s, cap)) as tf.Tensor2D; // Gemma 2: cap * tanh(s / cap), before the mask
        caps.push(th);
        s = tf.mul(th, cap) as tf.Tensor2D;
      }
      const p = tf.softmax(tf.add(s, mask)) as tf.Tensor2D;
      ps.push(p);
      os.push(tf.matMul(p, vs[g] as tf.Tensor2D)); // [rep*T, hd]
    }
    o = tf.stack(os) as tf.Tensor3D; // [nKV, rep*T, hd]
    keepP = () => tf.keep(tf.stack(ps) as tf.Tensor3D);
    keepCaps = () => (caps.length ? tf.keep(tf.stack(caps) as tf.Tensor3D) : undefined);
  }
  const att = tf.reshape(tf.transpose(tf.reshape(o, [nH, T, hd]), [1, 0, 2]), [T, nH * hd]) as tf.Tensor2D;
  const out = linearForward(L.linears[R.o], att, adapters, loraIn); // [T, H]
  return {
    out,
    keep: () => {
      const capT = keepCaps();
      return {
        h1: tf.keep(h1), q: tf.keep(q), k: tf.keep(k), v: tf.keep(v), p: keepP(), att: tf.keep(att),
        ...(qn && kn ? { qn: keepNorm(qn.c), kn: keepNorm(kn.c) } : {}),
        ...(capT ? { capT } : {}),
      };
    },
  };
}

/**
 * Backward from dL/d(output projection's output) [T, H] to dL/dh1 [T, H]; undefined when the pass stops here (the
 * lowest layer's modules all seen, or no input gradient wanted).
 */
export function attentionBackward(c: LayerContext, l: number, L: LayerWeights, dOut: tf.Tensor2D, cache: AttentionCache,
  loraIn: Map<string, tf.Tensor2D>, ctx: BackwardContext, stop: BackwardStop): tf.Tensor2D | undefined {
  const { cfg, roles: R } = c;
  const T = dOut.shape[0];
  const nH = cfg.numHeads, nKV = cfg.numKvHeads, hd = cfg.headDim, rep = nH / nKV;
  const dAtt = linearBackward(L.linears[R.o], cache.att, dOut, ctx, loraIn, true)!; // [T, nH*hd]
  if (stop.done(R.o)) return undefined;
  const dO = tf.reshape(tf.transpose(tf.reshape(dAtt, [T, nH, hd]), [1, 0, 2]), [nKV, rep * T, hd]) as tf.Tensor3D;
  const scale = attnScale(c, l);
  let dq3: tf.Tensor3D, dk3: tf.Tensor3D, dv3: tf.Tensor3D; // [nKV, rep*T, hd], [nKV, T, hd], [nKV, T, hd]
  if (c.attention === 'batched') {
    const p = cache.p;
    const dP = tf.matMul(dO, cache.v, false, true); // [nKV, rep*T, T]
    let dS = tf.mul(p, tf.sub(dP, tf.sum(tf.mul(dP, p), 2, true))) as tf.Tensor3D; // softmax backward
    if (cache.capT) dS = tf.mul(dS, tf.sub(1, tf.square(cache.capT))) as tf.Tensor3D; // through cap * tanh(s / cap)
    dS = tf.mul(dS, scale) as tf.Tensor3D;
    dq3 = tf.matMul(dS, cache.k) as tf.Tensor3D;
    dk3 = tf.matMul(dS, cache.q, true, false) as tf.Tensor3D;
    dv3 = tf.matMul(p, dO, true, false) as tf.Tensor3D;
  } else {
    const dOs = tf.unstack(dO), ps = tf.unstack(cache.p), qs = tf.unstack(cache.q), ks = tf.unstack(cache.k), vs = tf.unstack(cache.v);
    const caps = cache.capT ? tf.unstack(cache.capT) : undefined;
    const dqs: tf.Tensor2D[] = [], dks: tf.Tensor2D[] = [], dvs: tf.Tensor2D[] = [];
    for (let g = 0; g < nKV; g++) {
      const p = ps[g] as tf.Tensor2D, dOg = dOs[g] as tf.Tensor2D;
      const dP = tf.matMul(dOg, tf.transpose(vs[g]) as tf.Tensor2D); // [rep*T, T]
      let dS = tf.mul(p, tf.sub(dP, tf.sum(tf.mul(dP, p), 1, true))) as tf.Tensor2D; // softmax backward
      if (caps) dS = tf.mul(dS, tf.sub(1, tf.square(caps[g]))) as tf.Tensor2D; // through cap * tanh(s / cap)
      dS = tf.mul(dS, scale) as tf.Tensor2D;
      dqs.push(tf.matMul(dS, ks[g] as tf.Tensor2D)); // [rep*T, hd]
      dks.push(tf.matMul(tf.transpose(dS), qs[g] as tf.Tensor2D)); // [T, hd]
      dvs.push(tf.matMul(tf.transpose(p), dOg)); // [T, hd]
    }
    dq3 = tf.stack(dqs) as tf.Tensor3D;
    dk3 = tf.stack(dks) as tf.Tensor3D;
    dv3 = tf.stack(dvs) as tf.Tensor3D;
  }
  let dqr = tf.transpose(tf.reshape(dq3, [nH, T, hd]), [1, 0, 2]) as tf.Tensor3D; // [T, nH, hd]
  let dkr = tf.transpose(dk3, [1, 0, 2]) as tf.Tensor3D; // [T, nKV, hd]
  if (cfg.ropeLayers[l]) {
    dqr = c.rope.apply(dqr, T, true, l);
    dkr = c.rope.apply(dkr, T, true, l);
  }
  let dq = tf.reshape(dqr, qkNormShape(c, T, nH)) as tf.Tensor2D;
  let dk = tf.reshape(dkr, qkNormShape(c, T, nKV)) as tf.Tensor2D;
  if (cache.qn && cache.kn) {
    dq = normBackward(dq, cache.qn, L.qNorm!);
    dk = normBackward(dk, cache.kn, L.kNorm!);
  }
  dq = tf.reshape(dq, [T, nH * hd]);
  dk = tf.reshape(dk, [T, nKV * hd]);
  const dv = tf.reshape(tf.transpose(dv3, [1, 0, 2]), [T, nKV * hd]) as tf.Tensor2D;
  if (R.qkv) {
    const dqkv = cfg.qkvPerHead
      ? tf.reshape(tf.concat([dq, dk, dv].map((t) => tf.reshape(t, [T, nH, hd])), 2), [T, 3 * nH * hd]) as tf.Tensor2D
      : tf.concat([dq, dk, dv], 1) as tf.Tensor2D;
    return linearBackward(L.linears[R.qkv], cache.h1, dqkv, ctx, loraIn, stop.full);
  }
  const dhq = linearBackward(L.linears[R.q!], cache.h1, dq, ctx, loraIn, stop.full);
  const dhk = linearBackward(L.linears[R.k!], cache.h1, dk, ctx, loraIn, stop.full);
  const dhv = linearBackward(L.linears[R.v!], cache.h1, dv, ctx, loraIn, stop.full);
  return stop.full ? tf.addN([dhq!, dhk!, dhv!]) as tf.Tensor2D : undefined;
}
