// The tensors the decoder's parts pass between them. Shapes: T = tokens of one record, H = hidden, I = intermediate,
// nH/nKV = attention/key-value heads, hd = head dim, rep = nH / nKV, V = vocab, r = LoRA rank.
import type * as tf from '@tensorflow/tfjs-core';

/**
 * One frozen linear module, kept transposed ([in, out]) so `x @ wt` is the fast path, in blocks of its output columns
 * (model/linear.ts): one block when the model is resident; blocks of at most WEIGHT_BLOCK_BYTES when its layers are
 * streamed, so that every weight buffer a streamed layer brings and frees is small and alike. Empty while a streamed
 * layer is not on the backend.
 */
export interface Linear {
  name: string;
  kind: string;
  dIn: number;
  dOut: number;
  /** W^T's column blocks, [d_in, n_k], the n_k summing to d_out. */
  wt: tf.Tensor2D[];
  /** W's matching row blocks, [n_k, d_in], for dx = dy @ W in backward; kept when memory allows (linear.ts). */
  w?: tf.Tensor2D[];
  bias?: tf.Tensor1D;
}

/** A norm's parameters: RMSNorm has a weight (Gemma's 1 + w already added), LayerNorm a weight and a bias. */
export interface Norm { w: tf.Tensor1D; b?: tf.Tensor1D }

/** A layer's weights: its norms by role (see arch/types.ts LayerNormNames) and its linears by kind. */
export interface LayerWeights {
  /** Absent in OLMo 2, whose blocks read the residual stream as it is. */
  inputNorm?: Norm;
  preMlpNorm?: Norm;
  attnOutNorm?: Norm;
  mlpOutNorm?: Norm;
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

export interface BackwardContext {
  adapters?: Map<string, LoraAdapter>;
  tap?: ModuleTap;
  loraGrads?: Map<string, LoraGrads>;
  /** Set per layer by the record's pass: false at the lowest layer, where dx is not needed. */
  needInputGrad?: boolean;
  /** The module kinds of the lowest layer that must be reached (tapped or trained); the rest of it is skipped. */
  lowestKinds?: string[];
  /** Called after each layer's backward of this record (a tap drops what it kept for that layer). */
  afterLayer?(): void;
}

export interface RecordPass {
  /** Mean cross-entropy over the supervised tokens of the record. */
  loss: number;
  tokens: number;
}

/** What a norm's backward needs: its input, 1/rms (or 1/std) [n, 1], and LayerNorm's mean [n, 1]. */
export interface NormCache { x: tf.Tensor2D; r: tf.Tensor2D; mu?: tf.Tensor2D }

/** What every part of a layer reads besides its weights: the config, the architecture's roles, the shared tables. */
export interface LayerContext {
  cfg: import('../hf/config').ModelConfig;
  roles: Readonly<import('../arch/types').ArchRoles>;
  rope: import('./rope').RopeTables;
  masks: import('./tables').MaskTables;
  /** The shape of the attention products: `grouped` 2-D matmuls per key/value group (wasm), `batched` (a GPU). */
  attention: import('../runtime/backend').AttentionShape;
}

/**
 * Where a layer's backward may stop early: at the lowest layer of a pass (`full` false) it stops once every module
 * kind that must be reached (tapped or trained) has been seen, since nothing below needs a gradient.
 */
export interface BackwardStop {
  readonly full: boolean;
  /** Marks kinds as seen; true when the backward can stop here. */
  done(...kinds: (string | undefined)[]): boolean;
}
