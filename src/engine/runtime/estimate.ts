// Before a job starts: how much memory and time it will take on the chosen backend, from the model's shapes alone.
// A job that cannot fit is refused with the reason and the backend that would fit, instead of dying halfway.
import * as os from 'node:os';
import type { Backend } from '../../protocol/messages';
import { DEFAULTS } from '../../protocol/params';
import { ModelConfig } from '../hf/config';
import { candidateModules, parameterCount } from '../hf/modules';
import { badInput } from './errors';
import { recordActivationBytes, type JobTaps } from '../model/estimate';

/** The wasm32 heap stops at 4 GiB; leave room for the allocator's fragmentation and XNNPACK's scratch. */
export const WASM_HEAP_BYTES = 4 * 1024 ** 3;
const WASM_USABLE = 0.9 * WASM_HEAP_BYTES;

export interface JobEstimate {
  /** Bytes the backend holds for the job at its peak (the wasm heap on wasm, the GPU's memory on webgpu). */
  heapBytes: number;
  weightsBytes: number;
  activationBytes: number;
  /** Host memory the job holds beside the backend's (boundary activations between layers, read buffers). */
  hostBytes: number;
  /** The backend's memory budget the plan was made for. */
  budgetBytes: number;
  /** Floating-point operations of the whole job. */
  flops: number;
  /** Seconds, from the backend's typical throughput on this machine's cores, and the weights' reading and upload. */
  seconds: number;
  fits: boolean;
  note: string;
  /** The decoder layers are left in the weight files and read one at a time, layer-major over the records. */
  stream: boolean;
  /** The embedding and head are left in the files too (read by rows, by parts). */
  streamVocab: boolean;
  /** Streamed layers keep both layouts while on the backend (else the backward takes W^T as its left operand). */
  bothLayouts: boolean;
  /** record-major: the model resident, records one after another; layer-major: each layer once for many records. */
  schedule: 'record-major' | 'layer-major';
  /** Records a layer-major pass takes at once (their activations wait in host memory between layers). */
  groupSize: number;
  /** How many times the decoder layers' weights cross to the backend in the whole job. */
  weightMoves: number;
}

/** Typical sustained GFLOP/s per backend for our kernels (measured on 2 cores, and webgpu on an H200; docs/benchmark.md). */
function throughput(backend: Backend, threads: number): number {
  switch (backend) {
    case 'wasm': return threads > 1 ? 28 : 18;
    case 'cpu': return 0.7;
    case 'tensorflow': return 80;
    case 'webgpu': return 500;
  }
}

/** The default GPU memory budget: WebGPU does not report a device's memory, so the user sets it (domlora.gpuMemoryGiB). */
export const DEFAULT_GPU_MEMORY_GIB = DEFAULTS.gpuMemoryGiB;

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
  /** Records one layer-major pass would take at once (the probe's N, a training step's batch); 1 when absent. */
  recordsPerPass?: number;
  /** Bytes per stored weight (2 for BF16/F16 files), for the host buffers of streamed layers. 4 when absent. */
  storedBytes?: number;
  /** The GPU memory budget in GiB (webgpu); DEFAULT_GPU_MEMORY_GIB when absent. */
  gpuMemoryGiB?: number;
}

/**
 * The largest weight buffer a streamed layer brings to the backend (model/linear.ts uploadLinear): its linears come in
 * column blocks of at most this. Whole modules (235 MB in an 8B model, and on wasm XNNPACK's packed copies a few KB
 * larger), freed and allocated again layer after layer between the activations, fragment the wasm heap, whose
 * allocator cannot move blocks (issue #13: the heap of an 8B-shaped probe grew by a module every other layer); blocks
 * of one size fit one another's holes.
 */
export const WEIGHT_BLOCK_BYTES = 32 * 1024 ** 2;

/** The part of a streamed vocabulary table one upload brings (its rows, and their transpose): one weight block's size. */
export const STREAMED_PART_BYTES = WEIGHT_BLOCK_BYTES;

/** Bytes the backend may hold for a job. DOMLORA_MEMORY_BUDGET (bytes) lowers it: a small model then plans as a big one. */
function budgetOf(e: EstimateInput): number {
  const forced = Number(process.env.DOMLORA_MEMORY_BUDGET);
  if (Number.isFinite(forced) && forced > 0) return forced;
  const machine = 0.85 * os.totalmem();
  if (e.backend === 'wasm') return Math.min(WASM_USABLE, machine);
  if (e.backend === 'webgpu') return (e.gpuMemoryGiB ?? DEFAULT_GPU_MEMORY_GIB) * 1024 ** 3;
  return machine;
}

export function estimateJob(e: EstimateInput): JobEstimate {
  const { cfg } = e;
  const T = e.tokensPerRecord, H = cfg.hiddenSize, L = cfg.numLayers;
  const wasm = e.backend === 'wasm';
  // Fused modules (qkv_proj, gate_up_proj, c_attn) count with their real [d_in, d_out].
  const modules = candidateModules({ ...cfg, numLayers: 1, slidingWindows: [null] });
  const layerParams = modules.reduce((s, m) => s + m.dIn * m.dOut, 0);
  const biggestModule = Math.max(...modules.map((m) => m.dIn * m.dOut));
  const linears = layerParams * L;
  const embed = cfg.vocabSize * H;
  const positions = cfg.positions === 'learned' ? cfg.maxPositionEmbeddings * H : 0;
  // The embedding (gathered, never packed) and the head's transpose stay on the backend; on wasm XNNPACK keeps a
  // packed copy of each matmul operand: the transpose (logits), and for a backward pass the head's rows too
  // (dL/dh = dL/dlogits . head). An untied head adds its own rows. GPT-2's learned positions stay as well.
  const vocabTables = 1 + (cfg.tieWordEmbeddings ? 0 : 1) + 1 + (wasm ? 1 : 0) + (wasm && e.backwardPasses > 0 ? 1 : 0);
  const vocabResident = 4 * (embed * vocabTables + positions);
  // Streamed: one part of the head at a time, rows and transpose (and their packed copies on wasm).
  const vocabStreamed = Math.min(STREAMED_PART_BYTES, 4 * embed) * (wasm ? 4 : 2) + 4 * positions;
  // A linear on the backend: both layouts, each with XNNPACK's packed copy on wasm (a GPU packs nothing).
  const copies = wasm ? 4 : 2;
  const residentWeights = 4 * linears * copies + vocabResident;
  // Streamed layers: one layer at a time, in both layouts or one, each with XNNPACK's packed copy on wasm. Beside the
  // layer, two blocks: one of rows in flight while a module uploads (model/linear.ts uploadLinear), and about one for
  // the backward's partial sums over the blocks (three [d_in, T]); with one layout the backward copies no weight.
  const block = Math.min(4 * biggestModule, WEIGHT_BLOCK_BYTES);
  // On wasm a streamed layer's weights are freed and allocated again for every layer, and the allocator cannot move
  // blocks: two blocks' holes it fails to reuse are counted.
  const slack = wasm ? 2 * block : 0;
  const layerBoth = 4 * layerParams * copies + slack, layerOne = 4 * layerParams * copies / 2 + 2 * block + slack;
  // A forward-only job (evaluation, generation) keeps no layer's activations for a backward pass.
  const layersKept = e.backwardPasses > 0 ? L - (e.lowestLayer ?? 0) : 0;
  const taps = e.taps ?? 'page';
  const residentActs = recordActivationBytes(cfg, T, layersKept, false, taps);
  // Layer-major: one record's layer at a time on the backend; every record's hidden state during the head.
  const N = Math.max(1, e.recordsPerPass ?? 1);
  const streamActs = recordActivationBytes(cfg, T, layersKept, true, taps) - 4 * T * H * layersKept + 4 * N * T * H * 2;
  const budget = budgetOf(e);
  const machine = 0.85 * os.totalmem();
  // The plan: resident if it fits (fastest); else layers streamed (vocabulary resident if it still fits), both layouts
  // if they fit.
  const plans = [
    { stream: false, streamVocab: false, both: true, weights: residentWeights },
    { stream: true, streamVocab: false, both: true, weights: layerBoth + vocabResident },
    { stream: true, streamVocab: false, both: false, weights: layerOne + vocabResident },
    { stream: true, streamVocab: true, both: true, weights: layerBoth + vocabStreamed },
    { stream: true, streamVocab: true, both: false, weights: layerOne + vocabStreamed },
  ];
  const acts = (p: { stream: boolean }) => (p.stream ? streamActs : residentActs);
  const plan = plans.find((p) => p.weights + acts(p) <= budget) ?? plans[plans.length - 1];
  const activationBytes = acts(plan);
  const heapBytes = plan.weights + activationBytes;
  // Host memory of a layer-major pass: each record's input of every layer it recomputes, the gradients flowing down,
  // and a layer read from the files (stored bytes, then f32).
  const storedBytes = e.storedBytes ?? 4;
  const groupBudget = Math.max(T * H * 4 * (layersKept + 2), 0.25 * machine);
  const groupSize = plan.stream ? Math.max(1, Math.min(N, Math.floor(groupBudget / (4 * T * H * (layersKept + 2))))) : 1;
  const hostBytes = plan.stream ? 4 * groupSize * T * H * (layersKept + 2) + layerParams * (storedBytes + 4) : 0;
  const Tm = Math.min(T, e.meanTokensPerRecord ?? T);
  const perTokenFwd = 2 * (linears + L * 2 * Tm * cfg.numHeads * cfg.headDim) + 2 * embed;
  // Streaming recomputes each layer's forward pass in backward: 4 passes of work per record instead of 3.
  const flops = Tm * perTokenFwd * ((plan.stream ? 4 : 3) * e.backwardPasses + (e.forwardPasses ?? 0));
  // Layer-major: per group, the layers cross twice for a backward pass (forward, then backward), once forward only.
  const groups = (passes: number) => Math.ceil(passes / groupSize);
  const weightMoves = plan.stream ? 2 * groups(e.backwardPasses) + groups(e.forwardPasses ?? 0) : 1;
  // Reading a layer from the files (page cache) and converting it runs at about 1 GB/s of f32 here.
  const seconds = flops / (throughput(e.backend, e.threads) * 1e9) + (plan.stream ? (weightMoves * linears * 4) / 1e9 : 0);
  let fits = heapBytes <= budget && heapBytes + hostBytes <= machine;
  const params = `${(parameterCount(cfg) / 1e6).toFixed(0)}M parameters`;
  let note = plan.stream
    ? `the model (${params}) would need ${gib(residentWeights)} resident: its layers are streamed from the files one at a time, ` +
      `layer-major over ${groupSize} record${groupSize === 1 ? '' : 's'} at once (the weights cross ${weightMoves} time${weightMoves === 1 ? '' : 's'})` +
      (plan.streamVocab ? ', the embedding and head read in parts' : '')
    : '';
  if (!fits) {
    fits = false;
    note = heapBytes > budget
      ? `needs about ${gib(heapBytes)} of ${budgetName(e)} even with its layers and vocabulary read from the files one part at a time (${params})`
      : `needs about ${gib(heapBytes + hostBytes)}, and this machine has ${gib(os.totalmem())}`;
  }
  return {
    heapBytes, weightsBytes: plan.weights, activationBytes, hostBytes, budgetBytes: budget, flops, seconds, fits, note,
    stream: plan.stream, streamVocab: plan.streamVocab, bothLayouts: plan.both, schedule: plan.stream ? 'layer-major' : 'record-major',
    groupSize, weightMoves,
  };
}

function budgetName(e: EstimateInput): string {
  if (e.backend === 'wasm') return 'the 4 GiB wasm heap';
  if (e.backend === 'webgpu') return `the ${e.gpuMemoryGiB ?? DEFAULT_GPU_MEMORY_GIB} GiB GPU budget (domlora.gpuMemoryGiB, --gpu-memory)`;
  return 'this machine\'s memory';
}

export function gib(bytes: number): string {
  return bytes >= 1024 ** 3 ? `${(bytes / 1024 ** 3).toFixed(1)} GiB` : `${Math.round(bytes / 1024 ** 2)} MiB`;
}

export function describeEstimate(est: JobEstimate, backend: Backend): string {
  const mins = est.seconds >= 90 ? `${(est.seconds / 60).toFixed(1)} min` : `${Math.max(1, Math.round(est.seconds))} s`;
  return `estimate on ${backend}: about ${gib(est.heapBytes)} of memory (weights ${gib(est.weightsBytes)}, activations ${gib(est.activationBytes)})` +
    `${est.hostBytes ? ` and ${gib(est.hostBytes)} of host memory` : ''}, ~${mins}; ${est.schedule}` + (est.stream ? `: ${est.note}` : '');
}

/** Throws a clear bad-input error when the job cannot fit, naming the backend that would. */
export function assertFits(est: JobEstimate, backend: Backend, modelDir?: string): void {
  if (est.fits) return;
  const alt = backend === 'wasm'
    ? 'Install @tensorflow/tfjs-node (native CPU, no 4 GiB heap) or @tensorflow/tfjs-node-gpu and run with --backend tensorflow, or use --seq-len to shorten records'
    : backend === 'webgpu'
      ? 'Raise domlora.gpuMemoryGiB (--gpu-memory) if the GPU has more memory, or use --seq-len to shorten records'
      : 'Use a machine with more memory, or --seq-len to shorten records';
  throw badInput(`this job will not fit: it ${est.note}. ${alt}.`, modelDir);
}
