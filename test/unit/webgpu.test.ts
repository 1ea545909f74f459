// The engine on the webgpu backend (Dawn through the `webgpu` package), checked against the same independent PyTorch
// reference (float64) and the same golden values as on wasm. On CI the GPU is lavapipe, Mesa's software Vulkan
// (bookworm-backports' mesa-vulkan-drivers, installed by .ci/run): slow (about 2 GFLOP/s), so the models are tiny.
//
// Tolerances, f32 on a GPU: the same as on wasm (loss 1e-5 absolute, PAGE 1e-3 relative, shares 1e-4, LoRA gradients
// 2e-3 relative, golden losses 1e-4). tfjs-backend-webgpu computes in f32 like tfjs-wasm, with other summation orders
// (tiled matmuls, tree reductions): measured on lavapipe its matmul, softmax and logSumExp agree with tfjs-cpu within
// 2e-6 relative (shared/docs/gpu-testing.md), far inside these bounds; a GPU with fused multiply-adds or TF32 would
// differ by more, which is why every figure is compared with the float64 reference, not with the wasm run.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend } from '../../src/engine/runtime/backend';
import { candidateModules } from '../../src/engine/hf/modules';
import { readDataset } from '../../src/engine/data/read';
import { tokenizeDataset, type TokenizedRecord } from '../../src/engine/data/tokenize';
import { initLoraA, loraScale } from '../../src/engine/model/lora';
import { pageForRecordSteps, type RecordPage } from '../../src/engine/probe/page';
import { runProbe } from '../../src/engine/probe/probe';
import { runTrain } from '../../src/engine/train/loop';
import { runEval, runGenerate } from '../../src/engine/eval/evaluate';
import { runStepsAsync } from '../../src/engine/runtime/jobs';
import { BackendFailedError, CancelledError } from '../../src/engine/runtime/errors';
import { writeSafetensors } from '../../src/engine/hf/safetensors';
import { FIXTURES, STORIES, tmpDir, reference, maxRelErr } from '../helpers/reference';
import { checkAgainstReference, randomRecords } from '../helpers/archcheck';
import { loadModel, openModelFolder } from '../../src/engine/hf/folder';
import { writeSynthModel } from '../../src/engine/hf/synth';
import { Decoder } from '../../src/engine/model/decoder';
import { lossLayerMajor } from '../../src/engine/model/schedule';

const GOLDEN = JSON.parse(fs.readFileSync(path.join(STORIES, 'golden_reference.json'), 'utf8'));
const ALPACA = path.join(FIXTURES, 'data/instruction/alpaca_en_demo.json');
const GSM8K = path.join(FIXTURES, 'data/math/gsm8k_train.jsonl');
const BASE = { hiddenSize: 32, intermediateSize: 48, layers: 2, heads: 4, kvHeads: 2, vocabSize: 384, tied: false };

before(async () => {
  try {
    await initBackend('webgpu');
  } catch (e) {
    throw new Error('the WebGPU tests need a WebGPU adapter; on Debian 12 install libvulkan1 and mesa-vulkan-drivers from ' +
      `bookworm-backports (lavapipe), as .ci/run does: ${(e as Error).message}`);
  }
  assert.equal(tf.getBackend(), 'webgpu');
});

function records(modelDir: string, file: string, n: number, seqLen: number): TokenizedRecord[] {
  const { tokenizer, model } = loadModel(modelDir);
  model.dispose();
  return tokenizeDataset(readDataset(file), tokenizer, { seqLen, limit: n }).records;
}

test('webgpu: the golden losses, greedy continuation and top-5 logits of stories260K', async () => {
  const dir = tmpDir();
  const keys = ['tinystories_greedy_text', 'gsm8k_train_0_question'];
  const data = path.join(dir, 'golden.jsonl');
  fs.writeFileSync(data, keys.map((k) => JSON.stringify({ text: GOLDEN[k].text })).join('\n') + '\n');
  const ev = await runEval({ modelDir: STORIES, data, backend: 'webgpu' });
  assert.equal(ev.backend, 'webgpu');
  keys.forEach((k, i) => assert.ok(Math.abs(ev.losses[i] - GOLDEN[k].mean_next_token_ce_nats) < 1e-4, `${k}: ${ev.losses[i]} vs golden ${GOLDEN[k].mean_next_token_ce_nats}`));
  const g = await runGenerate({ modelDir: STORIES, prompt: 'Once upon a time', maxNewTokens: 15, backend: 'webgpu' });
  assert.deepEqual(g.promptIds, GOLDEN.prompt_once_upon_a_time.ids_with_bos);
  assert.deepEqual(g.ids.slice(0, 20), GOLDEN.greedy_from_bos_first20);
  g.lastTop.forEach(([id, v], i) => {
    const [gid, gv] = GOLDEN.prompt_once_upon_a_time.last_logits_top5[i];
    assert.equal(id, gid);
    assert.ok(Math.abs(v - gv) < 1e-3, `top-${i + 1} logit ${v} vs golden ${gv}`);
  });
});

test('webgpu: PAGE on stories260K matches PyTorch (shares 1e-4, sampled and expected 1e-3, same top-10)', async () => {
  const recs = records(STORIES, ALPACA, 3, 96);
  const before = tf.memory().numTensors;
  const { model, folder } = loadModel(STORIES);
  const modules = candidateModules(folder.cfg);
  const rank = 8, alpha = 16, seed = 5;
  const initFile = path.join(tmpDir(), 'lora_init.safetensors');
  writeSafetensors(initFile, modules.map((m) => ({ name: `${m.name}.lora_A.weight`, shape: [rank, m.dIn], data: initLoraA(seed, m.name, rank, m.dIn) })));
  const aT = new Map(modules.map((m) => [m.name, tf.tidy(() => tf.transpose(tf.tensor2d(initLoraA(seed, m.name, rank, m.dIn), [rank, m.dIn])) as tf.Tensor2D)]));
  const rows: RecordPage[] = [];
  for (const r of recs) rows.push(await runStepsAsync(pageForRecordSteps(model, r, modules, aT, rank, loraScale(alpha, rank)), {}));
  tf.dispose([...aT.values()]);
  model.dispose();
  assert.equal(tf.memory().numTensors, before, 'no tensors leak');
  const ref = reference<{ pageSampled: number[]; pageExpected: number[]; share: number[]; ranking: string[]; losses: number[] }>(
    { model_dir: STORIES, records: recs.map((r) => ({ input_ids: r.inputIds, loss_mask: r.lossMask })), mode: 'page', rank, alpha, lora_init: initFile });
  const M = modules.length;
  const mean = (k: 'sampled' | 'expected') => Array.from({ length: M }, (_, j) => rows.reduce((s, r) => s + r[k][j], 0) / rows.length);
  const exp = mean('expected'), smp = mean('sampled');
  const total = exp.reduce((a, b) => a + b, 0);
  let share = 0;
  for (let j = 0; j < M; j++) share = Math.max(share, Math.abs(exp[j] / total - ref.share[j]));
  assert.ok(share < 1e-4, `share differs by ${share}`);
  assert.ok(maxRelErr(exp, ref.pageExpected) < 1e-3, `expected PAGE rel err ${maxRelErr(exp, ref.pageExpected)}`);
  assert.ok(maxRelErr(smp, ref.pageSampled) < 1e-3, `sampled PAGE rel err ${maxRelErr(smp, ref.pageSampled)}`);
  const ours = modules.map((m, j) => [m.name, exp[j]] as const).sort((a, b) => b[1] - a[1]).map(([n]) => n);
  assert.deepEqual(ours.slice(0, 10), ref.ranking.slice(0, 10));
  rows.forEach((r, i) => assert.ok(Math.abs(r.loss - ref.losses[i]) < 1e-5));
  console.log(`# webgpu stories260K PAGE: max share diff ${share.toExponential(2)}, expected rel ${maxRelErr(exp, ref.pageExpected).toExponential(2)}, sampled rel ${maxRelErr(smp, ref.pageSampled).toExponential(2)}`);
});

// Llama, one with biases (Qwen 2) and one with soft-caps and sandwich norms (Gemma 2), one with a parallel residual
// (GPT-NeoX), one with no norm before its blocks and q/k norms over the whole projection (OLMo 2): loss, PAGE and
// LoRA gradients against the reference, through the same checks as arch.test.ts.
for (const [label, shape] of [
  ['llama', { ...BASE, seed: 61 }],
  ['qwen2', { ...BASE, seed: 62, arch: 'qwen2', tied: true }],
  ['gemma2', { ...BASE, seed: 63, arch: 'gemma2', tied: true, headDim: 12, config: { sliding_window: 8, attn_logit_softcapping: 1.5, final_logit_softcapping: 4.0 } }],
  ['gpt_neox', { ...BASE, seed: 64, arch: 'gpt_neox', kvHeads: 4 }],
  ['olmo2', { ...BASE, seed: 65, arch: 'olmo2', headDim: 12 }],
] as const) {
  test(`webgpu: ${label} matches PyTorch (loss, PAGE, LoRA gradients)`, async () => {
    const err = await checkAgainstReference(`webgpu-${label}`, shape, [], [33, 21]);
    assert.ok(err.grad < 2e-3);
  });
}

test('webgpu: a short DomLoRA run writes a PEFT adapter that PyTorch, applying it as PEFT does, scores like our eval', async () => {
  const out = path.join(tmpDir(), 'adapter');
  const r = await runTrain({ modelDir: STORIES, data: GSM8K, targets: ['model.layers.1.mlp.down_proj'], steps: 3, lr: 1e-2, batchSize: 2,
    seqLen: 64, maxSamples: 40, evalSplit: 0.25, out, backend: 'webgpu' });
  assert.equal(r.backend, 'webgpu');
  assert.ok(r.evalLossAfter! < r.evalLossBefore!, `eval loss ${r.evalLossBefore} -> ${r.evalLossAfter}`);
  // The first two GSM8K records whose answer starts within 64 tokens (the file's first records start theirs later,
  // and an eval with no supervised token is refused).
  const data = path.join(tmpDir(), 'eval.jsonl');
  fs.writeFileSync(data, fs.readFileSync(GSM8K, 'utf8').split('\n').slice(0, 2).join('\n') + '\n');
  // GSM8K's answers start past token 100: the eval runs at 192 tokens so both records are scored.
  const ours = await runEval({ modelDir: STORIES, data, adapter: out, seqLen: 192, backend: 'webgpu' });
  assert.equal(ours.losses.length, 2);
  const recs = records(STORIES, data, 2, 192);
  const ref = reference<{ losses: number[] }>({ model_dir: STORIES, records: recs.map((x) => ({ input_ids: x.inputIds, loss_mask: x.lossMask })), mode: 'eval-adapter', adapter_dir: out });
  ours.losses.forEach((l, i) => assert.ok(Math.abs(l - ref.losses[i]) < 1e-4, `record ${i}: ${l} vs PEFT-applied ${ref.losses[i]}`));
});

test('webgpu: a cancel lands within the record and leaves no tensor and no report', async () => {
  const dir = tmpDir();
  const out = path.join(dir, 'report.json');
  const before = tf.memory().numTensors;
  const ac = new AbortController();
  await assert.rejects(runProbe({ modelDir: STORIES, data: ALPACA, samples: 4, seqLen: 64, backend: 'webgpu', out }, {
    signal: ac.signal, onProgress: (p) => { if (p.phase === 'probe' && p.done === 1) ac.abort(); },
  }), (e: unknown) => e instanceof CancelledError);
  assert.equal(tf.memory().numTensors, before);
  assert.equal(fs.existsSync(out), false);
});

test('webgpu: a vocabulary split into parts (a binding limit forced small) gives the same loss and PAGE', async () => {
  const data = path.join(tmpDir(), 'one.jsonl');
  fs.writeFileSync(data, JSON.stringify({ text: GOLDEN.tinystories_greedy_text.text }) + '\n');
  const whole = await runProbe({ modelDir: STORIES, data, samples: 1, seqLen: 64, backend: 'webgpu', bootstrap: 1 });
  process.env.DOMLORA_MAX_BINDING_BYTES = String(100 * 64 * 4); // 100 rows of the 512 x 64 table: 6 parts
  try {
    const split = await runProbe({ modelDir: STORIES, data, samples: 1, seqLen: 64, backend: 'webgpu', bootstrap: 1 });
    assert.ok(Math.abs(split.report.meanLoss - whole.report.meanLoss) < 1e-6, `${split.report.meanLoss} vs ${whole.report.meanLoss}`);
    const a = split.report.modules.map((m) => m.pageExpected), b = whole.report.modules.map((m) => m.pageExpected);
    assert.ok(maxRelErr(a, b) < 1e-5, `PAGE rel err ${maxRelErr(a, b)}`);
  } finally {
    delete process.env.DOMLORA_MAX_BINDING_BYTES;
  }
});

test('webgpu: jobs planned layer-major by a small GPU budget give the resident jobs\' loss and PAGE (layers read from the files)', async () => {
  const data = path.join(tmpDir(), 'two.jsonl');
  fs.writeFileSync(data, [GOLDEN.tinystories_greedy_text.text, 'Once upon a time there was a little dog. He liked to run in the park with his friend.']
    .map((text) => JSON.stringify({ text })).join('\n') + '\n');
  const logs: string[] = [];
  const hooks = { log: (_l: string, m: string) => logs.push(m) };
  const params = { modelDir: STORIES, data, samples: 2, seqLen: 64, backend: 'webgpu', bootstrap: 1 } as const;
  const resident = await runProbe(params, hooks);
  const ev = await runEval({ modelDir: STORIES, data, seqLen: 64, backend: 'webgpu' }, hooks);
  try {
    logs.length = 0;
    // Budgets below each job's resident plan, above one layer at a time (an evaluation keeps no activations).
    process.env.DOMLORA_MEMORY_BUDGET = String(6e6);
    const streamed = await runProbe(params, hooks);
    process.env.DOMLORA_MEMORY_BUDGET = String(2e6);
    const evs = await runEval({ modelDir: STORIES, data, seqLen: 64, backend: 'webgpu' }, hooks);
    assert.equal(logs.filter((l) => /layer-major: .*streamed from the files/.test(l)).length, 2, logs.join('\n'));
    assert.ok(Math.abs(streamed.report.meanLoss - resident.report.meanLoss) < 1e-5, `probe loss ${streamed.report.meanLoss} vs ${resident.report.meanLoss}`);
    assert.ok(Math.abs(evs.meanLoss - ev.meanLoss) < 1e-5, `eval loss ${evs.meanLoss} vs ${ev.meanLoss}`);
    const a = streamed.report.modules.map((m) => m.pageExpected), b = resident.report.modules.map((m) => m.pageExpected);
    assert.ok(maxRelErr(a, b) < 1e-4, `PAGE rel err ${maxRelErr(a, b)}`);
  } finally {
    delete process.env.DOMLORA_MEMORY_BUDGET;
  }
});

test('webgpu: the head of many records at a 152k vocabulary equals each record\'s own (chunks of logits within a binding)', async () => {
  // Qwen2.5's vocabulary with a tiny body. Found on an H200: 256-row chunks of logits ([256, 151936], 155 MB) gave
  // a wrong loss there, and on lavapipe exceed its 128 MiB binding.
  const dir = path.join(tmpDir(), 'bigvocab');
  const V = 151936;
  await writeSynthModel(dir, { hiddenSize: 32, intermediateSize: 48, layers: 1, heads: 4, kvHeads: 2, vocabSize: V, tied: true, seed: 81 });
  const folder = openModelFolder(dir);
  const recs = randomRecords(82, [300, 260], V);
  const resident = Decoder.load(folder.cfg, folder.store);
  const streamed = Decoder.load(folder.cfg, folder.store, { stream: true, streamVocab: false });
  try {
    const one: number[] = [];
    for (const r of recs) one.push((await runStepsAsync(resident.recordLossSteps(r.inputIds, r.lossMask), undefined)).loss);
    const many = (await runStepsAsync(lossLayerMajor(streamed, recs.map((r) => ({ ids: r.inputIds, mask: r.lossMask }))), undefined)).map((p) => p.loss);
    one.forEach((l, i) => assert.ok(Math.abs(many[i] - l) < 1e-5 * Math.abs(l), `record ${i}: ${many[i]} (many) vs ${l} (one)`));
  } finally {
    resident.dispose();
    streamed.dispose();
  }
});

// Last in the file: the device it destroys is the process's only one.
test('webgpu: a device lost in the middle of a probe ends it with a message naming the backend; nothing is written', async () => {
  const dir = tmpDir();
  const out = path.join(dir, 'report.json');
  const device = (tf.backend() as unknown as { device: { destroy(): void } }).device;
  await assert.rejects(runProbe({ modelDir: STORIES, data: ALPACA, samples: 3, seqLen: 64, backend: 'webgpu', out }, {
    onProgress: (p) => { if (p.phase === 'probe' && p.done === 1) device.destroy(); },
  }), (e: unknown) => {
    assert.ok(e instanceof BackendFailedError, `a BackendFailedError, got ${String(e)}`);
    assert.match(e.message, /the GPU device was lost \(webgpu \(Dawn: .*\)\): .*Nothing was written.*--backend wasm/);
    return true;
  });
  assert.equal(fs.existsSync(out), false);
});
