// Before a job starts: how much memory and time it will take on the chosen backend, from the model's shapes alone.
// A job that cannot fit is refused with the reason and the backend that would fit, instead of dying halfway.
import * as os from 'node:os';
import type { Backend } from '../../protocol/messages';
import { ArchRoles, ModelConfig, archOf, candidateModules, parameterCount } from '../hf/config';
import { badInput } from './errors';
import { headChunkRows } from '../model/decoder';

/** The wasm32 heap stops at 4 GiB; leave room for the allocator's fragmentation and XNNPACK's scratch. */
export const WASM_HEAP_BYTES = 4 * 1024 ** 3;
const WASM_USABLE = 0.9 * WASM_HEAP_BYTES;

export interface JobEstimate {
  /** Bytes the backend holds for the job (the wasm heap on wasm). */
  heapBytes: number;
  weightsBytes: number;
  activationBytes: number;
  /** Floating-point operations of the whole job. */
  flops: number;
  /** Seconds, from the backend's typical throughput on this machine's cores. */
  seconds: number;
  fits: boolean;
  note: string;
  /** Run with the decoder layers streamed from host memory (the resident model does not fit the backend). */
  stream: boolean;
}

/** Typical sustained GFLOP/s per backend for our kernels (measured on 2 cores; see docs/benchmark.md). */
function throughput(backend: Backend, threads: number): number {
  switch (backend) {
    case 'wasm': return threads > 1 ? 28 : 18;
    case 'cpu': return 0.7;
    case 'tensorflow': return 80;
    case 'webgpu': return 500;
  }
}

export interface EstimateInput {
  cfg: ModelConfig; backend: Backend; threads: number;
  /** The longest record: what memory is sized for. */
  tokensPerRecord: number;
  /** The mean record length, for the time; the longest when absent. */
  meanTokensPerRecord?: number;
  /** Forward+backward record passes the job makes (probe: N; train: steps x batch + evals); 0: forward only. */
  backwardPasses: number; forwardPasses?: number; lowestLayer?: number;
  /** PAGE taps (the default, the most memory), LoRA paths, or none. */
  taps?: JobTaps;
}

/**
 * Floats one decoder layer holds for a record of T tokens, following model.ts for the architecture:
 * `kept`, its LayerCache (what layerForward keeps for backward, held until the record's backward ends), and `work`,
 * the tensors alive at once inside one layer's backward (tf.tidy frees them only when the layer is done). Counted
 * op by op from layerForwardResident / layerBackwardResident; reshapes share their input's buffer and are not
 * counted, splits and transposes copy and are. Shapes: Q = nH*hd, K = nKV*hd. The forward's own temporaries are
 * fewer than the backward's and are not counted.
 *
 * `tapKept` and `tapWork` are an allowance for what rides on the linear modules (page.ts and model.ts's LoRA path),
 * bounded rather than counted, since which modules are tapped or adapted and the rank are not known here:
 * - tapWork, per module T (2 d_in + 3 d_out): a PAGE tap's Delta^T, then either Delta^T X and its square (page.ts
 *   forms that product only when it costs less than the Gram route, T d_in d_out < ~T^2 (d_in + d_out)) or the
 *   Gram route's Delta Delta^T and its product with X X^T; a LoRA path's Delta^T, dx and its sum [T, d_in]. The
 *   rank-sized products ([T, r], [r, d]) are left out.
 * - tapKept: PAGE's Gram matrices X X^T (at most [T, T]), one per distinct module input (q/k/v, o, gate/up or fc,
 *   down) that may take the Gram route (page.ts's expectedRoutes, read generously: the Gram route costs at most
 *   T^2 (d_in + d_out) and at least half that; a product over 16M elements is never formed), kept until the record
 *   ends. LoRA's x A^T [T, r] per adapted module is left out.
 */
export function layerActivationFloats(cfg: ModelConfig, T: number): { kept: number; work: number; tapKept: number; tapWork: number } {
  const H = cfg.hiddenSize, I = cfg.intermediateSize, nH = cfg.numHeads, nKV = cfg.numKvHeads;
  const Q = nH * cfg.headDim, K = nKV * cfg.headDim, TT = nH * T * T;
  const roles: ArchRoles = archOf(cfg.modelType).roles;
  const gated = !roles.fc; // gate and up (separate or fused), else GPT-2's plain fc -> act
  const ln = cfg.normType === 'layernorm';
  const softcap = cfg.attnSoftcap ? 1 : 0;
  const sandwich = cfg.sandwichNorms ? 1 : 0;
  // A NormCache: the norm's input [n, d], 1/rms [n, 1], and LayerNorm's mean [n, 1].
  const normKept = (n: number, d: number) => n * d + n * (ln ? 2 : 1);
  // normBackward: xhat, dxhat, dxhat*xhat, xhat*dot, the difference, the result (LayerNorm: x - mu, centred dxhat).
  const normWork = (n: number, d: number) => n * d * (ln ? 8 : 6) + n * (ln ? 2 : 1);
  const kept =
    normKept(T, H) + T * H // n1 (x: the layer input) and h1
    + T * Q + 2 * T * K + T * Q // q, k, v (roped, kv-group major) and att, o_proj's input
    + TT * (1 + softcap) // p, and Gemma 2's tanh(scores / cap)
    + normKept(T, H) + T * H // n2 (x: the residual after attention, or a copy of the layer input when parallel) and h2
    + T * I * (gated ? 3 : 2) // g, act and, when gated, u
    + (cfg.qkNorm ? normKept(T * nH, cfg.headDim) + normKept(T * nKV, cfg.headDim) : 0) // Qwen 3's qn, kn
    + sandwich * 2 * normKept(T, H); // Gemma 2's an, mn
  // Backward, MLP: dAct, act and act' (silu: 6 tensors, tanh-gelu: 19, erf-gelu: 11), the gate/up or fc gradients,
  // the pre-MLP norm.
  const actWork = cfg.hiddenAct === 'gelu_tanh' ? 19 : cfg.hiddenAct === 'gelu' ? 11 : 6;
  let mlp = T * I + actWork * T * I + sandwich * normWork(T, H);
  if (!gated) mlp += T * I + T * H; // dAct * act'(g), then fc's dx
  else mlp += 3 * T * I + (roles.gateUp ? 2 * T * I + T * H : 3 * T * H); // dg, du; fused: their concat and one dx
  mlp += normWork(T, H) + T * H; // n2's backward and the residual sum
  // Attention: dAtt and its transpose, the unstacked dO, p, q, k, v (and caps), per kv group dP, the softmax backward
  // (4 [rep*T, T]), the scale, dS^T and p^T (7 in all, +3 through the soft-cap), dq, dk, dv and their stacks.
  let att = sandwich * normWork(T, H) + 2 * T * Q
    + (T * Q + TT * (1 + softcap) + T * Q + 2 * T * K)
    + (T * K + TT * (7 + 3 * softcap) + nH * T + T * Q + 2 * T * K)
    + (2 * T * Q + 2 * T * K) + 2 * T * K;
  if (cfg.positions === 'rope') att += 5 * T * Q + 5 * T * K; // the inverse rotation of dq and dk
  if (cfg.qkNorm) att += normWork(T * nH, cfg.headDim) + normWork(T * nKV, cfg.headDim);
  att += roles.qkv ? T * (Q + 2 * K) + T * H : 4 * T * H; // fused: the concat and one dx; else three dx and their sum
  att += normWork(T, H) + T * H; // n1's backward and the residual sum
  // The allowance for taps and LoRA paths (see above).
  const inputOf: Record<string, string> = {};
  for (const [role, kind] of Object.entries(roles)) inputOf[kind as string] = ['q', 'k', 'v', 'qkv'].includes(role) ? 'h1' : role === 'o' ? 'att' : role === 'down' ? 'act' : 'h2';
  const gram = new Set<string>();
  let tapWork = 0;
  for (const m of candidateModules({ ...cfg, numLayers: 1, slidingWindows: [null] })) {
    tapWork += T * (2 * m.dIn + 3 * m.dOut);
    if (2 * m.dIn * m.dOut >= T * (m.dIn + m.dOut) || m.dIn * m.dOut > 16 * 1024 * 1024) gram.add(inputOf[m.kind]);
  }
  return { kept, work: mlp + att, tapKept: gram.size * T * T, tapWork };
}

/**
 * Activation bytes of one record's forward and backward (what recordBackward holds on top of the weights):
 * resident, every layer from `layersKept` down keeps its cache until the backward ends; checkpointed, only each
 * layer's input, and one layer's cache at a time. Plus one layer's backward work (with the taps' allowance) or the
 * LM head's, whichever is larger (they never overlap), the hidden state and its gradient, and the RoPE and mask tables.
 */
export function recordActivationBytes(cfg: ModelConfig, T: number, layersKept: number, checkpointed: boolean, taps: JobTaps = 'page'): number {
  const f = layerActivationFloats(cfg, T);
  const { kept, work } = f;
  // Only the probe keeps Gram matrices; a LoRA path has the per-module work but keeps nothing of its own.
  const tapKept = taps === 'page' ? f.tapKept : 0;
  const tapWork = taps === 'none' ? 0 : f.tapWork;
  const H = cfg.hiddenSize, V = cfg.vocabSize;
  // headLoss: chunks of n rows, each with its logits and, for the gradient, softmax - onehot (7 [n, V]; 13 capped).
  const n = headChunkRows(T, V);
  const head = n * V * (cfg.finalSoftcap ? 13 : 7) + n * H + 4 * T * H;
  const windows = new Set(cfg.slidingWindows.map((w) => (w !== null && w < T ? w : T))).size;
  const tables = windows * (cfg.numHeads / cfg.numKvHeads) * T * T + (cfg.positions === 'rope' ? (cfg.ropeLocalTheta != null ? 4 : 2) * T * cfg.headDim : 0);
  if (layersKept === 0) return 4 * (kept + Math.max(tapWork, head) + 2 * T * H + tables); // forward only: one layer at a time
  const layers = (checkpointed ? T * H : kept) * layersKept + (checkpointed ? kept : 0) + tapKept * layersKept;
  return 4 * (layers + Math.max(work + tapWork, head) + 2 * T * H + tables);
}

/** What rides on the linear modules: PAGE taps (the probe), LoRA paths (training), or nothing (evaluation). */
export type JobTaps = 'page' | 'lora' | 'none';

export function estimateJob(e: EstimateInput): JobEstimate {
  const { cfg } = e;
  const T = e.tokensPerRecord;
  // Fused modules (qkv_proj, gate_up_proj, c_attn) count with their real [d_in, d_out].
  const linears = candidateModules(cfg).reduce((s, m) => s + m.dIn * m.dOut, 0);
  const embed = cfg.vocabSize * cfg.hiddenSize;
  // The embedding, its transpose for the head and XNNPACK's packed copy of the head operand stay on the backend;
  // so do GPT-2's learned position embeddings.
  const positions = cfg.positions === 'learned' ? cfg.maxPositionEmbeddings * cfg.hiddenSize : 0;
  const embedBytes = 4 * (embed * 3 + (cfg.tieWordEmbeddings ? 0 : embed) + positions);
  // Resident: every linear in both layouts, plus XNNPACK's packed copy of each matmul operand.
  const residentWeights = 4 * linears * 4 + embedBytes;
  // Streamed: one layer (two while one is released and the next uploaded) in both layouts with packed copies.
  const streamWeights = 2 * 4 * (linears / cfg.numLayers) * 4 + embedBytes;
  // A forward-only job (evaluation, generation) keeps no layer's activations for a backward pass.
  const layersKept = e.backwardPasses > 0 ? cfg.numLayers - (e.lowestLayer ?? 0) : 0;
  const taps = e.taps ?? 'page';
  const residentActs = recordActivationBytes(cfg, T, layersKept, false, taps);
  // Checkpointed: each layer's input [T, H] plus one layer's activations.
  const streamActs = recordActivationBytes(cfg, T, layersKept, true, taps);
  const Tm = Math.min(T, e.meanTokensPerRecord ?? T);
  const perTokenFwd = 2 * (linears + cfg.numLayers * 2 * Tm * cfg.numHeads * cfg.headDim) + 2 * embed;
  const machine = 0.85 * os.totalmem();
  const limit = e.backend === 'wasm' ? Math.min(WASM_USABLE, machine) : machine;
  const stream = residentWeights + residentActs > limit && streamWeights + streamActs <= limit && e.backend === 'wasm';
  const weightsBytes = stream ? streamWeights : residentWeights;
  const activationBytes = stream ? streamActs : residentActs;
  const heapBytes = weightsBytes + activationBytes;
  // Streaming recomputes each layer's forward pass in backward: 4 passes of work per record instead of 3.
  const flops = Tm * perTokenFwd * ((stream ? 4 : 3) * e.backwardPasses + (e.forwardPasses ?? 0));
  const seconds = flops / (throughput(e.backend, e.threads) * 1e9);
  let fits = true;
  let note = stream ? `resident, the model would need ${gib(residentWeights)} of the 4 GiB wasm heap: its layers are streamed in one at a time` : '';
  if (heapBytes > limit) {
    fits = false;
    note = e.backend === 'wasm' && heapBytes <= machine
      ? `needs about ${gib(heapBytes)} of the wasm heap even with its layers streamed, and the heap stops at 4 GiB (model of ${(parameterCount(cfg) / 1e6).toFixed(0)}M parameters)`
      : `needs about ${gib(heapBytes)}, and this machine has ${gib(os.totalmem())}`;
  }
  return { heapBytes, weightsBytes, activationBytes, flops, seconds, fits, note, stream };
}

export function gib(bytes: number): string {
  return bytes >= 1024 ** 3 ? `${(bytes / 1024 ** 3).toFixed(1)} GiB` : `${Math.round(bytes / 1024 ** 2)} MiB`;
}

export function describeEstimate(est: JobEstimate, backend: Backend): string {
  const mins = est.seconds >= 90 ? `${(est.seconds / 60).toFixed(1)} min` : `${Math.max(1, Math.round(est.seconds))} s`;
  return `estimate on ${backend}: about ${gib(est.heapBytes)} of memory (weights ${gib(est.weightsBytes)}, activations ${gib(est.activationBytes)}), ~${mins}` +
    (est.stream ? `; ${est.note}` : '');
}

/** Throws a clear bad-input error when the job cannot fit, naming the backend that would. */
export function assertFits(est: JobEstimate, backend: Backend, modelDir?: string): void {
  if (est.fits) return;
  const alt = backend === 'wasm'
    ? 'Install @tensorflow/tfjs-node (native CPU, no 4 GiB heap) or @tensorflow/tfjs-node-gpu and run with --backend tensorflow, or use --seq-len to shorten records'
    : 'Use a machine with more memory, or --seq-len to shorten records';
  throw badInput(`this job will not fit: it ${est.note}. ${alt}.`, modelDir);
}
