// What every job does before its work, in one place and in one order:
//   1. open the model folder (config.json parsed once, safetensors headers, tokenizer);
//   2. (the job reads and tokenizes its data, so the records' real lengths are known, and checks its other inputs)
//      and start the backend sized to the model: bad input is reported before a backend starts;
//   3. size the job once from those lengths, show the estimate, refuse it when it cannot fit, and load the weights
//      resident or streamed as that one estimate says.
import type { BackendChoice } from '../../protocol/messages';
import { BackendReport, initBackend, threadsForModel, describeBackend } from './backend';
import { EstimateInput, JobEstimate, assertFits, describeEstimate, estimateJob } from './estimate';
import { JobHooks } from './jobs';
import { ModelFolder, openModelFolder } from '../hf/folder';
import { Decoder } from '../model/decoder';
import { ModelTokenizer } from '../hf/tokenizer';

export interface JobInputs { folder: ModelFolder; tokenizer: ModelTokenizer }
export interface OpenedJob extends JobInputs { backend: BackendReport }

export async function openJob(modelDir: string, choice: BackendChoice | undefined, hooks: JobHooks = {}): Promise<OpenedJob> {
  return startBackend(openInputs(modelDir), choice, hooks);
}

/**
 * Step 1 without the backend: the folder's headers and its tokenizer. A job that can check the rest of its input
 * (its data, a report, an adapter, a checkpoint) from these alone does so before startBackend, so a bad file is
 * named before a backend starts.
 */
export function openInputs(modelDir: string): JobInputs {
  const folder = openModelFolder(modelDir);
  return { folder, tokenizer: ModelTokenizer.load(folder.dir) };
}

/** Starts the backend sized to the model and says which one it is. */
export async function startBackend(inputs: JobInputs, choice: BackendChoice | undefined, hooks: JobHooks = {}): Promise<OpenedJob> {
  const backend = await initBackend(choice ?? 'auto', threadsForModel(inputs.folder.cfg.hiddenSize));
  hooks.log?.('info', `backend: ${describeBackend(backend)}`);
  return { ...inputs, backend };
}

export type JobShape = Omit<EstimateInput, 'cfg' | 'backend' | 'threads'>;

/** Sizes the job (once), logs the estimate, throws a clear error when it cannot fit, then loads the weights. */
export function loadForJob(job: OpenedJob, shape: JobShape, hooks: JobHooks = {}): { model: Decoder; estimate: JobEstimate; loadSeconds: number } {
  const { folder, backend } = job;
  const estimate = estimateJob({ cfg: folder.cfg, backend: backend.backend, threads: backend.threads,
    storedBytes: folder.store.dtypeBytes, ...shape });
  hooks.log?.('info', describeEstimate(estimate, backend.backend));
  assertFits(estimate, backend.backend, folder.dir);
  hooks.onProgress?.({ phase: 'load', done: 0, total: 1, message: estimate.stream ? 'loading model (layers read from the files when used)' : 'loading model' });
  const t0 = Date.now();
  const model = Decoder.load(folder.cfg, folder.store, { stream: estimate.stream, streamVocab: estimate.streamVocab, keepBothLayouts: estimate.bothLayouts });
  return { model, estimate, loadSeconds: (Date.now() - t0) / 1000 };
}

/** Longest and mean record length: the first sizes memory, the second time. */
export function recordLengths(records: { inputIds: number[] }[]): { tokensPerRecord: number; meanTokensPerRecord: number } {
  let max = 1, sum = 0;
  for (const r of records) { max = Math.max(max, r.inputIds.length); sum += r.inputIds.length; }
  return { tokensPerRecord: max, meanTokensPerRecord: records.length ? sum / records.length : max };
}
