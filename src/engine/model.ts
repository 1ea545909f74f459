// A Llama decoder in tfjs with a hand-written backward pass, in the spirit of llm.c: every product is a plain 2-D
// non-transposed matmul (the only shape tfjs-wasm sends to XNNPACK; see shared/docs/engine-bench.md), weights are
// transposed once at load, and the backward pass computes only activation gradients (frozen weights never get
// gradients), LoRA gradients, and whatever a "tap" wants to know about each linear module (PAGE).
//
// Shapes: T = tokens of one record, H = hidden, I = intermediate, nH/nKV = attention/key-value heads, hd = head dim,
// rep = nH / nKV, V = vocab. Module names are Hugging Face's (`model.layers.N.mlp.down_proj`).
import * as tf from '@tensorflow/tfjs-core';
import { ARCHITECTURES, ModelConfig, moduleName, moduleShape } from './config';
import { WeightStore } from './safetensors';
import { badInput } from './errors';

/** One frozen linear module, stored transposed ([in, out]) so `x @ wt` is the fast path. */
export interface Linear {
  name: string;
  kind: string;
  dIn: number;
  dOut: number;
  wt: tf.Tensor2D;
  /** The [out, in] layout, for dx = dy @ w in backward; kept when memory allows, else made per use. */
  w?: tf.Tensor2D;
  bias?: tf.Tensor1D;
}

export interface LayerWeights {
  inputNorm: tf.Tensor1D;
  postNorm: tf.Tensor1D;
  linears: Record<string, Linear>;
}

/** A LoRA adapter on one module: h = W x + scale * B (A x). Kept in PEFT's layout plus the transposes we multiply by. */
export interface LoraAdapter {
  name: string;
  a: tf.Tensor2D; // [r, d_in]
  b: tf.Tensor2D; // [d_out, r]
  at: tf.Tensor2D; // [d_in, r]
  bt: tf.Tensor2D; // [r, d_out]
  scale: number;
}

/** What a tap sees of one linear module during backward: its input X [T, d_in] and output gradient Delta [T, d_out]. */
export type ModuleTap = (lin: Linear, x: tf.Tensor2D, delta: tf.Tensor2D) => void;

export interface LoraGrads { da: tf.Tensor2D; db: tf.Tensor2D }

export interface RecordPass {
  /** Mean cross-entropy over the supervised tokens of the record. */
  loss: number;
  tokens: number;
}

interface LayerCache {
  x: tf.Tensor2D; // layer input [T, H]
  r1: tf.Tensor2D; // rsqrt(mean(x^2)+eps) [T, 1]
  h1: tf.Tensor2D; // normed input of q, k, v [T, H]
  q: tf.Tensor3D; // roped queries, kv-group major [nKV, rep*T, hd]
  k: tf.Tensor3D; // roped keys [nKV, T, hd]
  v: tf.Tensor3D; // values [nKV, T, hd]
  p: tf.Tensor3D; // attention probabilities [nKV, rep*T, T]
  att: tf.Tensor2D; // attention output, the input of o_proj [T, nH*hd]
  x2: tf.Tensor2D; // residual after attention [T, H]
  r2: tf.Tensor2D;
  h2: tf.Tensor2D; // normed input of gate, up [T, H]
  g: tf.Tensor2D; // gate pre-activation [T, I]
  u: tf.Tensor2D; // up [T, I]
  act: tf.Tensor2D; // silu(g) * u, the input of down_proj [T, I]
  /** Inputs of LoRA paths (x @ A^T), per adapted module name. */
  loraIn: Map<string, tf.Tensor2D>;
}

export interface ModelOptions {
  /** Keep weights in both layouts (2x memory, faster backward). Default true. */
  keepBothLayouts?: boolean;
}

export class LlamaModel {
  readonly kinds: readonly string[];
  private ropeCache = new Map<number, { cos: tf.Tensor3D; sinSigned: tf.Tensor3D }>();
  private maskCache = new Map<number, tf.Tensor2D>();

  private constructor(
    readonly cfg: ModelConfig,
    readonly embed: tf.Tensor2D, // [V, H]
    readonly headT: tf.Tensor2D, // [H, V]
    readonly head: tf.Tensor2D, // [V, H] (the embedding itself when tied)
    readonly finalNorm: tf.Tensor1D,
    readonly layers: LayerWeights[],
  ) {
    this.kinds = ARCHITECTURES[cfg.modelType].kinds;
  }

  /** Loads weights tensor by tensor, checking every shape against the config. */
  static load(cfg: ModelConfig, store: WeightStore, opts: ModelOptions = {}): LlamaModel {
    const keepBoth = opts.keepBothLayouts ?? true;
    const H = cfg.hiddenSize;
    const t2 = (name: string, shape: [number, number]) => tf.tensor2d(store.read(name, shape), shape);
    const t1 = (name: string, n: number) => tf.tensor1d(store.read(name, [n]));
    const embed = t2('model.embed_tokens.weight', [cfg.vocabSize, H]);
    let head = embed;
    if (!cfg.tieWordEmbeddings && store.has('lm_head.weight')) head = t2('lm_head.weight', [cfg.vocabSize, H]);
    const headT = tf.transpose(head) as tf.Tensor2D;
    const layers: LayerWeights[] = [];
    const kinds = ARCHITECTURES[cfg.modelType].kinds;
    for (let l = 0; l < cfg.numLayers; l++) {
      const linears: Record<string, Linear> = {};
      for (const kind of kinds) {
        const [dIn, dOut] = moduleShape(cfg, kind);
        const name = moduleName(l, kind);
        const w = t2(`${name}.weight`, [dOut, dIn]);
        const wt = tf.transpose(w) as tf.Tensor2D;
        const biasName = `${name}.bias`;
        const bias = store.has(biasName) ? t1(biasName, dOut) : undefined;
        if (!keepBoth) w.dispose();
        linears[kind] = { name, kind, dIn, dOut, wt, w: keepBoth ? w : undefined, bias };
      }
      layers.push({
        inputNorm: t1(`model.layers.${l}.input_layernorm.weight`, H),
        postNorm: t1(`model.layers.${l}.post_attention_layernorm.weight`, H),
        linears,
      });
    }
    const finalNorm = t1('model.norm.weight', H);
    return new LlamaModel(cfg, embed, headT, head, finalNorm, layers);
  }

  linear(name: string): Linear {
    const m = /^model\.layers\.(\d+)\.(?:self_attn|mlp)\.(\w+)$/.exec(name);
    const lin = m ? this.layers[Number(m[1])]?.linears[m[2]] : undefined;
    if (!lin || lin.name !== name) throw badInput(`module "${name}" is not a linear module of this model`);
    return lin;
  }

  dispose(): void {
    const all: tf.Tensor[] = [this.embed, this.headT, this.finalNorm];
    if (this.head !== this.embed) all.push(this.head);
    for (const L of this.layers) {
      all.push(L.inputNorm, L.postNorm);
      for (const lin of Object.values(L.linears)) { all.push(lin.wt); if (lin.w) all.push(lin.w); if (lin.bias) all.push(lin.bias); }
    }
    for (const c of this.ropeCache.values()) all.push(c.cos, c.sinSigned);
    for (const m of this.maskCache.values()) all.push(m);
    tf.dispose(all);
    this.ropeCache.clear();
    this.maskCache.clear();
  }

  // ---- building blocks ---------------------------------------------------------------------------------------

  /** cos and a sign-folded sin, [T, 1, hd], so that rope(x) = x*cos + swapHalves(x)*sinSigned (HF's rotate_half). */
  private rope(T: number): { cos: tf.Tensor3D; sinSigned: tf.Tensor3D } {
    let c = this.ropeCache.get(T);
    if (!c) {
      const hd = this.cfg.headDim;
      const half = hd / 2;
      const cos = new Float32Array(T * hd);
      const sin = new Float32Array(T * hd);
      for (let i = 0; i < half; i++) {
        // HF computes inv_freq in float32: mirror that rounding before multiplying by the position.
        const invFreq = Math.fround(1 / Math.pow(this.cfg.ropeTheta, (2 * i) / hd));
        for (let t = 0; t < T; t++) {
          const ang = Math.fround(t * invFreq);
          const cv = Math.cos(ang), sv = Math.sin(ang);
          cos[t * hd + i] = cv; cos[t * hd + half + i] = cv;
          sin[t * hd + i] = -sv; sin[t * hd + half + i] = sv;
        }
      }
      // Cached across calls, so kept out of the tf.tidy scope that first asked for it.
      c = { cos: tf.keep(tf.tensor3d(cos, [T, 1, hd])), sinSigned: tf.keep(tf.tensor3d(sin, [T, 1, hd])) };
      this.ropeCache.set(T, c);
    }
    return c;
  }

  /** Additive causal mask for kv-group-major queries: row i is position i mod T. [rep*T, T] */
  private causalMask(T: number): tf.Tensor2D {
    let m = this.maskCache.get(T);
    if (!m) {
      const rep = this.cfg.numHeads / this.cfg.numKvHeads;
      const data = new Float32Array(rep * T * T);
      for (let i = 0; i < rep * T; i++) {
        const pos = i % T;
        for (let j = pos + 1; j < T; j++) data[i * T + j] = -1e9;
      }
      m = tf.keep(tf.tensor2d(data, [rep * T, T]));
      this.maskCache.set(T, m);
    }
    return m;
  }

  private static swapHalves(x: tf.Tensor3D): tf.Tensor3D {
    const [a, b] = tf.split(x, 2, 2);
    return tf.concat([b, a], 2) as tf.Tensor3D;
  }

  /** x [T, n, hd] -> rotated; `inverse` applies the transpose (the rotation by -angle), used in backward. */
  private applyRope(x: tf.Tensor3D, T: number, inverse: boolean): tf.Tensor3D {
    const { cos, sinSigned } = this.rope(T);
    const rot = tf.mul(LlamaModel.swapHalves(x), sinSigned);
    return (inverse ? tf.sub(tf.mul(x, cos), rot) : tf.add(tf.mul(x, cos), rot)) as tf.Tensor3D;
  }

  private rmsNorm(x: tf.Tensor2D, w: tf.Tensor1D): { y: tf.Tensor2D; r: tf.Tensor2D } {
    const r = tf.rsqrt(tf.add(tf.mean(tf.square(x), 1, true), this.cfg.rmsNormEps)) as tf.Tensor2D; // [T, 1]
    return { y: tf.mul(tf.mul(x, r), w) as tf.Tensor2D, r };
  }

  private rmsNormBackward(dy: tf.Tensor2D, x: tf.Tensor2D, r: tf.Tensor2D, w: tf.Tensor1D): tf.Tensor2D {
    const xhat = tf.mul(x, r); // [T, H]
    const dxhat = tf.mul(dy, w); // [T, H]
    const dot = tf.mean(tf.mul(dxhat, xhat), 1, true); // [T, 1]
    return tf.mul(r, tf.sub(dxhat, tf.mul(xhat, dot))) as tf.Tensor2D;
  }

  /** y = x W^T (+ bias) (+ scale * (x A^T) B^T). Records the LoRA input when a cache is given. */
  private applyLinear(lin: Linear, x: tf.Tensor2D, adapters: Map<string, LoraAdapter> | undefined, cache?: LayerCache): tf.Tensor2D {
    let y: tf.Tensor2D = tf.matMul(x, lin.wt); // [T, d_out]
    if (lin.bias) y = tf.add(y, lin.bias) as tf.Tensor2D;
    const ad = adapters?.get(lin.name);
    if (ad) {
      const xa = tf.matMul(x, ad.at); // [T, r]
      if (cache) cache.loraIn.set(lin.name, tf.keep(xa) as tf.Tensor2D);
      y = tf.add(y, tf.mul(tf.matMul(xa, ad.bt), ad.scale)) as tf.Tensor2D;
    }
    return y;
  }

  /**
   * Backward of one linear module: returns dx = Delta W (+ LoRA path) and accumulates LoRA gradients.
   * `tap` sees (X, Delta) first; that is all PAGE needs.
   */
  private linearBackward(lin: Linear, x: tf.Tensor2D, delta: tf.Tensor2D, ctx: BackwardContext, cache: LayerCache, needDx: boolean): tf.Tensor2D | undefined {
    ctx.tap?.(lin, x, delta);
    const ad = ctx.adapters?.get(lin.name);
    let dXa: tf.Tensor2D | undefined;
    if (ad) {
      const xa = cache.loraIn.get(lin.name)!; // [T, r]
      dXa = tf.mul(tf.matMul(delta, ad.b), ad.scale) as tf.Tensor2D; // [T, r]
      if (ctx.loraGrads) {
        const db = tf.mul(tf.matMul(tf.transpose(delta), xa), ad.scale) as tf.Tensor2D; // [d_out, r]
        const da = tf.matMul(tf.transpose(dXa), x) as tf.Tensor2D; // [r, d_in]
        accumulate(ctx.loraGrads, lin.name, da, db);
      }
    }
    if (!needDx) return undefined;
    const w = lin.w ?? (tf.transpose(lin.wt) as tf.Tensor2D);
    let dx = tf.matMul(delta, w) as tf.Tensor2D; // [T, d_in]
    if (ad && dXa) dx = tf.add(dx, tf.matMul(dXa, ad.a)) as tf.Tensor2D; // [T, d_in]
    return dx;
  }

  // ---- the layer ---------------------------------------------------------------------------------------------

  /** One decoder layer. Returns the output and, when `keepCache`, everything the backward pass needs (kept). */
  layerForward(l: number, x: tf.Tensor2D, adapters?: Map<string, LoraAdapter>, keepCache = false): { out: tf.Tensor2D; cache?: LayerCache } {
    const cfg = this.cfg;
    const L = this.layers[l];
    const T = x.shape[0];
    const nH = cfg.numHeads, nKV = cfg.numKvHeads, hd = cfg.headDim, rep = nH / nKV;
    const cache: LayerCache | undefined = keepCache ? ({ loraIn: new Map() } as unknown as LayerCache) : undefined;
    const out = tf.tidy(() => {
      const n1 = this.rmsNorm(x, L.inputNorm);
      const q0 = this.applyLinear(L.linears.q_proj, n1.y, adapters, cache); // [T, nH*hd]
      const k0 = this.applyLinear(L.linears.k_proj, n1.y, adapters, cache); // [T, nKV*hd]
      const v0 = this.applyLinear(L.linears.v_proj, n1.y, adapters, cache); // [T, nKV*hd]
      const qr = this.applyRope(tf.reshape(q0, [T, nH, hd]), T, false);
      const kr = this.applyRope(tf.reshape(k0, [T, nKV, hd]), T, false);
      // Heads h = g*rep + j use key/value head g (HF repeat_kv): grouping by g needs no repeat at all.
      const q = tf.reshape(tf.transpose(qr, [1, 0, 2]), [nKV, rep * T, hd]) as tf.Tensor3D;
      const k = tf.transpose(kr, [1, 0, 2]) as tf.Tensor3D; // [nKV, T, hd]
      const kT = tf.transpose(kr, [1, 2, 0]) as tf.Tensor3D; // [nKV, hd, T]
      const v = tf.transpose(tf.reshape(v0, [T, nKV, hd]), [1, 0, 2]) as tf.Tensor3D; // [nKV, T, hd]
      const scale = 1 / Math.sqrt(hd);
      const mask = this.causalMask(T);
      const qs = tf.unstack(q), kTs = tf.unstack(kT), vs = tf.unstack(v);
      const ps: tf.Tensor2D[] = [], os: tf.Tensor2D[] = [];
      for (let g = 0; g < nKV; g++) {
        const s = tf.add(tf.mul(tf.matMul(qs[g] as tf.Tensor2D, kTs[g] as tf.Tensor2D), scale), mask); // [rep*T, T]
        const p = tf.softmax(s) as tf.Tensor2D;
        ps.push(p);
        os.push(tf.matMul(p, vs[g] as tf.Tensor2D)); // [rep*T, hd]
      }
      const o = tf.stack(os) as tf.Tensor3D; // [nKV, rep*T, hd]
      const att = tf.reshape(tf.transpose(tf.reshape(o, [nH, T, hd]), [1, 0, 2]), [T, nH * hd]) as tf.Tensor2D;
      const x2 = tf.add(x, this.applyLinear(L.linears.o_proj, att, adapters, cache)) as tf.Tensor2D;
      const n2 = this.rmsNorm(x2, L.postNorm);
      const g = this.applyLinear(L.linears.gate_proj, n2.y, adapters, cache); // [T, I]
      const u = this.applyLinear(L.linears.up_proj, n2.y, adapters, cache); // [T, I]
      const act = tf.mul(tf.mul(g, tf.sigmoid(g)), u) as tf.Tensor2D; // silu(g) * u
      const y = tf.add(x2, this.applyLinear(L.linears.down_proj, act, adapters, cache)) as tf.Tensor2D;
      if (cache) {
        Object.assign(cache, {
          x: tf.keep(x.clone()), r1: tf.keep(n1.r), h1: tf.keep(n1.y), q: tf.keep(q), k: tf.keep(k), v: tf.keep(v),
          p: tf.keep(tf.stack(ps) as tf.Tensor3D), att: tf.keep(att), x2: tf.keep(x2), r2: tf.keep(n2.r), h2: tf.keep(n2.y),
          g: tf.keep(g), u: tf.keep(u), act: tf.keep(act),
        });
      }
      return y;
    });
    return { out, cache };
  }

  /**
   * Backward of one layer given dL/d(output); returns dL/d(input). At the lowest layer of a pass
   * (`ctx.needInputGrad` false) it stops as soon as every module in `ctx.lowestKinds` has been seen, and returns
   * undefined: nothing below needs a gradient.
   */
  layerBackward(l: number, dy: tf.Tensor2D, cache: LayerCache, ctx: BackwardContext): tf.Tensor2D | undefined {
    const cfg = this.cfg;
    const L = this.layers[l];
    const T = dy.shape[0];
    const nH = cfg.numHeads, nKV = cfg.numKvHeads, hd = cfg.headDim, rep = nH / nKV;
    const full = ctx.needInputGrad !== false;
    const left = new Set(full ? this.kinds : (ctx.lowestKinds ?? this.kinds));
    const done = (...kinds: string[]) => { for (const k of kinds) left.delete(k); return !full && left.size === 0; };
    return tf.tidy(() => {
      // MLP: y = x2 + down(silu(g) * u)
      const dAct = this.linearBackward(L.linears.down_proj, cache.act, dy, ctx, cache, true)!; // [T, I]
      if (done('down_proj')) return undefined;
      const sig = tf.sigmoid(cache.g);
      const silu = tf.mul(cache.g, sig);
      const dsilu = tf.mul(sig, tf.add(1, tf.mul(cache.g, tf.sub(1, sig))));
      const dg = tf.mul(tf.mul(dAct, cache.u), dsilu) as tf.Tensor2D;
      const du = tf.mul(dAct, silu) as tf.Tensor2D;
      const dhGate = this.linearBackward(L.linears.gate_proj, cache.h2, dg, ctx, cache, true)!;
      const dhUp = this.linearBackward(L.linears.up_proj, cache.h2, du, ctx, cache, true)!;
      if (done('gate_proj', 'up_proj')) return undefined;
      const dx2 = tf.add(dy, this.rmsNormBackward(tf.add(dhGate, dhUp) as tf.Tensor2D, cache.x2, cache.r2, L.postNorm)) as tf.Tensor2D;
      // Attention: x2 = x + o(att)
      const dAtt = this.linearBackward(L.linears.o_proj, cache.att, dx2, ctx, cache, true)!; // [T, nH*hd]
      if (done('o_proj')) return undefined;
      const dO = tf.reshape(tf.transpose(tf.reshape(dAtt, [T, nH, hd]), [1, 0, 2]), [nKV, rep * T, hd]) as tf.Tensor3D;
      const scale = 1 / Math.sqrt(hd);
      const dOs = tf.unstack(dO), ps = tf.unstack(cache.p), qs = tf.unstack(cache.q), ks = tf.unstack(cache.k), vs = tf.unstack(cache.v);
      const dqs: tf.Tensor2D[] = [], dks: tf.Tensor2D[] = [], dvs: tf.Tensor2D[] = [];
      for (let g = 0; g < nKV; g++) {
        const p = ps[g] as tf.Tensor2D, dOg = dOs[g] as tf.Tensor2D;
        const dP = tf.matMul(dOg, tf.transpose(vs[g]) as tf.Tensor2D); // [rep*T, T]
        const dS = tf.mul(tf.mul(p, tf.sub(dP, tf.sum(tf.mul(dP, p), 1, true))), scale) as tf.Tensor2D; // softmax backward
        dqs.push(tf.matMul(dS, ks[g] as tf.Tensor2D)); // [rep*T, hd]
        dks.push(tf.matMul(tf.transpose(dS), qs[g] as tf.Tensor2D)); // [T, hd]
        dvs.push(tf.matMul(tf.transpose(p), dOg)); // [T, hd]
      }
      const dqr = tf.transpose(tf.reshape(tf.stack(dqs), [nH, T, hd]), [1, 0, 2]) as tf.Tensor3D; // [T, nH, hd]
      const dkr = tf.transpose(tf.stack(dks), [1, 0, 2]) as tf.Tensor3D; // [T, nKV, hd]
      const dq = tf.reshape(this.applyRope(dqr, T, true), [T, nH * hd]) as tf.Tensor2D;
      const dk = tf.reshape(this.applyRope(dkr, T, true), [T, nKV * hd]) as tf.Tensor2D;
      const dv = tf.reshape(tf.transpose(tf.stack(dvs), [1, 0, 2]), [T, nKV * hd]) as tf.Tensor2D;
      const dhq = this.linearBackward(L.linears.q_proj, cache.h1, dq, ctx, cache, full);
      const dhk = this.linearBackward(L.linears.k_proj, cache.h1, dk, ctx, cache, full);
      const dhv = this.linearBackward(L.linears.v_proj, cache.h1, dv, ctx, cache, full);
      if (!full) return undefined;
      const dh1 = tf.addN([dhq!, dhk!, dhv!]) as tf.Tensor2D;
      return tf.add(dx2, this.rmsNormBackward(dh1, cache.x, cache.r1, L.inputNorm)) as tf.Tensor2D;
    });
  }

  static disposeCache(c: LayerCache): void {
    tf.dispose([c.x, c.r1, c.h1, c.q, c.k, c.v, c.p, c.att, c.x2, c.r2, c.h2, c.g, c.u, c.act, ...c.loraIn.values()]);
  }

  // ---- whole-record passes -----------------------------------------------------------------------------------

  embedTokens(ids: number[]): tf.Tensor2D {
    return tf.tidy(() => tf.gather(this.embed, tf.tensor1d(ids, 'int32')) as tf.Tensor2D);
  }

  /** Final norm + LM head logits at the given positions [P, V] (used for evaluation outputs, not training). */
  logitsAt(hidden: tf.Tensor2D, positions: number[]): tf.Tensor2D {
    return tf.tidy(() => {
      const h = tf.gather(hidden, tf.tensor1d(positions, 'int32')) as tf.Tensor2D;
      return tf.matMul(this.rmsNorm(h, this.finalNorm).y, this.headT) as tf.Tensor2D;
    });
  }

  /**
   * Final norm, LM head and cross-entropy at the supervised positions only, in chunks so the [tokens, vocab]
   * logits never exist at once. Returns the record's mean loss and, when asked, dL/d(hidden) [T, H].
   */
  headLoss(hidden: tf.Tensor2D, ids: number[], mask: number[], wantGrad: boolean): { loss: number; tokens: number; dHidden?: tf.Tensor2D } {
    const T = hidden.shape[0];
    const pos: number[] = [], tgt: number[] = [];
    for (let t = 1; t < T; t++) if (mask[t]) { pos.push(t - 1); tgt.push(ids[t]); }
    const S = pos.length;
    if (S === 0) throw new Error('record has no supervised tokens');
    const V = this.cfg.vocabSize;
    const chunk = Math.max(1, Math.min(S, Math.floor((32 * 1024 * 1024) / (4 * V)) || 1, 256));
    let lossSum = 0;
    const dParts: tf.Tensor2D[] = [];
    const posT = tf.tensor1d(pos, 'int32');
    const hS = tf.tidy(() => tf.gather(hidden, posT) as tf.Tensor2D); // [S, H]
    const { y: nS, r: rS } = tf.tidy(() => { const o = this.rmsNorm(hS, this.finalNorm); return { y: o.y, r: o.r }; });
    for (let c0 = 0; c0 < S; c0 += chunk) {
      const c1 = Math.min(S, c0 + chunk);
      const n = c1 - c0;
      const res = tf.tidy(() => {
        const h = tf.slice(nS, [c0, 0], [n, -1]) as tf.Tensor2D;
        const logits = tf.matMul(h, this.headT); // [n, V]
        const lse = tf.logSumExp(logits, 1, true); // [n, 1]
        const tIdx = tf.tensor1d(tgt.slice(c0, c1).map((t, i) => i * V + t), 'int32');
        const picked = tf.gather(tf.reshape(logits, [-1]), tIdx); // [n]
        const loss = tf.sum(tf.sub(tf.reshape(lse, [-1]), picked));
        if (!wantGrad) return { loss };
        // tfjs-wasm 4.22's OneHot writes int bits into float32 outputs (1 becomes 1.4e-45): build it as int32, then cast.
        const onehot = tf.cast(tf.oneHot(tf.tensor1d(tgt.slice(c0, c1), 'int32'), V), 'float32');
        const dLogits = tf.div(tf.sub(tf.exp(tf.sub(logits, lse)), onehot), S); // [n, V]
        return { loss, dh: tf.matMul(dLogits, this.head) as tf.Tensor2D }; // [n, H]
      });
      lossSum += (res.loss.dataSync() as Float32Array)[0];
      res.loss.dispose();
      if (res.dh) dParts.push(res.dh);
    }
    let dHidden: tf.Tensor2D | undefined;
    if (wantGrad) {
      dHidden = tf.tidy(() => {
        const dnS = dParts.length === 1 ? dParts[0] : tf.concat(dParts, 0); // [S, H]
        const dhS = this.rmsNormBackward(dnS, hS, rS, this.finalNorm);
        return tf.scatterND(tf.reshape(posT, [S, 1]), dhS, [T, this.cfg.hiddenSize]) as tf.Tensor2D;
      });
    }
    tf.dispose([...dParts, posT, hS, nS, rS]);
    return { loss: lossSum / S, tokens: S, dHidden };
  }

  /** Forward only: the record's loss (no caches kept). */
  recordLoss(ids: number[], mask: number[], adapters?: Map<string, LoraAdapter>): RecordPass {
    let x = this.embedTokens(ids);
    for (let l = 0; l < this.cfg.numLayers; l++) {
      const { out } = this.layerForward(l, x, adapters, false);
      x.dispose();
      x = out;
    }
    const r = this.headLoss(x, ids, mask, false);
    x.dispose();
    return { loss: r.loss, tokens: r.tokens };
  }

  /** Forward returning the last layer's hidden states [T, H] (caller disposes). */
  hiddenStates(ids: number[], adapters?: Map<string, LoraAdapter>): tf.Tensor2D {
    let x = this.embedTokens(ids);
    for (let l = 0; l < this.cfg.numLayers; l++) {
      const { out } = this.layerForward(l, x, adapters, false);
      x.dispose();
      x = out;
    }
    return x;
  }

  /**
   * Forward and backward of one record. Layers below `lowestLayer` run without keeping activations and are not
   * back-propagated through (nothing below them is trainable or tapped). Calls `ctx.tap` for every linear module
   * at or above `lowestLayer` and accumulates LoRA gradients into `ctx.loraGrads`.
   */
  recordBackward(ids: number[], mask: number[], ctx: BackwardContext, lowestLayer = 0): RecordPass {
    const nL = this.cfg.numLayers;
    let x = this.embedTokens(ids);
    for (let l = 0; l < lowestLayer; l++) {
      const { out } = this.layerForward(l, x, ctx.adapters, false);
      x.dispose();
      x = out;
    }
    const caches: LayerCache[] = [];
    try {
      for (let l = lowestLayer; l < nL; l++) {
        const { out, cache } = this.layerForward(l, x, ctx.adapters, true);
        caches.push(cache!);
        x.dispose();
        x = out;
      }
      const head = this.headLoss(x, ids, mask, true);
      x.dispose();
      let d = head.dHidden!;
      for (let l = nL - 1; l >= lowestLayer; l--) {
        const c = caches[l - lowestLayer];
        const bctx = { ...ctx, needInputGrad: l > lowestLayer };
        const dPrev = this.layerBackward(l, d, c, bctx);
        d.dispose();
        if (!dPrev) break;
        d = dPrev;
      }
      if (!d.isDisposed) d.dispose();
      return { loss: head.loss, tokens: head.tokens };
    } finally {
      for (const c of caches) LlamaModel.disposeCache(c);
    }
  }
}

export interface BackwardContext {
  adapters?: Map<string, LoraAdapter>;
  tap?: ModuleTap;
  loraGrads?: Map<string, LoraGrads>;
  /** Set per layer by recordBackward: false at the lowest layer, where dx is not needed. */
  needInputGrad?: boolean;
  /** The module kinds of the lowest layer that must be reached (tapped or trained); the rest of it is skipped. */
  lowestKinds?: string[];
}

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
