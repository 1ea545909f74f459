// Rotary position embeddings: the frequencies as transformers computes them for every scaling type, the cos/sin
// tables (cached per record length), and the rotation of q and k (and its inverse, in backward).
import * as tf from '@tensorflow/tfjs-core';
import type { ModelConfig } from '../hf/config';
import { badInput } from '../runtime/errors';
import { evictOthers } from './tables';

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

/** cos and a sign-folded sin, [T, 1, hd], so that rope(x) = x*cos + swapHalves(x)*sinSigned (HF's rotate_half). */
export interface RopeTable { cos: tf.Tensor3D; sinSigned: tf.Tensor3D }

/** The tables per record length (and per base: Gemma 3's local layers have their own), kept across passes. */
export class RopeTables {
  private readonly cache = new Map<string, RopeTable>();
  constructor(private readonly cfg: ModelConfig) {}

  get(T: number, local = false): RopeTable {
    const key = `${T}:${local ? 'local' : 'global'}`;
    let c = this.cache.get(key);
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
      this.cache.set(key, c);
      evictOthers(this.cache, (k) => k.startsWith(`${T}:`), (v) => tf.dispose([v.cos, v.sinSigned]));
    }
    return c;
  }

  /**
   * x [T, n, hd] -> rotated; `inverse` applies the transpose (the rotation by -angle), used in backward. Layer `l`
   * picks the tables: Gemma 3's sliding layers have their own base.
   */
  apply(x: tf.Tensor3D, T: number, inverse: boolean, l = 0): tf.Tensor3D {
    const { cos, sinSigned } = this.get(T, this.cfg.ropeLocalTheta != null && this.cfg.slidingWindows[l] != null);
    const rot = tf.mul(swapHalves(x, this.cfg.headDim, this.cfg.rotaryDim), sinSigned);
    return (inverse ? tf.sub(tf.mul(x, cos), rot) : tf.add(tf.mul(x, cos), rot)) as tf.Tensor3D;
  }

  tensors(): tf.Tensor[] {
    return [...this.cache.values()].flatMap((c) => [c.cos, c.sinSigned]);
  }

  dispose(): void {
    tf.dispose(this.tensors());
    this.cache.clear();
  }
}

/** HF's rotate_half without the sign (folded into sinSigned), over the first `rotaryDim` dimensions of each head. */
function swapHalves(x: tf.Tensor3D, hd: number, rd: number): tf.Tensor3D {
  if (rd === hd) {
    const [a, b] = tf.split(x, 2, 2);
    return tf.concat([b, a], 2) as tf.Tensor3D;
  }
  const [a, b, rest] = tf.split(x, [rd / 2, rd / 2, hd - rd], 2);
  return tf.concat([b, a, rest], 2) as tf.Tensor3D; // `rest` meets sin = 0
}
