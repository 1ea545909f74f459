// Training, the PEFT adapter it writes, resume, exports, and the refusals. Checked against the PyTorch reference.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend } from '../../src/engine/runtime/backend';
import { runTrain, learningRate } from '../../src/engine/train/loop';
import { runEval } from '../../src/engine/eval/evaluate';
import { runExport } from '../../src/engine/export/exporters';
import { readHeader, readTensorF32 } from '../../src/engine/hf/safetensors';
import { writeSynthModel } from '../../src/engine/hf/synth';
import { DomLoraError } from '../../src/engine/runtime/errors';
import { SHARED, STORIES, tmpDir, reference } from '../helpers/reference';

before(async () => { await initBackend('wasm'); });

const DATA = path.join(SHARED, 'data/math/gsm8k_train.jsonl');
const TARGET = 'model.layers.1.mlp.down_proj';

async function rejects(p: Promise<unknown>, re: RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => e instanceof DomLoraError && e.code === 'bad-input' && re.test(e.message));
}

test('DomLoRA training on stories260K lowers train and held-out loss, and writes a PEFT adapter', async () => {
  const out = path.join(tmpDir(), 'adapter');
  const t0 = tf.memory().numTensors;
  const r = await runTrain({ modelDir: STORIES, data: DATA, targets: [TARGET], out, steps: 30, lr: 1e-2, batchSize: 4, seqLen: 128,
    maxSamples: 80, evalSplit: 0.1, backend: 'wasm' });
  assert.equal(tf.memory().numTensors, t0, 'no tensors leak');
  // Batches differ in difficulty, so compare the mean of the first and last five steps' losses.
  const losses = r.curve.filter((c) => c.loss !== undefined).map((c) => c.loss!);
  const avg = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  assert.ok(avg(losses.slice(-5)) < avg(losses.slice(0, 5)) - 0.05, `train loss ${avg(losses.slice(0, 5))} -> ${avg(losses.slice(-5))}`);
  assert.ok(r.evalLossAfter! < r.evalLossBefore! - 0.02, `eval loss ${r.evalLossBefore} -> ${r.evalLossAfter}`);
  assert.equal(r.trainableParams, 8 * (172 + 64));
  assert.equal(r.vanillaParams, 46240);
  const cfg = JSON.parse(fs.readFileSync(path.join(out, 'adapter_config.json'), 'utf8'));
  assert.equal(cfg.peft_type, 'LORA');
  assert.equal(cfg.task_type, 'CAUSAL_LM');
  assert.equal(cfg.r, 8);
  assert.equal(cfg.lora_alpha, 16);
  assert.ok(Number.isInteger(cfg.lora_alpha));
  assert.deepEqual(cfg.target_modules, ['down_proj']);
  assert.deepEqual(cfg.layers_to_transform, [1]);
  assert.equal(cfg.bias, 'none');
  const h = readHeader(path.join(out, 'adapter_model.safetensors'));
  assert.deepEqual([...h.tensors.keys()].sort(), [`base_model.model.${TARGET}.lora_A.weight`, `base_model.model.${TARGET}.lora_B.weight`]);
  assert.deepEqual(h.tensors.get(`base_model.model.${TARGET}.lora_A.weight`)!.shape, [8, 172]);
  assert.deepEqual(h.tensors.get(`base_model.model.${TARGET}.lora_B.weight`)!.shape, [64, 8]);
  assert.equal(h.tensors.get(`base_model.model.${TARGET}.lora_B.weight`)!.dtype, 'F32');
  assert.equal(h.metadata.format, 'pt');
  assert.ok(h.metadata['domlora.dataset_sha256']);

  // The reference applies the adapter as PEFT does and must reproduce `eval --adapter`.
  const ev = await runEval({ modelDir: STORIES, data: DATA, adapter: out, seqLen: 128, maxSamples: 6, backend: 'wasm' });
  const base = await runEval({ modelDir: STORIES, data: DATA, seqLen: 128, maxSamples: 6, backend: 'wasm' });
  assert.ok(ev.meanLoss < base.meanLoss, 'the adapter changes (improves) the loss');
  const { readDataset } = await import('../../src/engine/data/read'); const { tokenizeDataset } = await import('../../src/engine/data/tokenize');
  const { ModelTokenizer } = await import('../../src/engine/hf/tokenizer');
  const recs = tokenizeDataset(readDataset(DATA), ModelTokenizer.load(STORIES), { seqLen: 128, limit: 6 }).records;
  const ref = reference<{ losses: number[]; meanLoss: number; adaptedModules: string[] }>({
    model_dir: STORIES, mode: 'eval-adapter', adapter_dir: out, records: recs.map((x) => ({ input_ids: x.inputIds, loss_mask: x.lossMask })) });
  assert.deepEqual(ref.adaptedModules, [TARGET]);
  assert.ok(Math.abs(ref.meanLoss - ev.meanLoss) < 1e-4, `reference ${ref.meanLoss} vs ours ${ev.meanLoss}`);

  // Merged export: W + (alpha/r) B A gives the same loss without the adapter.
  const merged = path.join(tmpDir(), 'merged');
  await runExport({ adapterDir: out, format: 'merged', out: merged, modelDir: STORIES });
  for (const f of ['config.json', 'tokenizer.json', 'tokenizer_config.json', 'model.safetensors']) assert.ok(fs.existsSync(path.join(merged, f)), f);
  const mev = await runEval({ modelDir: merged, data: DATA, seqLen: 128, maxSamples: 6, backend: 'wasm' });
  assert.ok(Math.abs(mev.meanLoss - ev.meanLoss) < 1e-4, `merged ${mev.meanLoss} vs adapter ${ev.meanLoss}`);

  // Trainer exports: what can be expressed is written; what cannot is refused plainly.
  const pc = await runExport({ adapterDir: out, format: 'peft-config', out: path.join(tmpDir(), 'cfg.py'), modelDir: STORIES });
  assert.match(fs.readFileSync(pc.out, 'utf8'), /layers_to_transform=\[1\]/);
  const ax = await runExport({ adapterDir: out, format: 'axolotl', out: path.join(tmpDir(), 'ax.yml'), modelDir: STORIES });
  assert.match(fs.readFileSync(ax.out, 'utf8'), /lora_target_modules:\n {2}- down_proj\npeft_layers_to_transform:\n {2}- 1/);
  assert.match(ax.text, /axolotl train /);
  const lf = await runExport({ adapterDir: out, format: 'llamafactory', out: path.join(tmpDir(), 'lf.yml'), modelDir: STORIES });
  assert.match(fs.readFileSync(lf.out, 'utf8'), /\nlora_target: model\.layers\.1\.mlp\.down_proj\n/);
  await rejects(runExport({ adapterDir: out, format: 'mlx', out: path.join(tmpDir(), 'mlx.yml'), modelDir: STORIES }), /last N layers/);
});

test('one AdamW step matches torch.optim.AdamW on the same gradients', async () => {
  const dir = tmpDir();
  const out = path.join(dir, 'a');
  const r = await runTrain({ modelDir: STORIES, data: DATA, targets: ['model.layers.3.self_attn.v_proj', TARGET], out, steps: 2, lr: 5e-3,
    warmupSteps: 0, batchSize: 2, seqLen: 96, maxSamples: 8, evalSplit: 0, backend: 'wasm', seed: 4 });
  assert.equal(r.steps, 2);
  // Rebuild the run in the reference: same initial A (B = 0), same batches and learning rates.
  const { batchIndices } = await import('../../src/engine/train/loop');
  const { initLoraA } = await import('../../src/engine/model/lora');
  const { writeSafetensors } = await import('../../src/engine/hf/safetensors');
  const { readDataset } = await import('../../src/engine/data/read'); const { tokenizeDataset } = await import('../../src/engine/data/tokenize');
  const { ModelTokenizer } = await import('../../src/engine/hf/tokenizer');
  const recs = tokenizeDataset(readDataset(DATA), ModelTokenizer.load(STORIES), { seqLen: 96, limit: 8 }).records;
  const specs = [{ name: TARGET, dIn: 172, dOut: 64 }, { name: 'model.layers.3.self_attn.v_proj', dIn: 64, dOut: 32 }];
  const init = path.join(dir, 'init.safetensors');
  writeSafetensors(init, specs.flatMap((s) => [
    { name: `base_model.model.${s.name}.lora_A.weight`, shape: [8, s.dIn], data: initLoraA(4, s.name, 8, s.dIn) },
    { name: `base_model.model.${s.name}.lora_B.weight`, shape: [s.dOut, 8], data: new Float32Array(s.dOut * 8) }]));
  const plan = { lr: 5e-3, warmupSteps: 0, steps: 2 };
  const ref = reference<{ adapter: Record<string, number[]>; losses: number[] }>({
    model_dir: STORIES, mode: 'train', adapter: init, rank: 8, alpha: 16, steps: 2, records: recs.map((x) => ({ input_ids: x.inputIds, loss_mask: x.lossMask })),
    batches: [0, 1].map((s) => batchIndices(recs.length, 2, 4, s)), lrs: [0, 1].map((s) => learningRate(plan, s)), betas: [0.9, 0.999], eps: 1e-8, weight_decay: 0 });
  const h = readHeader(path.join(out, 'adapter_model.safetensors'));
  for (const key of h.tensors.keys()) {
    const ours = readTensorF32(h, key), theirs = ref.adapter[key];
    let maxAbs = 0, scale = 0;
    for (let i = 0; i < ours.length; i++) { maxAbs = Math.max(maxAbs, Math.abs(ours[i] - theirs[i])); scale = Math.max(scale, Math.abs(theirs[i])); }
    assert.ok(maxAbs < 1e-4 * Math.max(scale, 1e-2) + 1e-6, `${key}: max |diff| ${maxAbs} (scale ${scale})`);
  }
  assert.ok(Math.abs(r.curve[1].loss! - ref.losses[0]) < 1e-4);
});

test('resume after a cancel gives exactly the weights of an uninterrupted run', async () => {
  const dir = tmpDir();
  const common = { modelDir: STORIES, data: DATA, targets: [TARGET], steps: 6, checkpointEvery: 2, lr: 5e-3, batchSize: 2, seqLen: 96, maxSamples: 20, backend: 'wasm' as const };
  await runTrain({ ...common, out: path.join(dir, 'full') });
  const controller = new AbortController();
  await assert.rejects(runTrain({ ...common, out: path.join(dir, 'cut') }, {
    signal: controller.signal, onProgress: (p) => { if (p.phase === 'train' && p.done === 3) controller.abort(); } }),
  (e: unknown) => e instanceof DomLoraError && e.code === 'cancelled');
  const state = JSON.parse(fs.readFileSync(path.join(dir, 'cut/checkpoint/trainer_state.json'), 'utf8'));
  assert.equal(state.step, 2, 'the last checkpoint (step 2) is intact after the cancel at step 3');
  await runTrain({ ...common, out: path.join(dir, 'cut'), resume: path.join(dir, 'cut') });
  const a = fs.readFileSync(path.join(dir, 'full/adapter_model.safetensors'));
  const b = fs.readFileSync(path.join(dir, 'cut/adapter_model.safetensors'));
  const ha = readHeader(path.join(dir, 'full/adapter_model.safetensors')), hb = readHeader(path.join(dir, 'cut/adapter_model.safetensors'));
  for (const k of ha.tensors.keys()) assert.deepEqual(readTensorF32(hb, k), readTensorF32(ha, k), k);
  assert.ok(a.length === b.length);
});

test('training refuses bad input clearly and writes nothing', async () => {
  const dir = tmpDir();
  await rejects(runTrain({ modelDir: STORIES, data: DATA, targets: ['model.layers.9.mlp.down_proj'], out: path.join(dir, 'x'), steps: 1 }), /not a linear module/);
  await rejects(runTrain({ modelDir: STORIES, data: DATA, targets: [TARGET], rank: 100, out: path.join(dir, 'x'), steps: 1 }), /larger than/);
  await rejects(runTrain({ modelDir: STORIES, data: DATA, out: path.join(dir, 'x'), steps: 1 }), /no placement/);
  assert.ok(!fs.existsSync(path.join(dir, 'x')));
  fs.mkdirSync(path.join(dir, 'exists'));
  fs.writeFileSync(path.join(dir, 'exists/keep.txt'), 'mine');
  await rejects(runTrain({ modelDir: STORIES, data: DATA, targets: [TARGET], out: path.join(dir, 'exists'), steps: 1 }), /already exists/);
  assert.equal(fs.readFileSync(path.join(dir, 'exists/keep.txt'), 'utf8'), 'mine');
  // An empty folder (the extension reserves one in domlora.adapterDirectory) has nothing to lose: it is filled.
  fs.mkdirSync(path.join(dir, 'reserved'));
  await runTrain({ modelDir: STORIES, data: DATA, targets: [TARGET], out: path.join(dir, 'reserved'), steps: 1, seqLen: 64, maxSamples: 4 });
  assert.ok(fs.existsSync(path.join(dir, 'reserved/adapter_model.safetensors')));
  // A checkpoint from another model.
  const other = path.join(dir, 'other-model');
  await writeSynthModel(other, { hiddenSize: 32, intermediateSize: 48, layers: 2, heads: 4, kvHeads: 2, vocabSize: 384, tied: true, seed: 1 });
  const ck = path.join(dir, 'ck');
  await runTrain({ modelDir: other, data: DATA, targets: ['model.layers.0.mlp.down_proj'], out: ck, steps: 1, seqLen: 64, maxSamples: 4, keepCheckpoint: true });
  await rejects(runTrain({ modelDir: STORIES, data: DATA, out: ck, resume: ck, steps: 1 }), /another model/);
});

test('export checks what downstream runtimes refuse and prints load commands', async () => {
  const { runtimeChecks } = await import('../../src/engine/export/exporters');
  const { buildPeftConfig } = await import('../../src/engine/export/peft');
  const spec = { name: TARGET, layer: 1, kind: 'down_proj', dIn: 172, dOut: 64 };
  const ok = runtimeChecks(buildPeftConfig([spec], 5, 8, 16, '/m'), 'llama', [`base_model.model.${TARGET}.lora_A.weight`, `base_model.model.${TARGET}.lora_B.weight`]);
  assert.deepEqual(ok.warnings, []);
  assert.ok(ok.loadCommands.some((c) => c.startsWith('vllm serve /m --enable-lora')));
  assert.ok(ok.loadCommands.some((c) => c.includes('convert_lora_to_gguf.py')));
  const odd = runtimeChecks(buildPeftConfig([spec], 5, 12, 16, '/m'), 'qwen3', [`base_model.model.${TARGET}.lora_A.weight`, `base_model.model.${TARGET}.lora_magnitude_vector`]);
  assert.ok(odd.warnings.some((w) => /vLLM supports LoRA ranks/.test(w)), 'rank 12 is not a vLLM rank');
  assert.ok(odd.warnings.some((w) => /llama\.cpp converts only lora_A\/lora_B/.test(w) && w.includes('lora_magnitude_vector')));
  assert.ok(odd.warnings.some((w) => /Ollama imports/.test(w)), 'qwen3 is not in Ollama\'s adapter architectures');
  assert.throws(() => buildPeftConfig([spec], 5, 8, 16.5, '/m'), /integer/);
});

test('caching the frozen layers below the adapter across epochs changes nothing in the result', async () => {
  const dir = tmpDir();
  const common = { modelDir: STORIES, data: DATA, targets: ['model.layers.3.mlp.down_proj'], steps: 6, lr: 5e-3, batchSize: 2, seqLen: 96,
    maxSamples: 6, evalSplit: 0, backend: 'wasm' as const };
  // 6 records, 2 per step: every record is seen twice, the second time from the cache.
  await runTrain({ ...common, out: path.join(dir, 'cached') });
  await runTrain({ ...common, out: path.join(dir, 'plain'), cacheLowerLayers: false });
  const ha = readHeader(path.join(dir, 'cached/adapter_model.safetensors')), hb = readHeader(path.join(dir, 'plain/adapter_model.safetensors'));
  for (const k of ha.tensors.keys()) assert.deepEqual(readTensorF32(ha, k), readTensorF32(hb, k), k);
});

test('GPT-2 adapters export to trainers with their group-qualified kinds and the right layer', async () => {
  const dir = tmpDir();
  const model = path.join(dir, 'gpt2');
  await writeSynthModel(model, { hiddenSize: 32, intermediateSize: 64, layers: 3, heads: 4, kvHeads: 4, vocabSize: 384, tied: true, seed: 8, arch: 'gpt2' });
  const out = path.join(dir, 'adapter');
  await runTrain({ modelDir: model, data: DATA, targets: ['transformer.h.1.mlp.c_proj'], out, steps: 1, seqLen: 64, maxSamples: 4, evalSplit: 0, backend: 'wasm' });
  const cfg = JSON.parse(fs.readFileSync(path.join(out, 'adapter_config.json'), 'utf8'));
  assert.deepEqual(cfg.target_modules, ['mlp.c_proj']);
  assert.deepEqual(cfg.layers_to_transform, [1]);
  assert.equal(cfg.fan_in_fan_out, true);
  const ax = await runExport({ adapterDir: out, format: 'axolotl', out: path.join(dir, 'ax.yml'), modelDir: model });
  assert.match(fs.readFileSync(ax.out, 'utf8'), /lora_target_modules:\n {2}- mlp\.c_proj\npeft_layers_to_transform:\n {2}- 1\n/);
  const lf = await runExport({ adapterDir: out, format: 'llamafactory', out: path.join(dir, 'lf.yml'), modelDir: model });
  assert.match(fs.readFileSync(lf.out, 'utf8'), /\nlora_target: transformer\.h\.1\.mlp\.c_proj\n/);
  fs.mkdirSync(path.join(dir, 'broken'));
  fs.writeFileSync(path.join(dir, 'broken/adapter_config.json'), '{not json');
  await rejects(runExport({ adapterDir: path.join(dir, 'broken'), format: 'peft-config', out: path.join(dir, 'x.py'), modelDir: model }), /adapter_config\.json: invalid JSON/);
});

test('an eval split never takes every record, nor holds out fewer than 4', async () => {
  const out = path.join(tmpDir(), 'a');
  await rejects(runTrain({ modelDir: STORIES, data: DATA, targets: [TARGET], out, steps: 1, seqLen: 64, maxSamples: 2, evalSplit: 0.8, batchSize: 1, backend: 'wasm' }),
    /--eval-split 0\.8 of 2 usable record\(s\) holds out 2, leaving none to train on/);
  await rejects(runTrain({ modelDir: STORIES, data: DATA, targets: [TARGET], out, steps: 1, seqLen: 128, maxSamples: 10, evalSplit: 0.2, batchSize: 1, backend: 'wasm' }),
    /--eval-split 0\.2 of 10 usable record\(s\) holds out 2, fewer than the 4/);
  assert.ok(!fs.existsSync(out), 'nothing written');
  const r = await runTrain({ modelDir: STORIES, data: DATA, targets: [TARGET], out, steps: 1, seqLen: 128, maxSamples: 10, evalSplit: 0.4, batchSize: 1, backend: 'wasm' });
  assert.equal(r.steps, 1);
  assert.ok(Number.isFinite(r.trainLossFirst!) && Number.isFinite(r.evalLossBefore!));
});
