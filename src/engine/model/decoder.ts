// A decoder-only transformer in tfjs with a hand-written backward pass, in the spirit of llm.c: every product is a
// plain 2-D non-transposed matmul (the only shape tfjs-wasm sends to XNNPACK; see shared/docs/engine-bench.md),
// weights are transposed once at load, and the backward pass computes only activation gradients (frozen weights never
// get gradients), LoRA gradients, and whatever a "tap" wants to know about each linear module (PAGE).
//
// The parts, each a forward/backward pair in its own file: norm.ts, linear.ts (+ LoRA and the tap), rope.ts,
// attention.ts, mlp.ts, head.ts (embeddings, LM head and loss); layer.ts composes them into one decoder layer for every
// architecture of ../arch, driven by the config's flags; weights.ts loads the weights and keeps them resident or
// streamed. This file runs records through the layers: the passes, as steps (one per layer) that a job can cancel
// between.
//
// Shapes: T = tokens of one record, H = hidden, V = vocab. Module names are Hugging Face's (`model.layers.N.mlp.down_proj`).
import * as tf from '@tensorflow/tfjs-core';
import type { ModelConfig } from '../hf/config';
import { parseModuleName } from '../hf/modules';
import type { WeightStore } from '../hf/safetensors';
import { archOf } from '../arch/registry';
import { attentionShape } from '../runtime/backend';
import { badInput } from '../runtime/errors';
import { runSteps, Steps } from '../runtime/jobs';
import { embedTokens, headLossManySteps, headLossSteps, logitsAt, type HeadItem, type HeadPass } from './head';
import { disposeCache, layerBackward, layerForward, type LayerCache } from './layer';
import { RopeTables } from './rope';
import { MaskTables } from './tables';
import type { BackwardContext, LayerContext, Linear, LoraAdapter, RecordPass } from './types';
import { loadWeights, Residency, weightTensors, type LoadedWeights, type ModelOptions } from './weights';

export class Decoder {
  readonly kinds: readonly string[];
  private readonly ctx: LayerContext;
  private readonly residency: Residency;
  private readonly checkpoint: boolean;

  private constructor(readonly cfg: ModelConfig, private readonly weights: LoadedWeights, opts: ModelOptions) {
    const { kinds, roles } = archOf(cfg.modelType).modules;
    this.kinds = kinds;
    this.ctx = { cfg, roles, rope: new RopeTables(cfg), masks: new MaskTables(cfg.numHeads / cfg.numKvHeads), attention: attentionShape() };
    this.residency = new Residency(weights);
    this.checkpoint = Boolean(opts.stream || opts.checkpoint);
  }

  /** Loads weights tensor by tensor, checking every shape against the config. */
  static load(cfg: ModelConfig, store: WeightStore, opts: ModelOptions = {}): Decoder {
    return new Decoder(cfg, loadWeights(cfg, store, opts), opts);
  }

  linear(name: string): Linear {
    const m = parseModuleName(name, this.cfg.modelType);
    const lin = m ? this.weights.layers[m.layer]?.linears[m.kind] : undefined;
    if (!lin || lin.name !== name) throw badInput(`module "${name}" is not a linear module of this model`);
    return lin;
  }

  dispose(): void {
    tf.dispose(weightTensors(this.weights));
    this.ctx.rope.dispose();
    this.ctx.masks.dispose();
  }

  // ---- one layer ----------------------------------------------------------------------------------------------

  /** One decoder layer. Returns the output and, when `keepCache`, everything the backward pass needs (kept). */
  layerForward(l: number, x: tf.Tensor2D, adapters?: Map<string, LoraAdapter>, keepCache = false): { out: tf.Tensor2D; cache?: LayerCache } {
    return this.residency.withLayer(l, (L) => layerForward(this.ctx, l, L, x, adapters, keepCache));
  }

  /** Backward of one layer given dL/d(output); returns dL/d(input), or undefined where the pass stops (layer.ts). */
  layerBackward(l: number, dy: tf.Tensor2D, cache: LayerCache, ctx: BackwardContext): tf.Tensor2D | undefined {
    return this.residency.withLayer(l, (L) => layerBackward(this.ctx, this.kinds, L, l, dy, cache, ctx));
  }

  /** Layer l's weights on the backend until the returned release is called (streamed weights upload once). */
  holdLayer(l: number): () => void {
    this.residency.acquire(l);
    let held = true;
    return () => { if (held) { held = false; this.residency.release(l); } };
  }

  /** Whether the layers and the vocabulary tables stay on the backend, or are read from the files when used. */
  get plan(): { streamLayers: boolean; streamVocab: boolean } {
    return { streamLayers: Boolean(this.weights.source), streamVocab: !this.weights.head.resident };
  }

  static disposeCache(c: LayerCache): void {
    disposeCache(c);
  }

  // ---- the ends -----------------------------------------------------------------------------------------------

  /** Token embeddings (times Gemma's sqrt(H)), plus GPT-2's learned position embeddings. [T, H] */
  embedTokens(ids: number[]): tf.Tensor2D {
    return embedTokens(this.cfg, this.weights, ids);
  }

  /** Final norm + LM head logits at the given positions [P, V] (used for evaluation outputs, not training). */
  logitsAt(hidden: tf.Tensor2D, positions: number[]): tf.Tensor2D {
    return logitsAt(this.cfg, this.weights, hidden, positions);
  }

  /** The record's mean loss at its supervised positions and, when asked, dL/d(hidden) [T, H] (head.ts). */
  headLoss(hidden: tf.Tensor2D, ids: number[], mask: number[], wantGrad: boolean): HeadPass {
    return runSteps(this.headLossSteps(hidden, ids, mask, wantGrad));
  }

  headLossSteps(hidden: tf.Tensor2D, ids: number[], mask: number[], wantGrad: boolean): Steps<HeadPass> {
    return headLossSteps(this.cfg, this.weights, hidden, ids, mask, wantGrad);
  }

  /** The head of many records at once, the vocabulary's parts in the outer loop (head.ts headLossManySteps). */
  headLossManySteps(items: HeadItem[], wantGrad: boolean): Steps<HeadPass[]> {
    return headLossManySteps(this.cfg, this.weights, items, wantGrad);
  }

  // ---- whole-record passes ------------------------------------------------------------------------------------

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
      for (const c of caches) disposeCache(c);
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
        d = this.residency.withLayer(l, () => {
          const { out, cache } = this.layerForward(l, inputs[l - lowestLayer], ctx.adapters, true);
          out.dispose();
          try {
            const dPrev = this.layerBackward(l, d!, cache!, { ...ctx, needInputGrad: l > lowestLayer });
            d!.dispose();
            return dPrev;
          } finally {
            disposeCache(cache!);
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
