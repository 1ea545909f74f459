// Evaluation: the mean over records of each record's mean token cross-entropy (the same l_n that PAGE uses).
import * as tf from '@tensorflow/tfjs-core';
import type { EvalParams, EvalResult } from '../protocol/messages';
import { readDataset, requireUsable, tokenizeDataset, TokenizedRecord } from './data';
import { JobHooks, eta, throwIfCancelled, yieldToEvents } from './jobs';
import { loadModel } from './loader';
import { initBackend, threadsForModel, describeBackend } from './backend';
import { readConfig } from './config';
import type { LlamaModel, LoraAdapter } from './model';
import { loadAdapter } from './peft';
import { disposeAdapter } from './lora';
import { estimateJob, assertFits } from './estimate';

export interface EvalOutcome extends EvalResult { losses: number[] }

export async function evalRecords(model: LlamaModel, records: TokenizedRecord[], adapters?: Map<string, LoraAdapter>, hooks: JobHooks = {}): Promise<{ losses: number[]; tokens: number }> {
  const losses: number[] = [];
  let tokens = 0;
  const t0 = Date.now();
  for (let i = 0; i < records.length; i++) {
    await yieldToEvents();
    throwIfCancelled(hooks);
    const r = model.recordLoss(records[i].inputIds, records[i].lossMask, adapters);
    losses.push(r.loss);
    tokens += r.tokens;
    hooks.onProgress?.({ phase: 'eval', done: i + 1, total: records.length, loss: losses.reduce((a, b) => a + b, 0) / losses.length, etaSeconds: eta(t0, i + 1, records.length) });
  }
  return { losses, tokens };
}

/**
 * What a forward-only job needs: the backend (sized to the model), the job's memory plan checked, the model loaded
 * resident or streamed accordingly.
 */
async function openForForward(modelDir: string, choice: EvalParams['backend'], tokensPerRecord: number, hooks: JobHooks) {
  const cfg = readConfig(modelDir);
  const backend = await initBackend(choice ?? 'auto', threadsForModel(cfg.hiddenSize));
  hooks.log?.('info', `backend: ${describeBackend(backend)}`);
  const est = estimateJob({ cfg, backend: backend.backend, threads: backend.threads, tokensPerRecord, backwardPasses: 0 });
  assertFits(est, backend.backend);
  return { backend, ...loadModel(modelDir, { stream: est.stream }) };
}

export async function runEval(params: EvalParams, hooks: JobHooks = {}): Promise<EvalOutcome> {
  const seqLen = params.seqLen ?? 512;
  const ds = readDataset(params.data);
  const { backend, model, tokenizer, folder } = await openForForward(params.modelDir, params.backend, seqLen, hooks);
  let adapters: Map<string, LoraAdapter> | undefined;
  try {
    if (params.adapter) adapters = loadAdapter(params.adapter, folder).adapters;
    const tok = tokenizeDataset(ds, tokenizer, { seqLen, limit: params.maxSamples });
    requireUsable(tok, seqLen, ds.file);
    const { losses, tokens } = await evalRecords(model, tok.records, adapters, hooks);
    return {
      meanLoss: losses.reduce((a, b) => a + b, 0) / losses.length, samples: losses.length, tokens, skipped: tok.skipped,
      backend: backend.backend, losses, ...(params.adapter ? { adapter: params.adapter } : {}),
    };
  } finally {
    if (adapters) for (const a of adapters.values()) disposeAdapter(a);
    model.dispose();
  }
}

export interface GenerateResult { ids: number[]; text: string; lastTop: [number, number][]; promptIds: number[] }

/** Greedy decoding, and the top-5 logits after the prompt (checked against golden_reference.json). */
export async function runGenerate(params: { modelDir: string; prompt: string; maxNewTokens?: number; backend?: EvalParams['backend']; adapter?: string }): Promise<GenerateResult> {
  const { model, tokenizer, folder } = await openForForward(params.modelDir, params.backend, 512, {});
  let adapters: Map<string, LoraAdapter> | undefined;
  try {
    if (params.adapter) adapters = loadAdapter(params.adapter, folder).adapters;
    const promptIds = tokenizer.encode(params.prompt, { addSpecial: true });
    const ids = [...promptIds];
    let lastTop: [number, number][] = [];
    for (let step = 0; step <= (params.maxNewTokens ?? 20); step++) {
      const logits = tf.tidy(() => {
        const h = model.hiddenStates(ids, adapters);
        return model.logitsAt(h, [ids.length - 1]);
      });
      const row = Array.from(logits.dataSync());
      logits.dispose();
      const order = row.map((v, i) => [i, v] as [number, number]).sort((a, b) => b[1] - a[1]);
      if (step === 0) lastTop = order.slice(0, 5);
      if (step === (params.maxNewTokens ?? 20)) break;
      ids.push(order[0][0]);
      if (order[0][0] === tokenizer.eosId) break;
    }
    return { ids, promptIds, text: tokenizer.decode(ids.slice(promptIds.length)), lastTop };
  } finally {
    if (adapters) for (const a of adapters.values()) disposeAdapter(a);
    model.dispose();
  }
}
