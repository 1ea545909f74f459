// Before a job starts: how much memory and time it will take on the chosen backend, from the model's shapes alone.
// A job that cannot fit is refused with the reason and the backend that would fit, instead of dying halfway.
import * as os from 'node:os';
import type { Backend } from '../../protocol/messages';
import { ModelConfig } from '../hf/config';
import { candidateModules, parameterCount } from '../hf/modules';
import { badInput } from './errors';
import { recordActivationBytes, type JobTaps } from '../model/estimate';

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
