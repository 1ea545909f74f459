// A decoder-only transformer in tfjs with a hand-written backward pass, in the spirit of llm.c: every product is a
// plain 2-D non-transposed matmul (the only shape tfjs-wasm sends to XNNPACK; see shared/docs/engine-bench.md),
// weights are transposed once at load, and the backward pass computes only activation gradients (frozen weights never
// get gradients), LoRA gradients, and whatever a "tap" wants to know about each linear module (PAGE).
//
// One layer shape covers the architectures of config.ts (ARCHITECTURES): Llama, and what the others add to it:
//   Mistral   sliding-window attention (the causal mask also hides keys `window` or more positions back)
//   Qwen 2    biases on q, k, v                     Qwen 3   RMSNorm on each q and k head before RoPE
//   Phi-3     fused qkv_proj and gate_up_proj (split after the matmul; the fused module is the PEFT target)
//   Gemma 2   RMSNorm (1 + w), embeddings x sqrt(H), norms after attention and MLP too, GeGLU (tanh), attention
//             and final-logit soft-capping, sliding window on even layers, query_pre_attn_scalar
//   GPT-2     LayerNorm with bias, learned positions, fused c_attn, plain MLP c_fc -> gelu -> c_proj, Conv1D
//             weights stored [in, out] (already the layout we multiply by)
//
// Shapes: T = tokens of one record, H = hidden, I = intermediate, nH/nKV = attention/key-value heads, hd = head dim,
// rep = nH / nKV, V = vocab. Module names are Hugging Face's (`model.layers.N.mlp.down_proj`).
import * as tf from '@tensorflow/tfjs-core';
import { ARCHITECTURES, ArchRoles, ArchSpec, ModelConfig, headTensorName, moduleName, moduleShape, parseModuleName, storedName } from '../hf/config';
import { WeightStore } from '../hf/safetensors';
import { badInput } from '../runtime/errors';
import { runSteps, Steps } from '../runtime/jobs';

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

/** A norm's parameters: RMSNorm has a weight (Gemma's 1 + w already added), LayerNorm a weight and a bias. */
export interface Norm { w: tf.Tensor1D; b?: tf.Tensor1D }

export interface LayerWeights {
  /** Before attention (input_layernorm, GPT-2's ln_1). */
  inputNorm: Norm;
  /** Before the MLP (Llama's post_attention_layernorm, Gemma 2's pre_feedforward_layernorm, GPT-2's ln_2). */
  postNorm: Norm;
  /** Gemma 2's post_attention_layernorm: on the attention output, before the residual add. */
  attnOutNorm?: Norm;
  /** Gemma 2's post_feedforward_layernorm: on the MLP output, before the residual add. */
  mlpOutNorm?: Norm;
  /** Qwen 3's q_norm and k_norm, [hd]. */
  qNorm?: Norm;
  kNorm?: Norm;
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

/** What a norm's backward needs: its input, 1/rms (or 1/std) [T, 1], and LayerNorm's mean [T, 1]. */
interface NormCache { x: tf.Tensor2D; r: tf.Tensor2D; mu?: tf.Tensor2D }

interface LayerCache {
  n1: NormCache; // input norm (x = the layer input [T, H])
  h1: tf.Tensor2D; // normed input of q, k, v (or qkv) [T, H]
  qn?: NormCache; // Qwen 3: per-head q norm, x = q before it [T*nH, hd]
  kn?: NormCache; // [T*nKV, hd]
  q: tf.Tensor3D; // roped queries, kv-group major [nKV, rep*T, hd]
  k: tf.Tensor3D; // roped keys [nKV, T, hd]
  v: tf.Tensor3D; // values [nKV, T, hd]
  p: tf.Tensor3D; // attention probabilities [nKV, rep*T, T]
  capT?: tf.Tensor3D; // soft-capping: tanh(scores / cap) [nKV, rep*T, T]
  att: tf.Tensor2D; // attention output, the input of o_proj [T, nH*hd]
  an?: NormCache; // Gemma 2: norm of o_proj's output [T, H]
  n2: NormCache; // pre-MLP norm (x = residual after attention [T, H])
  h2: tf.Tensor2D; // normed input of the MLP [T, H]
  g: tf.Tensor2D; // gate pre-activation (or fc's output, for a plain MLP) [T, I]
  u?: tf.Tensor2D; // up [T, I] (gated MLPs)
  act: tf.Tensor2D; // act(g) * u (or act(g)), the input of down_proj [T, I]
  mn?: NormCache; // Gemma 2: norm of down_proj's output [T, H]
  /** Inputs of LoRA paths (x @ A^T), per adapted module name. */
  loraIn: Map<string, tf.Tensor2D>;
}

export interface ModelOptions {
  /** Keep weights in both layouts (2x memory, faster backward). Default true. */
  keepBothLayouts?: boolean;
  /**
   * Keep the decoder layers' weights outside the backend's memory (in JS arrays) and upload one layer at a time,
   * with activation checkpointing: how a model larger than the 4 GiB wasm heap still runs on wasm.
   */
  stream?: boolean;
  /** Keep only each layer's input in the forward pass and recompute the layer in backward (implied by stream). */
  checkpoint?: boolean;
}

/** A streamed linear's weights while they are not on the backend: the stored layout, as read. */
interface HostLinear { data: Float32Array; storedAsInOut: boolean }

/**
 * RoPE's inverse frequencies for a sequence of T tokens and the factor on cos and sin, as transformers'
 * `_compute_*_parameters` compute them (modeling_rope_utils.py). Only `dynamic` and `longrope` depend on T.
 */
export function ropeFrequencies(cfg: ModelConfig, T: number, local = false): { invFreq: Float64Array; attentionFactor: number } {
  const dim = cfg.rotaryDim;
  const half = dim / 2;
  // Gemma 3's sliding layers: their own base, never scaled.
  if (local && cfg.ropeLocalTheta != null) {
    return { invFreq: Float64Array.from({ length: half }, (_, i) => Math.fround(1 / Math.pow(cfg.ropeLocalTheta!, (2 * i) / dim))), attentionFactor: 1 };
  }
  const sc = cfg.ropeScaling;
  const type = sc?.type ?? 'default';
  const f = (k: string) => Number(sc?.[k]);
  const base = (theta: number) => Float64Array.from({ length: half }, (_, i) => 1 / Math.pow(theta, (2 * i) / dim));
  let invFreq = base(cfg.ropeTheta);
  let attentionFactor = 1;
  switch (type) {
    case 'default':
      break;
    case 'linear':
      invFreq = invFreq.map((v) => v / f('factor'));
      break;
    case 'dynamic': {
      // NTK-aware: the base grows once the sequence is longer than max_position_embeddings (HF recomputes it for the
      // longest position seen; with one record per pass that is T). Below that length it is plain RoPE.
      const maxPos = cfg.maxPositionEmbeddings;
      if (T > maxPos) {
        const factor = f('factor');
        invFreq = base(cfg.ropeTheta * Math.pow((factor * T) / maxPos - (factor - 1), dim / (dim - 2)));
      }
      break;
    }
    case 'llama3': {
      const factor = f('factor'), low = f('low_freq_factor'), high = f('high_freq_factor'), old = f('original_max_position_embeddings');
      const lowWavelen = old / low, highWavelen = old / high;
      invFreq = invFreq.map((v) => {
        const wavelen = (2 * Math.PI) / v;
        if (wavelen < highWavelen) return v;
        if (wavelen > lowWavelen) return v / factor;
        const smooth = (old / wavelen - low) / (high - low);
        return (1 - smooth) * (v / factor) + smooth * v;
      });
      break;
    }
    case 'yarn': {
      const factor = f('factor');
      const origMax = Number(sc?.original_max_position_embeddings ?? cfg.maxPositionEmbeddings);
      const mscale = Number(sc?.mscale ?? 0), mscaleAll = Number(sc?.mscale_all_dim ?? 0);
      const getMscale = (s: number, m = 1) => (s <= 1 ? 1 : 0.1 * m * Math.log(s) + 1);
      if (sc?.attention_factor != null) attentionFactor = f('attention_factor');
      else attentionFactor = mscale && mscaleAll ? getMscale(factor, mscale) / getMscale(factor, mscaleAll) : getMscale(factor);
      const betaFast = Number(sc?.beta_fast || 32), betaSlow = Number(sc?.beta_slow || 1);
      const corrDim = (rot: number) => (dim * Math.log(origMax / (rot * 2 * Math.PI))) / (2 * Math.log(cfg.ropeTheta));
      const truncate = sc?.truncate !== false;
      let lo = corrDim(betaFast), hi = corrDim(betaSlow);
      if (truncate) { lo = Math.floor(lo); hi = Math.ceil(hi); }
      lo = Math.max(lo, 0); hi = Math.min(hi, dim - 1);
      if (lo === hi) hi += 0.001;
      invFreq = invFreq.map((extra, i) => {
        const ramp = Math.min(1, Math.max(0, (i - lo) / (hi - lo)));
        const extraFactor = 1 - ramp; // 1: keep the original frequency (extrapolate), 0: divide by factor
        return (extra / factor) * (1 - extraFactor) + extra * extraFactor;
      });
      break;
    }
    case 'longrope': {
      const origMax = Number(cfg.raw.original_max_position_embeddings ?? sc?.original_max_position_embeddings ?? cfg.maxPositionEmbeddings);
      const factor = cfg.raw.original_max_position_embeddings != null ? cfg.maxPositionEmbeddings / origMax : Number(sc?.factor ?? 1);
      if (sc?.attention_factor != null) attentionFactor = f('attention_factor');
      else attentionFactor = factor <= 1 ? 1 : Math.sqrt(1 + Math.log(factor) / Math.log(origMax));
      const ext = (T > origMax ? sc?.long_factor : sc?.short_factor) as number[];
      invFreq = invFreq.map((v, i) => v / ext[i]);
      break;
    }
    default:
      throw badInput(`rope scaling type "${type}" is not supported`);
  }
  // HF computes the frequencies in float32: mirror that rounding before multiplying by the position.
  return { invFreq: invFreq.map((v) => Math.fround(v)), attentionFactor };
}

const SQRT_2_OVER_PI = Math.sqrt(2 / Math.PI);

export class LlamaModel {
  readonly kinds: readonly string[];
  private readonly roles: Readonly<ArchRoles>;
  private ropeCache = new Map<string, { cos: tf.Tensor3D; sinSigned: tf.Tensor3D }>();
  /** Streaming: per layer, the host copies of its linears, and how many callers hold the layer uploaded. */
  private host?: Map<string, HostLinear>[];
  private holds: number[] = [];
  private checkpoint = false;
  private maskCache = new Map<string, tf.Tensor2D>();

  private constructor(
    readonly cfg: ModelConfig,
    readonly embed: tf.Tensor2D, // [V, H]
    readonly headT: tf.Tensor2D, // [H, V]
    readonly head: tf.Tensor2D, // [V, H] (the embedding itself when tied)
    readonly finalNorm: Norm,
    readonly layers: LayerWeights[],
    /** Learned absolute position embeddings [maxPos, H] (GPT-2). */
    readonly positions?: tf.Tensor2D,
  ) {
    this.kinds = ARCHITECTURES[cfg.modelType].kinds;
    this.roles = ARCHITECTURES[cfg.modelType].roles;
  }

  /** Loads weights tensor by tensor, checking every shape against the config. */
  static load(cfg: ModelConfig, store: WeightStore, opts: ModelOptions = {}): LlamaModel {
    // A scope around the load: if a tensor fails to read (a bad shape, out of memory), everything uploaded so far is
    // released instead of leaking into the worker's next job.
    tf.engine().startScope();
    let model: LlamaModel;
    try {
      model = LlamaModel.loadInScope(cfg, store, opts);
    } catch (err) {
      tf.engine().endScope();
      throw err;
    }
    tf.engine().endScope(model.tensors());
    return model;
  }

  private static loadInScope(cfg: ModelConfig, store: WeightStore, opts: ModelOptions): LlamaModel {
    const keepBoth = opts.keepBothLayouts ?? true;
    const stream = Boolean(opts.stream);
    const host: Map<string, HostLinear>[] = [];
    const arch: ArchSpec = ARCHITECTURES[cfg.modelType];
    const H = cfg.hiddenSize;
    const has = (name: string) => store.has(name);
    const key = (name: string) => storedName(has, name);
    const t2 = (name: string, shape: [number, number]) => tf.tensor2d(store.read(key(name), shape), shape);
    const t1 = (name: string, n: number) => tf.tensor1d(store.read(key(name), [n]));
    const gpt2 = cfg.modelType === 'gpt2';
    const norm = (prefix: string, n: number): Norm => {
      let w = t1(`${prefix}.weight`, n);
      if (cfg.normOffset) w = tf.tidy(() => { const o = tf.add(w, cfg.normOffset) as tf.Tensor1D; w.dispose(); return o; });
      return cfg.normType === 'layernorm' ? { w, b: t1(`${prefix}.bias`, n) } : { w };
    };
    const neox = cfg.modelType === 'gpt_neox';
    const embed = t2(gpt2 ? 'transformer.wte.weight' : neox ? 'gpt_neox.embed_in.weight' : 'model.embed_tokens.weight', [cfg.vocabSize, H]);
    const positions = gpt2 ? t2('transformer.wpe.weight', [cfg.maxPositionEmbeddings, H]) : undefined;
    let head = embed;
    const headName = headTensorName(cfg.modelType);
    if (!cfg.tieWordEmbeddings && store.has(headName)) head = t2(headName, [cfg.vocabSize, H]);
    const headT = tf.transpose(head) as tf.Tensor2D;
    const layers: LayerWeights[] = [];
    for (let l = 0; l < cfg.numLayers; l++) {
      const linears: Record<string, Linear> = {};
      for (const kind of arch.kinds) {
        const [dIn, dOut] = moduleShape(cfg, kind);
        const name = moduleName(l, kind, cfg.modelType);
        let w: tf.Tensor2D, wt: tf.Tensor2D;
        if (stream) {
          // Read now (shape-checked), upload later: the tensors exist only while the layer is acquired.
          const shape: [number, number] = arch.conv1d ? [dIn, dOut] : [dOut, dIn];
          (host[l] ??= new Map()).set(kind, { data: store.read(key(`${name}.weight`), shape), storedAsInOut: Boolean(arch.conv1d) });
          const biasName = `${name}.bias`;
          const bias = has(key(biasName)) ? t1(biasName, dOut) : undefined;
          linears[kind] = { name, kind, dIn, dOut, wt: undefined as unknown as tf.Tensor2D, bias };
          continue;
        }
        if (arch.conv1d) {
          wt = t2(`${name}.weight`, [dIn, dOut]); // Conv1D: y = x W + b, W stored [in, out]
          w = tf.transpose(wt) as tf.Tensor2D;
        } else {
          w = t2(`${name}.weight`, [dOut, dIn]);
          wt = tf.transpose(w) as tf.Tensor2D;
        }
        const biasName = `${name}.bias`;
        const bias = has(key(biasName)) ? t1(biasName, dOut) : undefined;
        if (!keepBoth) w.dispose();
        linears[kind] = { name, kind, dIn, dOut, wt, w: keepBoth ? w : undefined, bias };
      }
      const p = `${arch.layerPrefix}.${l}`;
      const lw: LayerWeights = gpt2
        ? { inputNorm: norm(`${p}.ln_1`, H), postNorm: norm(`${p}.ln_2`, H), linears }
        : cfg.sandwichNorms
          ? {
            inputNorm: norm(`${p}.input_layernorm`, H), attnOutNorm: norm(`${p}.post_attention_layernorm`, H),
            postNorm: norm(`${p}.pre_feedforward_layernorm`, H), mlpOutNorm: norm(`${p}.post_feedforward_layernorm`, H), linears,
          }
          : { inputNorm: norm(`${p}.input_layernorm`, H), postNorm: norm(`${p}.post_attention_layernorm`, H), linears };
      if (cfg.qkNorm) {
        lw.qNorm = norm(`${p}.self_attn.q_norm`, cfg.headDim);
        lw.kNorm = norm(`${p}.self_attn.k_norm`, cfg.headDim);
      }
      layers.push(lw);
    }
    const finalNorm = norm(gpt2 ? 'transformer.ln_f' : neox ? 'gpt_neox.final_layer_norm' : 'model.norm', H);
    const model = new LlamaModel(cfg, embed, headT, head, finalNorm, layers, positions);
    if (stream) { model.host = host; model.holds = new Array(cfg.numLayers).fill(0); }
    model.checkpoint = stream || Boolean(opts.checkpoint);
    return model;
  }

  /** The layer's weights, uploaded to the backend if they are streamed; pair every call with release(l). */
  private acquire(l: number): LayerWeights {
    const L = this.layers[l];
    if (!this.host || this.holds[l] > 0) { if (this.host) this.holds[l]++; return L; }
    try {
      for (const [kind, h] of this.host[l]) {
        const lin = L.linears[kind];
        const stored = tf.tensor2d(h.data, h.storedAsInOut ? [lin.dIn, lin.dOut] : [lin.dOut, lin.dIn]);
        const other = tf.transpose(stored) as tf.Tensor2D;
        lin.wt = h.storedAsInOut ? stored : other;
        lin.w = h.storedAsInOut ? other : stored;
      }
    } catch (err) {
      // A failed upload (out of memory) leaves nothing half-uploaded and the layer free to try again.
      for (const lin of Object.values(L.linears)) { tf.dispose([lin.wt, lin.w].filter(Boolean) as tf.Tensor[]); lin.wt = undefined as unknown as tf.Tensor2D; lin.w = undefined; }
      throw err;
    }
    this.holds[l] = 1;
    return L;
  }

  /** Runs `fn` with layer l's weights on the backend (uploaded once however deeply calls nest). */
  private withLayer<T>(l: number, fn: () => T): T {
    this.acquire(l);
    try {
      return fn();
    } finally {
      this.release(l);
    }
  }

  private release(l: number): void {
    if (!this.host || --this.holds[l] > 0) return;
    for (const lin of Object.values(this.layers[l].linears)) {
      tf.dispose([lin.wt, lin.w!]);
      lin.wt = undefined as unknown as tf.Tensor2D;
      lin.w = undefined;
    }
  }

  linear(name: string): Linear {
    const m = parseModuleName(name, this.cfg.modelType);
    const lin = m ? this.layers[m.layer]?.linears[m.kind] : undefined;
    if (!lin || lin.name !== name) throw badInput(`module "${name}" is not a linear module of this model`);
    return lin;
  }

  /** Every weight tensor the model holds on the backend. */
  private tensors(): tf.Tensor[] {
    const all: tf.Tensor[] = [this.embed, this.headT, ...normTensors(this.finalNorm)];
    if (this.head !== this.embed) all.push(this.head);
    if (this.positions) all.push(this.positions);
    for (const L of this.layers) {
      for (const n of [L.inputNorm, L.postNorm, L.attnOutNorm, L.mlpOutNorm, L.qNorm, L.kNorm]) if (n) all.push(...normTensors(n));
      for (const lin of Object.values(L.linears)) { if (lin.wt) all.push(lin.wt); if (lin.w) all.push(lin.w); if (lin.bias) all.push(lin.bias); }
    }
    return all;
  }

  dispose(): void {
    const all = this.tensors();
    for (const c of this.ropeCache.values()) all.push(c.cos, c.sinSigned);
    for (const m of this.maskCache.values()) all.push(m);
    tf.dispose(all);
    this.ropeCache.clear();
    this.maskCache.clear();
  }

  // ---- building blocks ---------------------------------------------------------------------------------------

  /** cos and a sign-folded sin, [T, 1, hd], so that rope(x) = x*cos + swapHalves(x)*sinSigned (HF's rotate_half). */
  private rope(T: number, local = false): { cos: tf.Tensor3D; sinSigned: tf.Tensor3D } {
    const key = `${T}:${local ? 'local' : 'global'}`;
    let c = this.ropeCache.get(key);
    if (!c) {
      const hd = this.cfg.headDim;
      const half = this.cfg.rotaryDim / 2;
      const { invFreq, attentionFactor } = ropeFrequencies(this.cfg, T, local);
      // Dimensions past the rotary ones (partial_rotary_factor < 1) pass through: cos 1, sin 0.
      const cos = new Float32Array(T * hd).fill(1);
      const sin = new Float32Array(T * hd);
      for (let i = 0; i < half; i++) {
        for (let t = 0; t < T; t++) {
          const ang = Math.fround(t * invFreq[i]);
          // YaRN and LongRoPE scale cos and sin (HF's attention_scaling); q.k then scales by its square.
          const cv = Math.cos(ang) * attentionFactor, sv = Math.sin(ang) * attentionFactor;
          cos[t * hd + i] = cv; cos[t * hd + half + i] = cv;
          sin[t * hd + i] = -sv; sin[t * hd + half + i] = sv;
        }
      }
      // Cached across calls, so kept out of the tf.tidy scope that first asked for it.
      c = { cos: tf.keep(tf.tensor3d(cos, [T, 1, hd])), sinSigned: tf.keep(tf.tensor3d(sin, [T, 1, hd])) };
      this.ropeCache.set(key, c);
      evictOthers(this.ropeCache, (k) => k.startsWith(`${T}:`), (v) => tf.dispose([v.cos, v.sinSigned]));
    }
    return c;
  }

  /**
   * Additive causal mask for kv-group-major queries: row i is position i mod T. [rep*T, T]. With a sliding window
   * W, a query at position i also sees only keys j with i - j < W (transformers' sliding_window_overlay).
   */
  private causalMask(T: number, window: number | null): tf.Tensor2D {
    const W = window !== null && window < T ? window : T;
    const keyName = `${T}:${W}`;
    let m = this.maskCache.get(keyName);
    if (!m) {
      const rep = this.cfg.numHeads / this.cfg.numKvHeads;
      const data = new Float32Array(rep * T * T);
      for (let i = 0; i < rep * T; i++) {
        const pos = i % T;
        for (let j = 0; j < T; j++) if (j > pos || pos - j >= W) data[i * T + j] = -1e9;
      }
      m = tf.keep(tf.tensor2d(data, [rep * T, T]));
      this.maskCache.set(keyName, m);
      evictOthers(this.maskCache, (k) => k.startsWith(`${T}:`), (v) => v.dispose());
    }
    return m;
  }

  /** HF's rotate_half without the sign (folded into sinSigned), over the first `rotaryDim` dimensions of each head. */
  private swapHalves(x: tf.Tensor3D): tf.Tensor3D {
    const hd = this.cfg.headDim, rd = this.cfg.rotaryDim;
    if (rd === hd) {
      const [a, b] = tf.split(x, 2, 2);
      return tf.concat([b, a], 2) as tf.Tensor3D;
    }
    const [a, b, rest] = tf.split(x, [rd / 2, rd / 2, hd - rd], 2);
    return tf.concat([b, a, rest], 2) as tf.Tensor3D; // `rest` meets sin = 0
  }

  /**
   * x [T, n, hd] -> rotated; `inverse` applies the transpose (the rotation by -angle), used in backward. Layer `l`
   * picks the tables: Gemma 3's sliding layers have their own base.
   */
  private applyRope(x: tf.Tensor3D, T: number, inverse: boolean, l = 0): tf.Tensor3D {
    const { cos, sinSigned } = this.rope(T, this.cfg.ropeLocalTheta != null && this.cfg.slidingWindows[l] != null);
    const rot = tf.mul(this.swapHalves(x), sinSigned);
    return (inverse ? tf.sub(tf.mul(x, cos), rot) : tf.add(tf.mul(x, cos), rot)) as tf.Tensor3D;
  }

  /** RMSNorm x * rsqrt(mean(x^2) + eps) * w, or LayerNorm (x - mean) * rsqrt(var + eps) * w + b, over the last axis. */
  private norm(x: tf.Tensor2D, n: Norm): { y: tf.Tensor2D; c: NormCache } {
    if (this.cfg.normType === 'layernorm') {
      const mu = tf.mean(x, 1, true) as tf.Tensor2D; // [T, 1]
      const xc = tf.sub(x, mu);
      const r = tf.rsqrt(tf.add(tf.mean(tf.square(xc), 1, true), this.cfg.rmsNormEps)) as tf.Tensor2D; // [T, 1]
      return { y: tf.add(tf.mul(tf.mul(xc, r), n.w), n.b!) as tf.Tensor2D, c: { x, r, mu } };
    }
    const r = tf.rsqrt(tf.add(tf.mean(tf.square(x), 1, true), this.cfg.rmsNormEps)) as tf.Tensor2D; // [T, 1]
    return { y: tf.mul(tf.mul(x, r), n.w) as tf.Tensor2D, c: { x, r } };
  }

  private normBackward(dy: tf.Tensor2D, c: NormCache, n: Norm): tf.Tensor2D {
    const xhat = c.mu ? tf.mul(tf.sub(c.x, c.mu), c.r) : tf.mul(c.x, c.r); // [T, H]
    const dxhat = tf.mul(dy, n.w); // [T, H]
    const dot = tf.mean(tf.mul(dxhat, xhat), 1, true); // [T, 1]
    const centred = c.mu ? tf.sub(dxhat, tf.mean(dxhat, 1, true)) : dxhat;
    return tf.mul(c.r, tf.sub(centred, tf.mul(xhat, dot))) as tf.Tensor2D;
  }

  /** The MLP's activation and its derivative. */
  private activation(g: tf.Tensor2D): tf.Tensor2D {
    if (this.cfg.hiddenAct === 'gelu') return tf.mul(tf.mul(g, 0.5), tf.add(tf.erf(tf.mul(g, Math.SQRT1_2)), 1)) as tf.Tensor2D;
    if (this.cfg.hiddenAct === 'gelu_tanh') {
      // 0.5 g (1 + tanh(sqrt(2/pi) (g + 0.044715 g^3)))
      const t = tf.tanh(tf.mul(tf.add(g, tf.mul(tf.pow(g, 3), 0.044715)), SQRT_2_OVER_PI));
      return tf.mul(tf.mul(g, 0.5), tf.add(t, 1)) as tf.Tensor2D;
    }
    return tf.mul(g, tf.sigmoid(g)) as tf.Tensor2D;
  }

  /** act(g) and act'(g) together (backward needs both; they share the sigmoid or the tanh). */
  private activationWithGrad(g: tf.Tensor2D): { a: tf.Tensor2D; da: tf.Tensor2D } {
    if (this.cfg.hiddenAct === 'gelu') {
      // g Phi(g): d/dg = Phi(g) + g phi(g), Phi(g) = (1 + erf(g / sqrt 2)) / 2, phi(g) = exp(-g^2 / 2) / sqrt(2 pi)
      const cdf = tf.mul(tf.add(tf.erf(tf.mul(g, Math.SQRT1_2)), 1), 0.5);
      const pdf = tf.mul(tf.exp(tf.mul(tf.square(g), -0.5)), 1 / Math.sqrt(2 * Math.PI));
      return { a: tf.mul(g, cdf) as tf.Tensor2D, da: tf.add(cdf, tf.mul(g, pdf)) as tf.Tensor2D };
    }
    if (this.cfg.hiddenAct === 'gelu_tanh') {
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

  /** Scores' factor at layer l (1/sqrt(hd), Gemma 2's query_pre_attn_scalar, GPT-2's optional 1/(l+1)). */
  private attnScale(l: number): number {
    return this.cfg.attnScale / (this.cfg.attnScaleByLayer ? l + 1 : 1);
  }

  /** One decoder layer. Returns the output and, when `keepCache`, everything the backward pass needs (kept). */
  layerForward(l: number, x: tf.Tensor2D, adapters?: Map<string, LoraAdapter>, keepCache = false): { out: tf.Tensor2D; cache?: LayerCache } {
    return this.withLayer(l, () => this.layerForwardResident(l, x, adapters, keepCache));
  }

  private layerForwardResident(l: number, x: tf.Tensor2D, adapters: Map<string, LoraAdapter> | undefined, keepCache: boolean): { out: tf.Tensor2D; cache?: LayerCache } {
    const cfg = this.cfg;
    const R = this.roles;
    const L = this.layers[l];
    const T = x.shape[0];
    const nH = cfg.numHeads, nKV = cfg.numKvHeads, hd = cfg.headDim, rep = nH / nKV;
    const cache: LayerCache | undefined = keepCache ? ({ loraIn: new Map() } as unknown as LayerCache) : undefined;
    const out = tf.tidy(() => {
      const n1 = this.norm(x, L.inputNorm);
      let q0: tf.Tensor2D, k0: tf.Tensor2D, v0: tf.Tensor2D;
      if (R.qkv) {
        const qkv = this.applyLinear(L.linears[R.qkv], n1.y, adapters, cache); // [T, (nH + 2 nKV) hd]
        if (cfg.qkvPerHead) {
          // GPT-NeoX: [T, nH, 3 hd], each head's q, k and v side by side.
          [q0, k0, v0] = tf.split(tf.reshape(qkv, [T, nH, 3 * hd]), 3, 2).map((t) => tf.reshape(t, [T, nH * hd])) as tf.Tensor2D[];
        } else {
          [q0, k0, v0] = tf.split(qkv, [nH * hd, nKV * hd, nKV * hd], 1) as tf.Tensor2D[];
        }
      } else {
        q0 = this.applyLinear(L.linears[R.q!], n1.y, adapters, cache); // [T, nH*hd]
        k0 = this.applyLinear(L.linears[R.k!], n1.y, adapters, cache); // [T, nKV*hd]
        v0 = this.applyLinear(L.linears[R.v!], n1.y, adapters, cache); // [T, nKV*hd]
      }
      let qn: { y: tf.Tensor2D; c: NormCache } | undefined, kn: typeof qn;
      if (L.qNorm && L.kNorm) {
        qn = this.norm(tf.reshape(q0, [T * nH, hd]), L.qNorm); // every head normed over hd
        kn = this.norm(tf.reshape(k0, [T * nKV, hd]), L.kNorm);
        q0 = qn.y; k0 = kn.y;
      }
      let qr = tf.reshape(q0, [T, nH, hd]) as tf.Tensor3D;
      let kr = tf.reshape(k0, [T, nKV, hd]) as tf.Tensor3D;
      if (cfg.positions === 'rope') {
        qr = this.applyRope(qr, T, false, l);
        kr = this.applyRope(kr, T, false, l);
      }
      // Heads h = g*rep + j use key/value head g (HF repeat_kv): grouping by g needs no repeat at all.
      const q = tf.reshape(tf.transpose(qr, [1, 0, 2]), [nKV, rep * T, hd]) as tf.Tensor3D;
      const k = tf.transpose(kr, [1, 0, 2]) as tf.Tensor3D; // [nKV, T, hd]
      const kT = tf.transpose(kr, [1, 2, 0]) as tf.Tensor3D; // [nKV, hd, T]
      const v = tf.transpose(tf.reshape(v0, [T, nKV, hd]), [1, 0, 2]) as tf.Tensor3D; // [nKV, T, hd]
      const scale = this.attnScale(l);
      const cap = cfg.attnSoftcap;
      const mask = this.causalMask(T, cfg.slidingWindows[l]);
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
      const o = tf.stack(os) as tf.Tensor3D; // [nKV, rep*T, hd]
      const att = tf.reshape(tf.transpose(tf.reshape(o, [nH, T, hd]), [1, 0, 2]), [T, nH * hd]) as tf.Tensor2D;
      let attOut = this.applyLinear(L.linears[R.o], att, adapters, cache); // [T, H]
      let an: { y: tf.Tensor2D; c: NormCache } | undefined;
      if (L.attnOutNorm) { an = this.norm(attOut, L.attnOutNorm); attOut = an.y; }
      const x2 = tf.add(x, attOut) as tf.Tensor2D;
      // Parallel residual (GPT-NeoX): the MLP reads the layer's input, not the attention's output.
      const n2 = this.norm(cfg.parallelResidual ? x : x2, L.postNorm);
      let g: tf.Tensor2D, u: tf.Tensor2D | undefined, act: tf.Tensor2D;
      if (R.gateUp) {
        const gu = this.applyLinear(L.linears[R.gateUp], n2.y, adapters, cache); // [T, 2I]: gate, then up
        [g, u] = tf.split(gu, 2, 1) as tf.Tensor2D[];
      } else if (R.fc) {
        g = this.applyLinear(L.linears[R.fc], n2.y, adapters, cache); // [T, I]
      } else {
        g = this.applyLinear(L.linears[R.gate!], n2.y, adapters, cache); // [T, I]
        u = this.applyLinear(L.linears[R.up!], n2.y, adapters, cache); // [T, I]
      }
      act = this.activation(g);
      if (u) act = tf.mul(act, u) as tf.Tensor2D; // act(gate) * up
      let mlpOut = this.applyLinear(L.linears[R.down], act, adapters, cache); // [T, H]
      let mn: { y: tf.Tensor2D; c: NormCache } | undefined;
      if (L.mlpOutNorm) { mn = this.norm(mlpOut, L.mlpOutNorm); mlpOut = mn.y; }
      const y = tf.add(x2, mlpOut) as tf.Tensor2D;
      if (cache) {
        const keepNorm = (c: NormCache, cloneX = false): NormCache =>
          ({ x: tf.keep(cloneX ? c.x.clone() : c.x), r: tf.keep(c.r), ...(c.mu ? { mu: tf.keep(c.mu) } : {}) });
        Object.assign(cache, {
          n1: keepNorm(n1.c, true), h1: tf.keep(n1.y), q: tf.keep(q), k: tf.keep(k), v: tf.keep(v),
          p: tf.keep(tf.stack(ps) as tf.Tensor3D), att: tf.keep(att), n2: keepNorm(n2.c, cfg.parallelResidual), h2: tf.keep(n2.y),
          g: tf.keep(g), act: tf.keep(act),
          ...(u ? { u: tf.keep(u) } : {}),
          ...(qn && kn ? { qn: keepNorm(qn.c), kn: keepNorm(kn.c) } : {}),
          ...(caps.length ? { capT: tf.keep(tf.stack(caps) as tf.Tensor3D) } : {}),
          ...(an ? { an: keepNorm(an.c) } : {}),
          ...(mn ? { mn: keepNorm(mn.c) } : {}),
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
    return this.withLayer(l, () => this.layerBackwardResident(l, dy, cache, ctx));
  }

  private layerBackwardResident(l: number, dy: tf.Tensor2D, cache: LayerCache, ctx: BackwardContext): tf.Tensor2D | undefined {
    const cfg = this.cfg;
    const R = this.roles;
    const L = this.layers[l];
    const T = dy.shape[0];
    const nH = cfg.numHeads, nKV = cfg.numKvHeads, hd = cfg.headDim, rep = nH / nKV;
    const full = ctx.needInputGrad !== false;
    const left = new Set(full ? this.kinds : (ctx.lowestKinds ?? this.kinds));
    const done = (...kinds: (string | undefined)[]) => { for (const k of kinds) if (k) left.delete(k); return !full && left.size === 0; };
    return tf.tidy(() => {
      // MLP: y = x2 + [norm](down(act(g) * u))
      const dMlpOut = cache.mn ? this.normBackward(dy, cache.mn, L.mlpOutNorm!) : dy;
      const dAct = this.linearBackward(L.linears[R.down], cache.act, dMlpOut, ctx, cache, true)!; // [T, I]
      if (done(R.down)) return undefined;
      const { a: actG, da: dActG } = this.activationWithGrad(cache.g);
      let dh2: tf.Tensor2D;
      if (cache.u) {
        const dg = tf.mul(tf.mul(dAct, cache.u), dActG) as tf.Tensor2D;
        const du = tf.mul(dAct, actG) as tf.Tensor2D;
        if (R.gateUp) {
          dh2 = this.linearBackward(L.linears[R.gateUp], cache.h2, tf.concat([dg, du], 1) as tf.Tensor2D, ctx, cache, true)!;
        } else {
          const dhGate = this.linearBackward(L.linears[R.gate!], cache.h2, dg, ctx, cache, true)!;
          const dhUp = this.linearBackward(L.linears[R.up!], cache.h2, du, ctx, cache, true)!;
          dh2 = tf.add(dhGate, dhUp) as tf.Tensor2D;
        }
      } else {
        dh2 = this.linearBackward(L.linears[R.fc!], cache.h2, tf.mul(dAct, dActG) as tf.Tensor2D, ctx, cache, true)!;
      }
      if (done(R.gate, R.up, R.gateUp, R.fc)) return undefined;
      const dx2 = tf.add(dy, this.normBackward(dh2, cache.n2, L.postNorm)) as tf.Tensor2D;
      // Attention: x2 = x + [norm](o(att))
      // Parallel residual: the attention's output reaches y directly (dy); dx2 already carries the MLP's path to x.
      const dAttIn = cfg.parallelResidual ? dy : dx2;
      const dAttOut = cache.an ? this.normBackward(dAttIn, cache.an, L.attnOutNorm!) : dAttIn;
      const dAtt = this.linearBackward(L.linears[R.o], cache.att, dAttOut, ctx, cache, true)!; // [T, nH*hd]
      if (done(R.o)) return undefined;
      const dO = tf.reshape(tf.transpose(tf.reshape(dAtt, [T, nH, hd]), [1, 0, 2]), [nKV, rep * T, hd]) as tf.Tensor3D;
      const scale = this.attnScale(l);
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
      let dqr = tf.transpose(tf.reshape(tf.stack(dqs), [nH, T, hd]), [1, 0, 2]) as tf.Tensor3D; // [T, nH, hd]
      let dkr = tf.transpose(tf.stack(dks), [1, 0, 2]) as tf.Tensor3D; // [T, nKV, hd]
      if (cfg.positions === 'rope') {
        dqr = this.applyRope(dqr, T, true, l);
        dkr = this.applyRope(dkr, T, true, l);
      }
      let dq = tf.reshape(dqr, [T * nH, hd]) as tf.Tensor2D;
      let dk = tf.reshape(dkr, [T * nKV, hd]) as tf.Tensor2D;
      if (cache.qn && cache.kn) {
        dq = this.normBackward(dq, cache.qn, L.qNorm!);
        dk = this.normBackward(dk, cache.kn, L.kNorm!);
      }
      dq = tf.reshape(dq, [T, nH * hd]);
      dk = tf.reshape(dk, [T, nKV * hd]);
      const dv = tf.reshape(tf.transpose(tf.stack(dvs), [1, 0, 2]), [T, nKV * hd]) as tf.Tensor2D;
      let dh1: tf.Tensor2D | undefined;
      if (R.qkv) {
        const dqkv = cfg.qkvPerHead
          ? tf.reshape(tf.concat([dq, dk, dv].map((t) => tf.reshape(t, [T, nH, hd])), 2), [T, 3 * nH * hd]) as tf.Tensor2D
          : tf.concat([dq, dk, dv], 1) as tf.Tensor2D;
        dh1 = this.linearBackward(L.linears[R.qkv], cache.h1, dqkv, ctx, cache, full);
      } else {
        const dhq = this.linearBackward(L.linears[R.q!], cache.h1, dq, ctx, cache, full);
        const dhk = this.linearBackward(L.linears[R.k!], cache.h1, dk, ctx, cache, full);
        const dhv = this.linearBackward(L.linears[R.v!], cache.h1, dv, ctx, cache, full);
        if (full) dh1 = tf.addN([dhq!, dhk!, dhv!]) as tf.Tensor2D;
      }
      if (!full) return undefined;
      return tf.add(dx2, this.normBackward(dh1!, cache.n1, L.inputNorm)) as tf.Tensor2D;
    });
  }

  static disposeCache(c: LayerCache): void {
    const all: tf.Tensor[] = [...c.loraIn.values()];
    for (const v of Object.values(c)) {
      if (v instanceof tf.Tensor) all.push(v);
      else if (v && typeof v === 'object' && 'r' in v) all.push(...Object.values(v as NormCache).filter((t): t is tf.Tensor2D => t instanceof tf.Tensor));
    }
    tf.dispose(all);
  }

  // ---- whole-record passes -----------------------------------------------------------------------------------

  /** Token embeddings (times Gemma's sqrt(H)), plus GPT-2's learned position embeddings. [T, H] */
  embedTokens(ids: number[]): tf.Tensor2D {
    const T = ids.length;
    if (this.positions && T > this.cfg.maxPositionEmbeddings) {
      throw badInput(`a record of ${T} tokens is longer than this model's ${this.cfg.maxPositionEmbeddings} positions; lower --seq-len`);
    }
    return tf.tidy(() => {
      let x = tf.gather(this.embed, tf.tensor1d(ids, 'int32')) as tf.Tensor2D;
      if (this.cfg.embedScale !== 1) x = tf.mul(x, this.cfg.embedScale) as tf.Tensor2D;
      if (this.positions) x = tf.add(x, tf.slice(this.positions, [0, 0], [T, -1])) as tf.Tensor2D;
      return x;
    });
  }

  /** Logits from final-normed hidden states; Gemma 2 soft-caps them. Returns tanh(logits / cap) too when capped. */
  private headLogits(h: tf.Tensor2D): { logits: tf.Tensor2D; th?: tf.Tensor2D } {
    const logits = tf.matMul(h, this.headT) as tf.Tensor2D; // [n, V]
    const cap = this.cfg.finalSoftcap;
    if (!cap) return { logits };
    const th = tf.tanh(tf.div(logits, cap)) as tf.Tensor2D;
    return { logits: tf.mul(th, cap) as tf.Tensor2D, th };
  }

  /** Final norm + LM head logits at the given positions [P, V] (used for evaluation outputs, not training). */
  logitsAt(hidden: tf.Tensor2D, positions: number[]): tf.Tensor2D {
    return tf.tidy(() => {
      const h = tf.gather(hidden, tf.tensor1d(positions, 'int32')) as tf.Tensor2D;
      return this.headLogits(this.norm(h, this.finalNorm).y).logits;
    });
  }

  /**
   * Final norm, LM head and cross-entropy at the supervised positions only, in chunks so the [tokens, vocab]
   * logits never exist at once. Returns the record's mean loss and, when asked, dL/d(hidden) [T, H].
   */
  headLoss(hidden: tf.Tensor2D, ids: number[], mask: number[], wantGrad: boolean): HeadPass {
    return runSteps(this.headLossSteps(hidden, ids, mask, wantGrad));
  }

  /** headLoss as steps, one per chunk of supervised positions (a large vocabulary makes each chunk a long one). */
  *headLossSteps(hidden: tf.Tensor2D, ids: number[], mask: number[], wantGrad: boolean): Steps<HeadPass> {
    const T = hidden.shape[0];
    const pos: number[] = [], tgt: number[] = [];
    for (let t = 1; t < T; t++) if (mask[t]) { pos.push(t - 1); tgt.push(ids[t]); }
    const S = pos.length;
    if (S === 0) throw new Error('record has no supervised tokens');
    const V = this.cfg.vocabSize;
    const chunk = headChunkRows(S, V);
    let lossSum = 0;
    const dParts: tf.Tensor2D[] = [];
    const held: tf.Tensor[] = []; // disposed at the end, on a throw, or when the steps are stopped
    try {
      const posT = tf.tensor1d(pos, 'int32');
      held.push(posT);
      const hS = tf.tidy(() => tf.gather(hidden, posT) as tf.Tensor2D); // [S, H]
      held.push(hS);
      const normed = tf.tidy(() => { const o = this.norm(hS, this.finalNorm); return o.c.mu ? { y: o.y, r: o.c.r, mu: o.c.mu } : { y: o.y, r: o.c.r }; });
      held.push(...Object.values(normed) as tf.Tensor[]);
      const nS = normed.y as tf.Tensor2D;
      const cS: NormCache = { x: hS, r: normed.r as tf.Tensor2D, mu: normed.mu as tf.Tensor2D | undefined };
      for (let c0 = 0; c0 < S; c0 += chunk) {
        if (c0 > 0) yield;
        const c1 = Math.min(S, c0 + chunk);
        const n = c1 - c0;
        const res = tf.tidy(() => {
          const h = tf.slice(nS, [c0, 0], [n, -1]) as tf.Tensor2D;
          const { logits, th } = this.headLogits(h); // [n, V]
          const lse = tf.logSumExp(logits, 1, true); // [n, 1]
          const tIdx = tf.tensor1d(tgt.slice(c0, c1).map((t, i) => i * V + t), 'int32');
          const picked = tf.gather(tf.reshape(logits, [-1]), tIdx); // [n]
          const loss = tf.sum(tf.sub(tf.reshape(lse, [-1]), picked));
          if (!wantGrad) return { loss };
          // tfjs-wasm 4.22's OneHot writes int bits into float32 outputs (1 becomes 1.4e-45): build it as int32, then cast.
          const onehot = tf.cast(tf.oneHot(tf.tensor1d(tgt.slice(c0, c1), 'int32'), V), 'float32');
          let dLogits = tf.div(tf.sub(tf.exp(tf.sub(logits, lse)), onehot), S) as tf.Tensor2D; // [n, V]
          if (th) dLogits = tf.mul(dLogits, tf.sub(1, tf.square(th))) as tf.Tensor2D; // through cap * tanh(z / cap)
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
          const dhS = this.normBackward(dnS, cS, this.finalNorm);
          return tf.scatterND(tf.reshape(posT, [S, 1]), dhS, [T, this.cfg.hiddenSize]) as tf.Tensor2D;
        });
      }
      return { loss: lossSum / S, tokens: S, dHidden };
    } finally {
      // Also when stopped between chunks (a cancel) or on a throw.
      tf.dispose([...dParts, ...held]);
    }
  }

  /** Forward only: the record's loss (no caches kept). */
  recordLoss(ids: number[], mask: number[], adapters?: Map<string, LoraAdapter>): RecordPass {
    return runSteps(this.recordLossSteps(ids, mask, adapters));
  }

  *recordLossSteps(ids: number[], mask: number[], adapters?: Map<string, LoraAdapter>): Steps<RecordPass> {
    const x = yield* this.hiddenBelowSteps(ids, this.cfg.numLayers, adapters);
    try {
      const r = yield* this.headLossSteps(x, ids, mask, false);
      return { loss: r.loss, tokens: r.tokens };
    } finally {
      x.dispose();
    }
  }

  /** The input of layer `layer` [T, H]: the embeddings run through the layers below it (caller disposes). */
  hiddenBelow(ids: number[], layer: number, adapters?: Map<string, LoraAdapter>): tf.Tensor2D {
    return runSteps(this.hiddenBelowSteps(ids, layer, adapters));
  }

  *hiddenBelowSteps(ids: number[], layer: number, adapters?: Map<string, LoraAdapter>): Steps<tf.Tensor2D> {
    let x = this.embedTokens(ids);
    let done = false;
    try {
      for (let l = 0; l < layer; l++) {
        const { out } = this.layerForward(l, x, adapters, false);
        x.dispose();
        x = out;
        yield;
      }
      done = true;
      return x;
    } finally {
      if (!done) x.dispose();
    }
  }

  /** Forward returning the last layer's hidden states [T, H] (caller disposes). */
  hiddenStates(ids: number[], adapters?: Map<string, LoraAdapter>): tf.Tensor2D {
    return this.hiddenBelow(ids, this.cfg.numLayers, adapters);
  }

  /**
   * Forward and backward of one record. Layers below `lowestLayer` run without keeping activations and are not
   * back-propagated through (nothing below them is trainable or tapped). Calls `ctx.tap` for every linear module
   * at or above `lowestLayer` and accumulates LoRA gradients into `ctx.loraGrads`.
   */
  recordBackward(ids: number[], mask: number[], ctx: BackwardContext, lowestLayer = 0, below?: tf.Tensor2D): RecordPass {
    return runSteps(this.recordBackwardSteps(ids, mask, ctx, lowestLayer, below));
  }

  /** recordBackward as steps, one per layer of the forward and of the backward pass (see runStepsAsync). */
  *recordBackwardSteps(ids: number[], mask: number[], ctx: BackwardContext, lowestLayer = 0, below?: tf.Tensor2D): Steps<RecordPass> {
    const nL = this.cfg.numLayers;
    // `below`, when given, is the input of layer `lowestLayer` computed earlier (hiddenBelow): nothing trainable
    // lies below it, so it is the same in every epoch.
    let x = below ? below.clone() : yield* this.hiddenBelowSteps(ids, lowestLayer, ctx.adapters);
    if (this.checkpoint) return yield* this.recordBackwardCheckpointed(x, ids, mask, ctx, lowestLayer);
    const caches: LayerCache[] = [];
    let d: tf.Tensor2D | undefined;
    try {
      for (let l = lowestLayer; l < nL; l++) {
        const { out, cache } = this.layerForward(l, x, ctx.adapters, true);
        caches.push(cache!);
        x.dispose();
        x = out;
        yield;
      }
      const head = yield* this.headLossSteps(x, ids, mask, true);
      d = head.dHidden!;
      for (let l = nL - 1; l >= lowestLayer; l--) {
        yield;
        const c = caches[l - lowestLayer];
        const bctx = { ...ctx, needInputGrad: l > lowestLayer };
        const dPrev: tf.Tensor2D | undefined = this.layerBackward(l, d, c, bctx);
        d.dispose();
        d = dPrev;
        if (!d) break;
      }
      return { loss: head.loss, tokens: head.tokens };
    } finally {
      // Also on a throw (out of memory) or a cancel between layers: nothing of this record stays on the backend.
      x.dispose();
      if (d && !d.isDisposed) d.dispose();
      for (const c of caches) LlamaModel.disposeCache(c);
    }
  }

  /**
   * recordBackward with activation checkpointing: the forward pass keeps only each layer's input [T, H]; the
   * backward pass recomputes one layer's activations at a time, just before its backward. Memory holds one layer's
   * activations instead of all of them, for one more forward pass of the work.
   */
  private *recordBackwardCheckpointed(x: tf.Tensor2D, ids: number[], mask: number[], ctx: BackwardContext, lowestLayer: number): Steps<RecordPass> {
    const nL = this.cfg.numLayers;
    const inputs: tf.Tensor2D[] = [];
    let d: tf.Tensor2D | undefined;
    let last: tf.Tensor2D | undefined;
    try {
      for (let l = lowestLayer; l < nL; l++) {
        inputs.push(x);
        x = this.layerForward(l, x, ctx.adapters, false).out;
        last = x;
        yield;
      }
      const head = yield* this.headLossSteps(x, ids, mask, true);
      x.dispose();
      last = undefined;
      d = head.dHidden!;
      for (let l = nL - 1; l >= lowestLayer; l--) {
        yield;
        // One upload of the layer's weights serves the recomputation and the backward.
        d = this.withLayer(l, () => {
          const { out, cache } = this.layerForward(l, inputs[l - lowestLayer], ctx.adapters, true);
          out.dispose();
          try {
            const dPrev = this.layerBackward(l, d!, cache!, { ...ctx, needInputGrad: l > lowestLayer });
            d!.dispose();
            return dPrev;
          } finally {
            LlamaModel.disposeCache(cache!);
          }
        });
        if (!d) break;
      }
      return { loss: head.loss, tokens: head.tokens };
    } finally {
      if (last && !last.isDisposed) last.dispose();
      if (d && !d.isDisposed) d.dispose();
      tf.dispose(inputs);
    }
  }
}

/** Rows of logits the head computes at once: about 32 MiB of [rows, vocab] float32, at most 256 rows. */
export function headChunkRows(rows: number, vocab: number): number {
  return Math.max(1, Math.min(rows, Math.floor((32 * 1024 * 1024) / (4 * vocab)) || 1, 256));
}

export interface HeadPass { loss: number; tokens: number; dHidden?: tf.Tensor2D }

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

function normTensors(n: Norm): tf.Tensor[] {
  return n.b ? [n.w, n.b] : [n.w];
}

/**
 * The RoPE and mask caches hold one entry per record length: bounded, so that training over many lengths does not
 * fill the heap. Entries of the length in use are never evicted (a pass uses one length throughout).
 */
function evictOthers<K, V>(cache: Map<K, V>, current: (k: K) => boolean, dispose: (v: V) => void, limit = 8): void {
  for (const [k, v] of cache) {
    if (cache.size <= limit) return;
    if (current(k)) continue;
    dispose(v);
    cache.delete(k);
  }
}
