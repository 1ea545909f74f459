// Evaluation: the mean over records of each record's mean token cross-entropy (the same l_n that PAGE uses).
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import type { EvalParams, EvalResult } from '../../protocol/messages';
import { DEFAULTS } from '../../protocol/params';
import { readDataset } from '../data/read';
import { announceData, summariseData } from '../data/summary';
import { badInput } from '../runtime/errors';
import { checkLimits, jobSeqLen } from '../runtime/limits';
import { requireUsable, tokenizeDataset, TokenizedRecord } from '../data/tokenize';
import { JobHooks, eta, runStepsAsync, throwIfCancelled, yieldToEvents } from '../runtime/jobs';
import { openInputs, startBackend, loadForJob, recordLengths } from '../runtime/setup';
import type { Decoder } from '../model/decoder';
import { lossLayerMajor } from '../model/schedule';
import type { LoraAdapter } from '../model/types';
import { readAdapterFiles, uploadAdapter } from '../export/peft';
import { disposeAdapter } from '../model/lora';

/**
 * Each record's loss, forward only: record by record, or, when the model's layers are read from the files, in groups
 * of `groupSize` records per layer-major pass (each layer read once per group).
 */
export async function evalRecords(model: Decoder, records: TokenizedRecord[], adapters?: Map<string, LoraAdapter>, hooks: JobHooks = {},
  groupSize = 8): Promise<{ losses: number[]; tokens: number }> {
  const losses: number[] = [];
  let tokens = 0;
  const t0 = Date.now();
  const group = model.plan.streamLayers ? Math.max(1, groupSize) : 1;
  for (let i = 0; i < records.length; i += group) {
    await yieldToEvents();
    throwIfCancelled(hooks);
    const recs = records.slice(i, i + group);
    const passes = recs.length === 1
      ? [await runStepsAsync(model.recordLossSteps(recs[0].inputIds, recs[0].lossMask, adapters), hooks)]
      : await runStepsAsync(lossLayerMajor(model, recs.map((r) => ({ ids: r.inputIds, mask: r.lossMask })), adapters), hooks);
    for (const r of passes) { losses.push(r.loss); tokens += r.tokens; }
    const done = losses.length;
    hooks.onProgress?.({ phase: 'eval', done, total: records.length, loss: losses.reduce((a, b) => a + b, 0) / done, etaSeconds: eta(t0, done, records.length) });
  }
  return { losses, tokens };
}

export async function runEval(params: EvalParams, hooks: JobHooks = {}): Promise<EvalResult> {
  checkLimits(params, ['seqLen', 'maxSamples', 'gpuMemoryGiB']);
  // The data and the adapter are read and checked against the model before the backend starts.
  const inputs = openInputs(params.modelDir);
  const adapterFiles = params.adapter ? readAdapterFiles(params.adapter, inputs.folder) : undefined;
  const seqLen = jobSeqLen(inputs.folder.cfg, path.join(inputs.folder.dir, 'config.json'), params.seqLen, hooks);
  const ds = readDataset(params.data);
  const tok = tokenizeDataset(ds, inputs.tokenizer, { seqLen, limit: params.maxSamples });
  requireUsable(tok, seqLen, ds.file);
  const data = summariseData(ds, tok, seqLen);
  announceData(data, hooks);
  const job = await startBackend(inputs, params.backend, hooks);
  const { model, estimate } = loadForJob(job, { ...recordLengths(tok.records), backwardPasses: 0, forwardPasses: tok.records.length, taps: 'none',
    recordsPerPass: tok.records.length, gpuMemoryGiB: params.gpuMemoryGiB }, hooks);
  const { backend } = job;
  let adapters: Map<string, LoraAdapter> | undefined;
  try {
    if (adapterFiles) adapters = uploadAdapter(adapterFiles).adapters;
    const { losses, tokens } = await evalRecords(model, tok.records, adapters, hooks, estimate.groupSize);
    return {
      meanLoss: losses.reduce((a, b) => a + b, 0) / losses.length, samples: losses.length, tokens, skipped: tok.skipped,
      backend: backend.backend, losses, ...(params.adapter ? { adapter: params.adapter } : {}), data,
    };
  } finally {
    if (adapters) for (const a of adapters.values()) disposeAdapter(a);
    model.dispose();
  }
}

export interface GenerateResult { ids: number[]; text: string; lastTop: [number, number][]; promptIds: number[] }

/** Greedy decoding, and the top-5 logits after the prompt (checked against golden_reference.json). */
export async function runGenerate(params: { modelDir: string; prompt: string; maxNewTokens?: number; backend?: EvalParams['backend']; adapter?: string }): Promise<GenerateResult> {
  checkLimits(params, ['maxNewTokens']);
  const inputs = openInputs(params.modelDir);
  const { tokenizer, folder } = inputs;
  const promptIds = tokenizer.encode(params.prompt, { addSpecial: true });
  const maxNew = params.maxNewTokens ?? DEFAULTS.maxNewTokens;
  // Generation here is a quick look at the model (greedy, the whole sequence recomputed at each token): text past
  // the context is not worth the time on any architecture, and impossible with learned positions.
  const context = folder.cfg.maxPositionEmbeddings;
  if (promptIds.length + maxNew > context) {
    const room = context - promptIds.length;
    throw badInput(`--max-new-tokens ${maxNew}: the prompt's ${promptIds.length} tokens and ${maxNew} new ones exceed the model's context of ` +
      `${context} tokens (max_position_embeddings in ${path.join(folder.dir, 'config.json')})` +
      (room >= 1 ? `; use --max-new-tokens ${room} or less` : '; shorten the prompt'));
  }
  const adapterFiles = params.adapter ? readAdapterFiles(params.adapter, folder) : undefined;
  const job = await startBackend(inputs, params.backend);
  const { model } = loadForJob(job, { tokensPerRecord: promptIds.length + maxNew, backwardPasses: 0, forwardPasses: maxNew + 1, taps: 'none' });
  let adapters: Map<string, LoraAdapter> | undefined;
  try {
    if (adapterFiles) adapters = uploadAdapter(adapterFiles).adapters;
    const ids = [...promptIds];
    let lastTop: [number, number][] = [];
    for (let step = 0; step <= maxNew; step++) {
      const logits = tf.tidy(() => {
        const h = model.hiddenStates(ids, adapters);
        return model.logitsAt(h, [ids.length - 1]);
      });
      const row = Array.from(await logits.data());
      logits.dispose();
      const order = row.map((v, i) => [i, v] as [number, number]).sort((a, b) => b[1] - a[1]);
      if (step === 0) lastTop = order.slice(0, 5);
      if (step === maxNew) break;
      ids.push(order[0][0]);
      if (order[0][0] === tokenizer.eosId) break;
    }
    // The continuation is what decoding the whole sequence adds to the decoded prompt: decoding the new ids alone
    // would drop the space SentencePiece keeps as the first token's word-start mark ("Once upon" + "a time").
    const whole = tokenizer.decode(ids), head = tokenizer.decode(promptIds);
    const text = params.prompt !== '' && whole.startsWith(head) ? whole.slice(head.length) : tokenizer.decode(ids.slice(promptIds.length));
    return { ids, promptIds, text, lastTop };
  } finally {
    if (adapters) for (const a of adapters.values()) disposeAdapter(a);
    model.dispose();
  }
}
