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
import { backwardLayerMajor } from '../model/schedule';
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
  const taps = new PageTaps(modules, aT, rank, scale, route);
  const { lowestLayer, lowestKinds } = lowestOf(modules);
  try {
    const pass = yield* model.recordBackwardSteps(rec.inputIds, rec.lossMask, { tap: taps.tap, lowestKinds }, lowestLayer);
    return { loss: pass.loss, tokens: pass.tokens, ...(yield* taps.values()) };
  } finally {
    taps.dispose();
  }
}

/**
 * PAGE of many records in one layer-major pass (model/schedule.ts): each layer's weights come to the backend once
 * for all of them. What a model whose weights are streamed from the files uses; the values equal pageForRecordSteps'.
 */
export function* pageForRecordsSteps(
  model: Decoder, recs: TokenizedRecord[], modules: ModuleSpec[], aT: Map<string, tf.Tensor2D>, rank: number, scale: number,
): Steps<RecordPage[]> {
  const taps = recs.map(() => new PageTaps(modules, aT, rank, scale, 'auto'));
  const { lowestLayer, lowestKinds } = lowestOf(modules);
  try {
    const passes = yield* backwardLayerMajor(model, recs.map((r, n) => ({
      ids: r.inputIds, mask: r.lossMask, ctx: { tap: taps[n].tap, lowestKinds, afterLayer: () => taps[n].endLayer() },
    })), lowestLayer);
    const out: RecordPage[] = [];
    for (let n = 0; n < recs.length; n++) out.push({ loss: passes[n].loss, tokens: passes[n].tokens, ...(yield* taps[n].values()) });
    return out;
  } finally {
    for (const t of taps) t.dispose();
  }
}

function lowestOf(modules: ModuleSpec[]): { lowestLayer: number; lowestKinds: string[] } {
  const lowestLayer = Math.min(...modules.map((m) => m.layer));
  return { lowestLayer, lowestKinds: [...new Set(modules.filter((m) => m.layer === lowestLayer).map((m) => m.kind))] };
}

/** One record's PAGE taps: what each module's backward hands over becomes its sampled and expected energy. */
class PageTaps {
  private readonly index: Map<string, number>;
  private readonly sampledT: tf.Scalar[];
  private readonly expectedT: tf.Scalar[];
  /** By input tensor id: q/k/v and gate/up read the same input and share its Gram. */
  private readonly xGrams = new Map<number, tf.Tensor2D>();

  constructor(private readonly modules: ModuleSpec[], private readonly aT: Map<string, tf.Tensor2D>, private readonly rank: number,
    private readonly scale: number, private readonly route: 'auto' | 'gram' | 'direct') {
    this.index = new Map(modules.map((m, i) => [m.name, i]));
    this.sampledT = new Array(modules.length);
    this.expectedT = new Array(modules.length);
    this.onHost = { sampled: new Float64Array(modules.length), expected: new Float64Array(modules.length), read: new Array(modules.length).fill(false) };
  }

  readonly tap = (lin: Linear, x: tf.Tensor2D, delta: tf.Tensor2D): void => {
    const i = this.index.get(lin.name);
    if (i === undefined) return;
    const { scale, rank, route } = this;
    const T = x.shape[0];
    const deltaT = tf.transpose(delta) as tf.Tensor2D; // [d_out, T]
    // Sampled: dl/dB = s Delta^T (X A^T), a [d_out, r] product: cheap for any T.
    const dB = tf.matMul(deltaT, tf.matMul(x, this.aT.get(lin.name)!)); // [d_out, r]
    this.sampledT[i] = tf.keep(tf.mul(tf.sum(tf.square(dB)), scale * scale));
    // Expected needs ||Delta^T X||^2. Two exact routes: the Gram identity <X X^T, Delta Delta^T>, T^2 (d_in + d_out)
    // (X X^T shared by modules reading the same input), or the product itself, T d_in d_out, summed at once and
    // dropped. Short records favour the Gram route, long ones the product; the product is only formed when small.
    const xg = this.xGrams.get(x.id);
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
        this.xGrams.set(x.id, gram);
      }
      energy = tf.sum(tf.mul(gram, tf.matMul(delta, deltaT))); // <X X^T, Delta Delta^T>
    }
    this.expectedT[i] = tf.keep(tf.mul(energy, (scale * scale * rank) / (3 * lin.dIn)));
  };

  /** Values already read to host memory (a CPU backend's, after each layer), by module, and which are. */
  private readonly onHost: { sampled: Float64Array; expected: Float64Array; read: boolean[] };

  /**
   * A layer's backward is done: its inputs' Grams are not needed again. On a CPU backend (wasm), whose reads are
   * synchronous and cheap, the layer's values leave the backend too: kept there as scalars until the record ends, they
   * are small blocks placed in the holes that the layer's freed weights leave, and on wasm (whose allocator cannot
   * move blocks) each layer's few then split the holes the next layer's 235 MB weights need, so that an 8B model's
   * heap grew by one such module per layer (issue #13).
   */
  endLayer(): void {
    tf.dispose([...this.xGrams.values()]);
    this.xGrams.clear();
    // Only the CPU backends, whose reads are synchronous and cheap; a GPU read waits for the queue: once per record.
    const backend = tf.getBackend();
    if (backend !== 'wasm' && backend !== 'cpu') return;
    const fresh = this.modules.map((_, i) => i).filter((i) => this.sampledT[i]);
    if (!fresh.length) return;
    const vals = tf.tidy(() => tf.stack([...fresh.map((i) => this.sampledT[i]), ...fresh.map((i) => this.expectedT[i])]).dataSync());
    for (const [k, i] of fresh.entries()) {
      this.onHost.sampled[i] = vals[k];
      this.onHost.expected[i] = vals[fresh.length + k];
      this.onHost.read[i] = true;
      tf.dispose([this.sampledT[i], this.expectedT[i]]);
      delete this.sampledT[i];
      delete this.expectedT[i];
    }
  }

  /** Both values of every module, read from the backend. */
  *values(): Steps<{ sampled: Float64Array; expected: Float64Array }> {
    const missing = this.modules.filter((_, i) => !this.sampledT[i] && !this.onHost.read[i]);
    if (missing.length) throw new Error(`PAGE: no gradient reached ${missing[0].name}`);
    const { sampled, expected } = this.onHost;
    const left = this.modules.map((_, i) => i).filter((i) => this.sampledT[i]);
    if (left.length) {
      const both = tf.tidy(() => tf.concat([tf.stack(left.map((i) => this.sampledT[i])), tf.stack(left.map((i) => this.expectedT[i]))]));
      let vals: Values;
      try { vals = yield* read(both); } finally { both.dispose(); }
      left.forEach((i, k) => { sampled[i] = vals[k]; expected[i] = vals[left.length + k]; });
    }
    return { sampled: Float64Array.from(sampled), expected: Float64Array.from(expected) };
  }

  dispose(): void {
    tf.dispose([...this.sampledT.filter(Boolean), ...this.expectedT.filter(Boolean), ...this.xGrams.values()]);
  }
}

