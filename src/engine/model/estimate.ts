// What the decoder holds in memory for one record, counted from the code of this folder: one layer's cache (what
// layer.ts keeps for the backward), one layer's backward temporaries, the LM head's chunk, and the tables. The job
// estimate (../runtime/estimate.ts) adds the weights and decides the plan; estimate.test.ts keeps these counts equal
// to the bytes the engine really holds, per architecture.
import type { ArchRoles } from '../arch/types';
import type { ModelConfig } from '../hf/config';
import { archOf } from '../arch/registry';
import { candidateModules } from '../hf/modules';
import { headChunkRows } from './head';

/**
 * Floats one decoder layer holds for a record of T tokens, following layer.ts for the architecture:
 * `kept`, its LayerCache (what layerForward keeps for backward, held until the record's backward ends), and `work`,
 * the tensors alive at once inside one layer's backward (tf.tidy frees them only when the layer is done). Counted
 * op by op from layer.ts (layerForward / layerBackward and the parts they call); reshapes share their input's buffer and are not
 * counted, splits and transposes copy and are. Shapes: Q = nH*hd, K = nKV*hd. The forward's own temporaries are
 * fewer than the backward's and are not counted.
 *
 * `tapKept` and `tapWork` are an allowance for what rides on the linear modules (page.ts and linear.ts's LoRA path),
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
  const roles: ArchRoles = archOf(cfg.modelType).modules.roles;
  const gated = !roles.fc; // gate and up (separate or fused), else GPT-2's plain fc -> act
  const ln = cfg.normType === 'layernorm';
  // A NormCache: the norm's input [n, d], 1/rms [n, 1], and LayerNorm's mean [n, 1].
  const normKept = (n: number, d: number) => n * d + n * (ln ? 2 : 1);
  // normBackward: xhat, dxhat, dxhat*xhat, xhat*dot, the difference, the result (LayerNorm: x - mu, centred dxhat).
  const normWork = (n: number, d: number) => n * d * (ln ? 8 : 6) + n * (ln ? 2 : 1);
  const softcap = cfg.attnSoftcap ? 1 : 0;
  const sandwich = cfg.sandwichNorms ? 1 : 0;
  const names = archOf(cfg.modelType).tensors.norms;
  // The norms before attention and before the MLP, when the architecture has them (OLMo 2 has neither: its blocks
  // read the residual stream itself, a handle on the same buffer, so only the norm's own tensors go).
  const n1 = names.input ? 1 : 0, n2 = names.preMlp ? 1 : 0;
  // The q/k norms' rows: one per head ([T*n, hd]) or one per token over the projection ([T, n*hd], OLMo 2).
  const qkRows = (n: number) => (cfg.qkNorm === 'projection' ? T : T * n);
  const qkWidth = (n: number) => (cfg.qkNorm === 'projection' ? n * cfg.headDim : cfg.headDim);
  const qkKept = cfg.qkNorm ? normKept(qkRows(nH), qkWidth(nH)) + normKept(qkRows(nKV), qkWidth(nKV)) : 0;
  const qkWork = cfg.qkNorm ? normWork(qkRows(nH), qkWidth(nH)) + normWork(qkRows(nKV), qkWidth(nKV)) : 0;
  const kept =
    n1 * normKept(T, H) + T * H // n1 (x: the layer input) and h1 (the normed input, or the input itself)
    + T * Q + 2 * T * K + T * Q // q, k, v (roped, kv-group major) and att, o_proj's input
    + TT * (1 + softcap) // p, and Gemma 2's tanh(scores / cap)
    + n2 * normKept(T, H) + T * H // n2 (x: the residual after attention, or a copy of the layer input when parallel) and h2
    + T * I * (gated ? 3 : 2) // g, act and, when gated, u
    + qkKept // Qwen 3's, Gemma 3's and OLMo 2's qn, kn
    + sandwich * 2 * normKept(T, H); // Gemma 2's and OLMo 2's an, mn
  // Backward, MLP: dAct, act and act' (silu: 6 tensors, tanh-gelu: 19, erf-gelu: 11), the gate/up or fc gradients,
  // the pre-MLP norm.
  const actWork = cfg.hiddenAct === 'gelu_tanh' ? 19 : cfg.hiddenAct === 'gelu' ? 11 : 6;
  // Granite's residual_multiplier: dy times it, on the way into each block.
  const scaled = cfg.residualScale !== 1 ? T * H : 0;
  let mlp = T * I + actWork * T * I + sandwich * normWork(T, H) + scaled;
  if (!gated) mlp += T * I + T * H; // dAct * act'(g), then fc's dx
  else mlp += 3 * T * I + (roles.gateUp ? 2 * T * I + T * H : 3 * T * H); // dg, du; fused: their concat and one dx
  mlp += n2 * normWork(T, H) + T * H; // n2's backward and the residual sum
  // Attention: dAtt and its transpose, the unstacked dO, p, q, k, v (and caps), per kv group dP, the softmax backward
  // (4 [rep*T, T]), the scale, dS^T and p^T (7 in all, +3 through the soft-cap), dq, dk, dv and their stacks.
  let att = sandwich * normWork(T, H) + scaled + 2 * T * Q
    + (T * Q + TT * (1 + softcap) + T * Q + 2 * T * K)
    + (T * K + TT * (7 + 3 * softcap) + nH * T + T * Q + 2 * T * K)
    + (2 * T * Q + 2 * T * K) + 2 * T * K;
  // The inverse rotation of dq and dk, on any layer that rotates (SmolLM3's NoPE layers do not: an upper bound).
  if (cfg.ropeLayers.some(Boolean)) att += 5 * T * Q + 5 * T * K;
  att += qkWork;
  att += roles.qkv ? T * (Q + 2 * K) + T * H : 4 * T * H; // fused: the concat and one dx; else three dx and their sum
  att += n1 * normWork(T, H) + T * H; // n1's backward and the residual sum
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

