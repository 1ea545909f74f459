// The model's weights on the backend, apart from the maths: loading them tensor by tensor from the safetensors files
// (every shape checked against the config, every name from the architecture's definition), and their residency.
// Resident, every layer's linears stay on the backend in both layouts. Streamed, a layer's linears live in host
// memory and are uploaded only while a pass needs them (acquire/release), which is how a model larger than the 4 GiB
// wasm heap still runs on wasm.
import * as tf from '@tensorflow/tfjs-core';
import type { ModelConfig } from '../hf/config';
import { moduleName, moduleShape, storedName } from '../hf/modules';
import type { WeightStore } from '../hf/safetensors';
import { archOf } from '../arch/registry';
import type { EndWeights } from './head';
import { ResidentVocab, StreamedVocab, type Vocab } from './vocab';
import { maxBindingBytes } from '../runtime/backend';
import { STREAMED_PART_BYTES, WEIGHT_BLOCK_BYTES } from '../runtime/estimate';
import { uploadLinear } from './linear';
import { normTensors } from './norm';
import type { LayerWeights, Linear, Norm } from './types';

export interface ModelOptions {
  /** Keep weights in both layouts (2x memory, faster backward). Default true. */
  keepBothLayouts?: boolean;
  /**
   * Leave the decoder layers' weights in the weight files and upload one layer at a time, when a pass needs it, with
   * activation checkpointing: how a model larger than the 4 GiB wasm heap still runs on wasm.
   */
  stream?: boolean;
  /** Leave the embedding and the head in the weight files too (read by rows, uploaded a part at a time). */
  streamVocab?: boolean;
  /** Keep only each layer's input in the forward pass and recompute the layer in backward (implied by stream). */
  checkpoint?: boolean;
  /** The largest block of a streamed module (runtime/estimate.ts WEIGHT_BLOCK_BYTES); smaller in tests, to split small modules. */
  blockBytes?: number;
}

/** Where a streamed layer's linears are read from: the weight files, by stored name, in the stored layout. */
interface LayerSource { store: WeightStore; weightName: Map<string, string>; storedAsInOut: boolean; bothLayouts: boolean; blockBytes: number }

export interface LoadedWeights extends EndWeights { layers: LayerWeights[]; source?: LayerSource }

/** Rows of a vocabulary part: what one binding holds, and for a streamed table at most STREAMED_PART_BYTES at a time. */
function partRows(H: number, streamed: boolean): number {
  return Math.max(1, Math.floor(Math.min(maxBindingBytes(), streamed ? STREAMED_PART_BYTES : Infinity) / (4 * H)));
}

/** Loads weights tensor by tensor, checking every shape against the config. On a throw nothing stays uploaded. */
export function loadWeights(cfg: ModelConfig, store: WeightStore, opts: ModelOptions = {}): LoadedWeights {
  // A scope around the load: if a tensor fails to read (a bad shape, out of memory), everything uploaded so far is
  // released instead of leaking into the worker's next job.
  tf.engine().startScope();
  let w: LoadedWeights;
  try {
    w = loadInScope(cfg, store, opts);
  } catch (err) {
    tf.engine().endScope();
    throw err;
  }
  tf.engine().endScope(weightTensors(w));
  return w;
}

function loadInScope(cfg: ModelConfig, store: WeightStore, opts: ModelOptions): LoadedWeights {
  const keepBoth = opts.keepBothLayouts ?? true;
  const stream = Boolean(opts.stream);
  const arch = archOf(cfg.modelType);
  const { modules, tensors: names } = arch;
  const H = cfg.hiddenSize;
  const has = (name: string) => store.has(name);
  const key = (name: string) => storedName(has, name, cfg.modelType);
  const t2 = (name: string, shape: [number, number]) => tf.tensor2d(store.read(key(name), shape), shape);
  const t1 = (name: string, n: number) => tf.tensor1d(store.read(key(name), [n]));
  /** A norm's weights, Gemma's 1 + w folded in, and times `scale` (w and b: the norm's output scales with them). */
  const norm = (prefix: string, n: number, scale = 1): Norm => {
    let w = t1(`${prefix}.weight`, n);
    const fold = (t: tf.Tensor1D, add: number, mul: number) => tf.tidy(() => { const o = tf.mul(tf.add(t, add), mul) as tf.Tensor1D; t.dispose(); return o; });
    if (cfg.normOffset || scale !== 1) w = fold(w, cfg.normOffset, scale);
    if (cfg.normType !== 'layernorm') return { w };
    const b = t1(`${prefix}.bias`, n);
    return { w, b: scale !== 1 ? fold(b, 0, scale) : b };
  };
  // The embedding and the head: in parts the backend can bind, resident or left in the files.
  const untied = !cfg.tieWordEmbeddings && store.has(names.head);
  // A tied table may be stored under either name (transformers drops one of the two when it saves tied weights, and
  // loads whichever is there into the shared parameter), so a checkpoint with only the head's name is the same model.
  const table = key(!untied && !has(key(names.embed)) && has(key(names.head)) ? names.head : names.embed);
  const rows = partRows(H, Boolean(opts.streamVocab));
  let embed: Vocab, head: Vocab;
  if (opts.streamVocab) {
    store.check(table, [cfg.vocabSize, H]);
    if (untied) store.check(names.head, [cfg.vocabSize, H]);
    embed = new StreamedVocab(store, table, cfg.vocabSize, H, rows);
    head = untied ? new StreamedVocab(store, names.head, cfg.vocabSize, H, rows) : embed;
  } else {
    const e = new ResidentVocab(store.read(table, [cfg.vocabSize, H]), cfg.vocabSize, H, rows, false);
    embed = e;
    head = untied ? new ResidentVocab(store.read(names.head, [cfg.vocabSize, H]), cfg.vocabSize, H, rows, true) : ResidentVocab.tiedHead(e);
  }
  const positions = names.positions ? t2(names.positions, [cfg.maxPositionEmbeddings, H]) : undefined;
  const source: LayerSource | undefined = stream ? { store, weightName: new Map(), storedAsInOut: Boolean(modules.conv1d), bothLayouts: keepBoth, blockBytes: opts.blockBytes ?? WEIGHT_BLOCK_BYTES } : undefined;
  const layers: LayerWeights[] = [];
  for (let l = 0; l < cfg.numLayers; l++) {
    const linears: Record<string, Linear> = {};
    for (const kind of modules.kinds) {
      const [dIn, dOut] = moduleShape(cfg, kind);
      const name = moduleName(l, kind, cfg.modelType);
      const biasName = `${name}.bias`;
      const bias = has(key(biasName)) ? t1(biasName, dOut) : undefined;
      // Conv1D (GPT-2): y = x W + b with W stored [in, out]; nn.Linear stores [out, in].
      const shape: [number, number] = modules.conv1d ? [dIn, dOut] : [dOut, dIn];
      if (source) {
        // Shape-checked now, read and uploaded only while the layer is acquired.
        const stored = key(`${name}.weight`);
        store.check(stored, shape);
        source.weightName.set(name, stored);
        linears[kind] = { name, kind, dIn, dOut, wt: [], bias };
        continue;
      }
      linears[kind] = { name, kind, dIn, dOut, ...uploadLinear(store.read(key(`${name}.weight`), shape), dIn, dOut, Boolean(modules.conv1d), keepBoth), bias };
    }
    const p = `${modules.layerPrefix}.${l}`;
    const n = names.norms;
    // OLMo 2's q/k norms span the whole projection (heads x head_dim); the others' one head.
    const [qn, kn] = cfg.qkNorm === 'projection' ? [cfg.numHeads * cfg.headDim, cfg.numKvHeads * cfg.headDim] : [cfg.headDim, cfg.headDim];
    layers.push({
      ...(n.input ? { inputNorm: norm(`${p}.${n.input}`, H) } : {}),
      ...(n.preMlp ? { preMlpNorm: norm(`${p}.${n.preMlp}`, H) } : {}),
      linears,
      ...(n.attnOut && n.mlpOut ? { attnOutNorm: norm(`${p}.${n.attnOut}`, H), mlpOutNorm: norm(`${p}.${n.mlpOut}`, H) } : {}),
      ...(n.q && n.k ? { qNorm: norm(`${p}.${n.q}`, qn), kNorm: norm(`${p}.${n.k}`, kn) } : {}),
    });
  }
  // Granite divides the logits by logits_scaling. The head is linear with no bias, so that is the final norm's
  // output divided by it: folded into the norm's weights here, the head's forward and backward need nothing else.
  const finalNorm = norm(names.finalNorm, H, 1 / cfg.logitScale);
  return { embed, head, finalNorm, positions, layers, ...(source ? { source } : {}) };
}

/** Every weight tensor on the backend. */
export function weightTensors(w: LoadedWeights): tf.Tensor[] {
  const all = new Set<tf.Tensor>([...normTensors(w.finalNorm), ...w.embed.tensors(), ...w.head.tensors()]);
  if (w.positions) all.add(w.positions);
  for (const L of w.layers) {
    for (const n of [L.inputNorm, L.preMlpNorm, L.attnOutNorm, L.mlpOutNorm, L.qNorm, L.kNorm]) if (n) for (const t of normTensors(n)) all.add(t);
    for (const lin of Object.values(L.linears)) { for (const t of [...lin.wt, ...lin.w ?? []]) all.add(t); if (lin.bias) all.add(lin.bias); }
  }
  return [...all];
}

/** Which layers' linears are on the backend, when they are streamed; a no-op for resident weights. */
export class Residency {
  private readonly holds: number[];
  constructor(private readonly w: LoadedWeights) {
    this.holds = new Array(w.layers.length).fill(0);
  }

  /** Runs `fn` with layer l's weights on the backend (uploaded once however deeply calls nest). */
  withLayer<T>(l: number, fn: (L: LayerWeights) => T): T {
    const L = this.acquire(l);
    try {
      return fn(L);
    } finally {
      this.release(l);
    }
  }

  /** Layer l's weights on the backend until the matching release(l); nested holds upload once. */
  acquire(l: number): LayerWeights {
    const L = this.w.layers[l];
    const src = this.w.source;
    if (!src || this.holds[l] > 0) { if (src) this.holds[l]++; return L; }
    try {
      for (const lin of Object.values(L.linears)) {
        const shape: [number, number] = src.storedAsInOut ? [lin.dIn, lin.dOut] : [lin.dOut, lin.dIn];
        // Read from the file in its stored dtype, converted to f32 for this layer only, and uploaded in blocks. One
        // layout when memory is short: the backward then takes W^T as its left operand (linear.ts).
        Object.assign(lin, uploadLinear(src.store.read(src.weightName.get(lin.name)!, shape), lin.dIn, lin.dOut, src.storedAsInOut, src.bothLayouts, src.blockBytes));
      }
    } catch (err) {
      // A failed upload (out of memory) leaves nothing half-uploaded and the layer free to try again.
      for (const lin of Object.values(L.linears)) freeLinear(lin);
      throw err;
    }
    this.holds[l] = 1;
    return L;
  }

  release(l: number): void {
    if (!this.w.source || --this.holds[l] > 0) return;
    for (const lin of Object.values(this.w.layers[l].linears)) freeLinear(lin);
  }
}

function freeLinear(lin: Linear): void {
  tf.dispose([...lin.wt, ...lin.w ?? []]);
  lin.wt = [];
  lin.w = undefined;
}
