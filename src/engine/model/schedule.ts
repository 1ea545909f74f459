// The layer-major pass: many records run through the decoder one layer at a time, so each layer's weights are brought
// to the backend once for the forward of every record and once for their backward, not once per record. This is
// the schedule of a model whose weights are streamed from the files: its weights move 2 x layers times per job (per
// training step), where the record-major pass (decoder.ts) moves them 2 x layers x records times.
//
// Between layers each record's activations wait in host memory (the boundaries: a layer's input [T, H] per record,
// and in the backward the gradient flowing down), so the backend holds one layer's weights, one record's activations
// and the taps' state at a time. The backward recomputes each layer's forward from its kept input (activation
// checkpointing). Every (layer, record) is a step: a cancel lands within one layer of one record.
import * as tf from '@tensorflow/tfjs-core';
import { read, type Steps } from '../runtime/jobs';
import type { Decoder } from './decoder';
import type { HeadPass } from './head';
import { disposeCache } from './layer';
import type { BackwardContext, LoraAdapter, RecordPass } from './types';

/** One record of a layer-major pass: its tokens and, for a backward, what its pass taps and accumulates. */
export interface PassRecord { ids: number[]; mask: number[]; ctx?: BackwardContext }

/** A [T, H] activation waiting in host memory between layers. */
interface Held { data: Float32Array; shape: [number, number] }

function* toHost(t: tf.Tensor2D): Steps<Held> {
  try {
    // A copy: on wasm the values can be a view of the heap, which the next allocation may move.
    return { data: Float32Array.from((yield* read(t)) as Float32Array), shape: t.shape as [number, number] };
  } finally {
    t.dispose();
  }
}

const upload = (h: Held): tf.Tensor2D => tf.tensor2d(h.data, h.shape);

/**
 * The inputs of layer `upTo` for every record (the embeddings run through the layers below it), and, when `keepFrom`
 * is given, each record's input of every layer from `keepFrom` up (for the backward's recomputation).
 */
function* forwardToLayer(dec: Decoder, recs: PassRecord[], upTo: number, adapters: Map<string, LoraAdapter> | undefined,
  keepFrom = Infinity): Steps<{ xs: Held[]; inputs: Held[][] }> {
  const xs: Held[] = [];
  for (const r of recs) xs.push(yield* toHost(dec.embedTokens(r.ids)));
  const inputs: Held[][] = [];
  for (let l = 0; l < upTo; l++) {
    if (l >= keepFrom) inputs[l - keepFrom] = [...xs];
    const release = dec.holdLayer(l);
    try {
      for (let n = 0; n < recs.length; n++) {
        const x = upload(xs[n]);
        let out: tf.Tensor2D;
        try { out = dec.layerForward(l, x, recs[n].ctx?.adapters ?? adapters, false).out; } finally { x.dispose(); }
        xs[n] = yield* toHost(out);
        yield;
      }
    } finally {
      release();
    }
  }
  return { xs, inputs };
}

/** Forward only: every record's loss (evaluation), layer-major. */
export function* lossLayerMajor(dec: Decoder, recs: PassRecord[], adapters?: Map<string, LoraAdapter>): Steps<RecordPass[]> {
  const { xs } = yield* forwardToLayer(dec, recs, dec.cfg.numLayers, adapters);
  const passes = yield* headLayerMajor(dec, recs, xs, false);
  return passes.map((p) => ({ loss: p.loss, tokens: p.tokens }));
}

/**
 * Forward and backward of every record, layer-major. Layers below `lowestLayer` run forward only; each record's
 * `ctx` taps its modules and accumulates its LoRA gradients, as recordBackwardSteps does for one record.
 */
export function* backwardLayerMajor(dec: Decoder, recs: PassRecord[], lowestLayer: number, adapters?: Map<string, LoraAdapter>): Steps<RecordPass[]> {
  const nL = dec.cfg.numLayers;
  const { xs, inputs } = yield* forwardToLayer(dec, recs, nL, adapters, lowestLayer);
  const passes = yield* headLayerMajor(dec, recs, xs, true);
  const ds: (Held | undefined)[] = [];
  for (const p of passes) ds.push(yield* toHost(p.dHidden!));
  for (let l = nL - 1; l >= lowestLayer; l--) {
    const release = dec.holdLayer(l);
    try {
      for (let n = 0; n < recs.length; n++) {
        if (!ds[n]) continue;
        const ctx = { ...recs[n].ctx, adapters: recs[n].ctx?.adapters ?? adapters, needInputGrad: l > lowestLayer };
        const x = upload(inputs[l - lowestLayer][n]);
        const d = upload(ds[n]!);
        let dPrev: tf.Tensor2D | undefined;
        try {
          const { out, cache } = dec.layerForward(l, x, ctx.adapters, true);
          out.dispose();
          try { dPrev = dec.layerBackward(l, d, cache!, ctx); } finally { disposeCache(cache!); ctx.afterLayer?.(); }
        } finally {
          tf.dispose([x, d]);
        }
        ds[n] = dPrev ? yield* toHost(dPrev) : undefined;
        yield;
      }
    } finally {
      release();
    }
  }
  return passes.map((p) => ({ loss: p.loss, tokens: p.tokens }));
}

/** The LM head and the loss of every record from its last hidden state (host), with dL/dhidden when asked. */
function* headLayerMajor(dec: Decoder, recs: PassRecord[], xs: Held[], wantGrad: boolean): Steps<HeadPass[]> {
  const hidden = xs.map(upload);
  try {
    return yield* dec.headLossManySteps(recs.map((r, n) => ({ hidden: hidden[n], ids: r.ids, mask: r.mask })), wantGrad);
  } finally {
    tf.dispose(hidden);
  }
}
