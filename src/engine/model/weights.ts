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
import type { EndWeights, VocabPart } from './head';
import { maxBindingBytes } from '../runtime/backend';
import { normTensors } from './norm';
import type { LayerWeights, Linear, Norm } from './types';

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

export interface LoadedWeights extends EndWeights { layers: LayerWeights[]; host?: Map<string, HostLinear>[] }

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
  const host: Map<string, HostLinear>[] = [];
  const H = cfg.hiddenSize;
  const has = (name: string) => store.has(name);
  const key = (name: string) => storedName(has, name, cfg.modelType);
  const t2 = (name: string, shape: [number, number]) => tf.tensor2d(store.read(key(name), shape), shape);
  const t1 = (name: string, n: number) => tf.tensor1d(store.read(key(name), [n]));
  const norm = (prefix: string, n: number): Norm => {
    let w = t1(`${prefix}.weight`, n);
    if (cfg.normOffset) w = tf.tidy(() => { const o = tf.add(w, cfg.normOffset) as tf.Tensor1D; w.dispose(); return o; });
    return cfg.normType === 'layernorm' ? { w, b: t1(`${prefix}.bias`, n) } : { w };
  };
  // The embedding and the head in parts the backend can bind (one part on CPU backends).
  const partRows = Math.max(1, Math.min(cfg.vocabSize, Math.floor(maxBindingBytes() / (4 * H))));
  const vocabParts = (name: string, withCols: boolean): VocabPart[] => {
    const data = store.read(key(name), [cfg.vocabSize, H]);
    const parts: VocabPart[] = [];
    for (let start = 0; start < cfg.vocabSize; start += partRows) {
      const n = Math.min(partRows, cfg.vocabSize - start);
      const rows = tf.tensor2d(data.subarray(start * H, (start + n) * H), [n, H]);
      parts.push({ start, rows, ...(withCols ? { cols: tf.transpose(rows) as tf.Tensor2D } : {}) });
    }
    return parts;
  };
  const untied = !cfg.tieWordEmbeddings && store.has(names.head);
  // A tied table may be stored under either name (transformers drops one of the two when it saves tied weights, and
  // loads whichever is there into the shared parameter), so a checkpoint with only the head's name is the same model.
  const table = !untied && !has(key(names.embed)) && has(key(names.head)) ? names.head : names.embed;
  const embed = vocabParts(table, !untied);
  const head = untied ? vocabParts(names.head, true) : embed;
  const positions = names.positions ? t2(names.positions, [cfg.maxPositionEmbeddings, H]) : undefined;
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
      if (stream) {
        // Read now (shape-checked), upload later: the tensors exist only while the layer is acquired.
        (host[l] ??= new Map()).set(kind, { data: store.read(key(`${name}.weight`), shape), storedAsInOut: Boolean(modules.conv1d) });
        linears[kind] = { name, kind, dIn, dOut, wt: undefined as unknown as tf.Tensor2D, bias };
        continue;
      }
      const stored = t2(`${name}.weight`, shape);
      const other = tf.transpose(stored) as tf.Tensor2D;
      const [wt, w] = modules.conv1d ? [stored, other] : [other, stored];
      if (!keepBoth) w.dispose();
      linears[kind] = { name, kind, dIn, dOut, wt, w: keepBoth ? w : undefined, bias };
    }
    const p = `${modules.layerPrefix}.${l}`;
    const n = names.norms;
    layers.push({
      inputNorm: norm(`${p}.${n.input}`, H), preMlpNorm: norm(`${p}.${n.preMlp}`, H), linears,
      ...(n.attnOut && n.mlpOut ? { attnOutNorm: norm(`${p}.${n.attnOut}`, H), mlpOutNorm: norm(`${p}.${n.mlpOut}`, H) } : {}),
      ...(n.q && n.k ? { qNorm: norm(`${p}.${n.q}`, cfg.headDim), kNorm: norm(`${p}.${n.k}`, cfg.headDim) } : {}),
    });
  }
  const finalNorm = norm(names.finalNorm, H);
  return { embed, head, finalNorm, positions, layers, ...(stream ? { host } : {}) };
}

/** Every weight tensor on the backend. */
export function weightTensors(w: LoadedWeights): tf.Tensor[] {
  const all = new Set<tf.Tensor>(normTensors(w.finalNorm));
  for (const p of [...w.embed, ...w.head]) { all.add(p.rows); if (p.cols) all.add(p.cols); }
  if (w.positions) all.add(w.positions);
  for (const L of w.layers) {
    for (const n of [L.inputNorm, L.preMlpNorm, L.attnOutNorm, L.mlpOutNorm, L.qNorm, L.kNorm]) if (n) for (const t of normTensors(n)) all.add(t);
    for (const lin of Object.values(L.linears)) { if (lin.wt) all.add(lin.wt); if (lin.w) all.add(lin.w); if (lin.bias) all.add(lin.bias); }
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

  private acquire(l: number): LayerWeights {
    const L = this.w.layers[l];
    const host = this.w.host;
    if (!host || this.holds[l] > 0) { if (host) this.holds[l]++; return L; }
    try {
      for (const [kind, h] of host[l]) {
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

  private release(l: number): void {
    if (!this.w.host || --this.holds[l] > 0) return;
    for (const lin of Object.values(this.w.layers[l].linears)) {
      tf.dispose([lin.wt, lin.w!]);
      lin.wt = undefined as unknown as tf.Tensor2D;
      lin.w = undefined;
    }
  }
}
