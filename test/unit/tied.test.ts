// A tied checkpoint saved with only `lm_head.weight` (no `model.embed_tokens.weight`), as transformers may save tied
// weights: it loads as transformers loads it (the one stored table is both), for eval, generate, training and the
// merged export.
import { before, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { initBackend } from '../../src/engine/runtime/backend';
import { runEval, runGenerate } from '../../src/engine/eval/evaluate';
import { runTrain } from '../../src/engine/train/loop';
import { runExport } from '../../src/engine/export/exporters';
import { readHeader, readTensorF32, writeSafetensors } from '../../src/engine/hf/safetensors';
import { FIXTURES, STORIES, tmpDir } from '../helpers/reference';

before(async () => { await initBackend('wasm'); });

const DATA = path.join(FIXTURES, 'data/math/gsm8k_train.jsonl');

/** A copy of `src` whose weights file stores the tied table under `to` instead of `from` (same bytes, F32 here). */
function renamedCopy(src: string, dst: string, from: string, to: string): void {
  fs.mkdirSync(dst);
  for (const f of fs.readdirSync(src)) if (f !== 'model.safetensors') fs.copyFileSync(path.join(src, f), path.join(dst, f));
  const h = readHeader(path.join(src, 'model.safetensors'));
  assert.ok(h.tensors.has(from) && !h.tensors.has(to));
  writeSafetensors(path.join(dst, 'model.safetensors'), [...h.tensors.keys()].map((name) => ({
    name: name === from ? to : name, shape: h.tensors.get(name)!.shape, data: readTensorF32(h, name),
  })), h.metadata);
}

test('a tied model stored with only lm_head.weight evaluates, generates and trains as the original; its merged export loads', async () => {
  const cfg = JSON.parse(fs.readFileSync(path.join(STORIES, 'config.json'), 'utf8')) as { tie_word_embeddings?: boolean };
  assert.equal(cfg.tie_word_embeddings, true, 'stories260K is tied');
  const dir = tmpDir();
  const headOnly = path.join(dir, 'head-only');
  renamedCopy(STORIES, headOnly, 'model.embed_tokens.weight', 'lm_head.weight');

  const common = { data: DATA, seqLen: 96, maxSamples: 4, backend: 'wasm' as const };
  const original = await runEval({ modelDir: STORIES, ...common });
  const renamed = await runEval({ modelDir: headOnly, ...common });
  assert.equal(renamed.meanLoss, original.meanLoss);
  assert.equal(renamed.tokens, original.tokens);

  const prompt = 'Once upon a time';
  const g0 = await runGenerate({ modelDir: STORIES, prompt, maxNewTokens: 8, backend: 'wasm' });
  const g1 = await runGenerate({ modelDir: headOnly, prompt, maxNewTokens: 8, backend: 'wasm' });
  assert.deepEqual(g1, g0);

  // Training on it and folding the adapter in: the merged folder keeps the stored names and loads again.
  const adapter = path.join(dir, 'adapter');
  await runTrain({ modelDir: headOnly, data: DATA, targets: ['model.layers.1.mlp.down_proj'], out: adapter, steps: 2, lr: 1e-2,
    batchSize: 2, seqLen: 96, maxSamples: 4, evalSplit: 0, backend: 'wasm' });
  const withAdapter = await runEval({ modelDir: headOnly, adapter, ...common });
  assert.notEqual(withAdapter.meanLoss, renamed.meanLoss, 'the adapter changes the loss');
  const merged = path.join(dir, 'merged');
  await runExport({ adapterDir: adapter, format: 'merged', out: merged, modelDir: headOnly });
  const names = [...readHeader(path.join(merged, 'model.safetensors')).tensors.keys()];
  assert.ok(names.includes('lm_head.weight') && !names.includes('model.embed_tokens.weight'));
  const mergedEval = await runEval({ modelDir: merged, ...common });
  assert.ok(Math.abs(mergedEval.meanLoss - withAdapter.meanLoss) < 1e-4, `merged ${mergedEval.meanLoss} vs adapter ${withAdapter.meanLoss}`);
});
