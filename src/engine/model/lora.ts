// LoRA adapters exactly as PEFT initialises them: A ~ U(-1/sqrt(d_in), 1/sqrt(d_in)) (kaiming_uniform_ with
// a = sqrt(5)), B = 0, scale alpha / r. The random stream is ours (seeded), not torch's: the same seed gives the
// same A on every backend and machine.
import * as tf from '@tensorflow/tfjs-core';
import { Rng } from '../runtime/rng';
import { badInput } from '../runtime/errors';
import type { LoraAdapter } from './types';
import type { ModuleSpec } from '../hf/modules';

/** Per-module seed: the A of a module does not depend on which other modules are adapted. */
export function moduleSeed(seed: number, name: string): number {
  let h = 2166136261 ^ seed;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 16777619);
  return h >>> 0;
}

/** A [r, d_in] for one module, as PEFT draws it. */
export function initLoraA(seed: number, name: string, rank: number, dIn: number): Float32Array {
  const rng = new Rng(moduleSeed(seed, name));
  const bound = 1 / Math.sqrt(dIn);
  const a = new Float32Array(rank * dIn);
  for (let i = 0; i < a.length; i++) a[i] = rng.uniform(-bound, bound);
  return a;
}

export function loraScale(alpha: number, rank: number, rslora = false): number {
  return rslora ? alpha / Math.sqrt(rank) : alpha / rank;
}

/** Builds an adapter from PEFT-layout arrays (B zero when omitted). */
export function makeAdapter(spec: ModuleSpec, rank: number, scale: number, a: Float32Array, b?: Float32Array): LoraAdapter {
  return tf.tidy(() => {
    const at = tf.tensor2d(a, [rank, spec.dIn]);
    const bt = b ? tf.tensor2d(b, [spec.dOut, rank]) : tf.zeros([spec.dOut, rank]) as tf.Tensor2D;
    return {
      name: spec.name, scale,
      a: tf.keep(at), b: tf.keep(bt),
      at: tf.keep(tf.transpose(at) as tf.Tensor2D), bt: tf.keep(tf.transpose(bt) as tf.Tensor2D),
    };
  });
}

export function disposeAdapter(ad: LoraAdapter): void {
  tf.dispose([ad.a, ad.b, ad.at, ad.bt]);
}

/** Adapter parameters at rank r on a module: r (d_in + d_out). */
export function adapterParams(spec: { dIn: number; dOut: number }, rank: number): number {
  return rank * (spec.dIn + spec.dOut);
}

/** An adapter's rank cannot exceed either dimension of its module. */
export function checkRank(rank: number, specs: { name: string; dIn: number; dOut: number }[]): void {
  for (const m of specs) {
    if (rank > Math.min(m.dIn, m.dOut)) throw badInput(`--rank ${rank} is larger than ${m.name}'s dimensions (${m.dIn} x ${m.dOut})`);
  }
}
