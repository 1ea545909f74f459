// The engine against an independent PyTorch implementation (test/reference/llama_ref.py, float64): the loss, both
// PAGE quantities, LoRA gradients, and an exported adapter applied the way PEFT applies it.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend } from '../../src/engine/runtime/backend';
import { loadModel } from '../../src/engine/hf/folder';
import { candidateModules } from '../../src/engine/hf/modules';
import { readDataset } from '../../src/engine/data/read';
import { tokenizeDataset, TokenizedRecord } from '../../src/engine/data/tokenize';
import { initLoraA, makeAdapter, disposeAdapter, loraScale } from '../../src/engine/model/lora';
import { pageForRecord } from '../../src/engine/probe/page';
import { runProbe } from '../../src/engine/probe/probe';
import { writeSafetensors } from '../../src/engine/hf/safetensors';
import { writeSynthModel } from '../../src/engine/hf/synth';
import type { LoraAdapter, LoraGrads } from '../../src/engine/model/types';
import { peftKey } from '../../src/engine/export/peft';
import { Rng } from '../../src/engine/runtime/rng';
import { SHARED, STORIES, tmpDir, reference, relErr, maxRelErr } from '../helpers/reference';

before(async () => { await initBackend('wasm'); });

function records(modelDir: string, file: string, n: number, seqLen: number): TokenizedRecord[] {
  const { tokenizer, model } = loadModel(modelDir);
  model.dispose();
  return tokenizeDataset(readDataset(file), tokenizer, { seqLen, limit: n }).records;
}
const asRef = (rs: TokenizedRecord[]) => rs.map((r) => ({ input_ids: r.inputIds, loss_mask: r.lossMask }));

test('loss of a tiny random untied Llama matches PyTorch (float64) within 1e-5', async () => {
  const dir = path.join(tmpDir(), 'tiny');
  await writeSynthModel(dir, { hiddenSize: 32, intermediateSize: 48, layers: 3, heads: 4, kvHeads: 2, vocabSize: 384, tied: false, seed: 3 });
  const recs = records(dir, path.join(SHARED, 'data/math/gsm8k_train.jsonl'), 3, 96);
  const before = tf.memory().numTensors;
  const { model } = loadModel(dir);
  const ours = recs.map((r) => model.recordLoss(r.inputIds, r.lossMask).loss);
  model.dispose();
  assert.equal(tf.memory().numTensors, before, 'no tensors leak');
  const ref = reference<{ losses: number[] }>({ model_dir: dir, records: asRef(recs), mode: 'loss' });
  for (let i = 0; i < ours.length; i++) assert.ok(Math.abs(ours[i] - ref.losses[i]) < 1e-5, `record ${i}: ${ours[i]} vs ${ref.losses[i]}`);
});

test('PAGE on stories260K matches PyTorch: shares within 1e-4, same top-10 ranking, sampled within 1e-3', async () => {
  const recs = records(STORIES, path.join(SHARED, 'data/instruction/alpaca_en_demo.json'), 4, 128);
  const before = tf.memory().numTensors;
  const { model, folder } = loadModel(STORIES);
  const modules = candidateModules(folder.cfg);
  const rank = 8, alpha = 16, seed = 5;
  const dir = tmpDir();
  const initFile = path.join(dir, 'lora_init.safetensors');
  writeSafetensors(initFile, modules.map((m) => ({ name: `${m.name}.lora_A.weight`, shape: [rank, m.dIn], data: initLoraA(seed, m.name, rank, m.dIn) })));
  const aT = new Map(modules.map((m) => [m.name, tf.tidy(() => tf.transpose(tf.tensor2d(initLoraA(seed, m.name, rank, m.dIn), [rank, m.dIn])) as tf.Tensor2D)]));
  const rows = recs.map((r) => pageForRecord(model, r, modules, aT, rank, loraScale(alpha, rank)));
  // Both exact routes to ||Delta^T X||^2 (the Gram identity and the product) agree, whichever 'auto' picked.
  for (const route of ['gram', 'direct'] as const) {
    const alt = pageForRecord(model, recs[0], modules, aT, rank, loraScale(alpha, rank), route);
    assert.ok(maxRelErr(alt.expected, rows[0].expected) < 1e-4, `${route} route: ${maxRelErr(alt.expected, rows[0].expected)}`);
    assert.ok(maxRelErr(alt.sampled, rows[0].sampled) < 1e-5);
  }
  tf.dispose([...aT.values()]);
  model.dispose();
  assert.equal(tf.memory().numTensors, before, 'no tensors leak in pageForRecord');
  const ref = reference<{ modules: string[]; pageSampled: number[]; pageExpected: number[]; share: number[]; ranking: string[]; losses: number[] }>(
    { model_dir: STORIES, records: asRef(recs), mode: 'page', rank, alpha, lora_init: initFile });
  assert.deepEqual(ref.modules, modules.map((m) => m.name));
  const M = modules.length;
  const mean = (k: 'sampled' | 'expected') => Array.from({ length: M }, (_, j) => rows.reduce((s, r) => s + r[k][j], 0) / rows.length);
  const exp = mean('expected'), smp = mean('sampled');
  const total = exp.reduce((a, b) => a + b, 0);
  for (let j = 0; j < M; j++) assert.ok(Math.abs(exp[j] / total - ref.share[j]) < 1e-4, `${modules[j].name} share ${exp[j] / total} vs ${ref.share[j]}`);
  assert.ok(maxRelErr(exp, ref.pageExpected) < 1e-3, `expected PAGE rel err ${maxRelErr(exp, ref.pageExpected)}`);
  assert.ok(maxRelErr(smp, ref.pageSampled) < 1e-3, `sampled PAGE rel err ${maxRelErr(smp, ref.pageSampled)}`);
  const ourRanking = modules.map((m, j) => [m.name, exp[j]] as const).sort((a, b) => b[1] - a[1]).map(([n]) => n);
  assert.deepEqual(ourRanking.slice(0, 10), ref.ranking.slice(0, 10));
  rows.forEach((r, i) => assert.ok(relErr(r.loss, ref.losses[i]) < 1e-5));
});

test('the mean of sampled PAGE over many seeds approaches expected PAGE', async () => {
  const dir = path.join(tmpDir(), 'tiny');
  await writeSynthModel(dir, { hiddenSize: 32, intermediateSize: 48, layers: 2, heads: 4, kvHeads: 2, vocabSize: 384, tied: true, seed: 9 });
  const [rec] = records(dir, path.join(SHARED, 'data/math/gsm8k_train.jsonl'), 1, 64);
  const { model, folder } = loadModel(dir);
  const modules = candidateModules(folder.cfg);
  const rank = 8, scale = loraScale(16, rank), S = 300;
  const sum = new Float64Array(modules.length);
  let expected: Float64Array | undefined;
  for (let s = 0; s < S; s++) {
    const aT = new Map(modules.map((m) => [m.name, tf.tidy(() => tf.transpose(tf.tensor2d(initLoraA(1000 + s, m.name, rank, m.dIn), [rank, m.dIn])) as tf.Tensor2D)]));
    const r = pageForRecord(model, rec, modules, aT, rank, scale);
    tf.dispose([...aT.values()]);
    r.sampled.forEach((v, j) => { sum[j] += v / S; });
    expected = r.expected;
  }
  model.dispose();
  // The sampled energy of one module is a sum of r * d_out weakly dependent terms; 300 draws put the mean within a
  // few percent of its expectation. 10% bounds every module with a wide margin, yet a wrong factor (r, 3, d_in, s^2)
  // would miss by 2x or more.
  for (let j = 0; j < modules.length; j++) assert.ok(relErr(sum[j], expected![j]) < 0.1, `${modules[j].name}: mean sampled ${sum[j]} vs expected ${expected![j]}`);
});

test('LoRA gradients of one step match PyTorch autograd (A and B non-zero)', async () => {
  const recs = records(STORIES, path.join(SHARED, 'data/conversation/ultrachat_16.jsonl'), 2, 96);
  const before = tf.memory().numTensors;
  const { model, folder } = loadModel(STORIES);
  const specs = candidateModules(folder.cfg).filter((m) => ['model.layers.1.mlp.down_proj', 'model.layers.3.self_attn.q_proj', 'model.layers.3.self_attn.v_proj', 'model.layers.4.mlp.gate_proj'].includes(m.name));
  const rank = 4, alpha = 8, rng = new Rng(11);
  const dir = tmpDir();
  const adapterFile = path.join(dir, 'adapter.safetensors');
  const tensors = specs.map((m) => ({ spec: m, a: initLoraA(3, m.name, rank, m.dIn), b: Float32Array.from({ length: m.dOut * rank }, () => rng.uniform(-0.05, 0.05)) }));
  writeSafetensors(adapterFile, tensors.flatMap((t) => [
    { name: peftKey(t.spec.name, 'A'), shape: [rank, t.spec.dIn], data: t.a }, { name: peftKey(t.spec.name, 'B'), shape: [t.spec.dOut, rank], data: t.b }]));
  const adapters = new Map<string, LoraAdapter>(tensors.map((t) => [t.spec.name, makeAdapter(t.spec, rank, loraScale(alpha, rank), t.a, t.b)]));
  const grads = new Map<string, LoraGrads>();
  const lowest = Math.min(...specs.map((s) => s.layer));
  let loss = 0;
  for (const r of recs) loss += model.recordBackward(r.inputIds, r.lossMask, { adapters, loraGrads: grads, lowestKinds: specs.filter((s) => s.layer === lowest).map((s) => s.kind) }, lowest).loss / recs.length;
  const ref = reference<{ loss: number; grads: Record<string, number[]> }>({ model_dir: STORIES, records: asRef(recs), mode: 'grad', adapter: adapterFile, rank, alpha });
  assert.ok(relErr(loss, ref.loss) < 1e-5, `loss ${loss} vs ${ref.loss}`);
  for (const s of specs) {
    const g = grads.get(s.name)!;
    const da = Array.from(g.da.dataSync()).map((v) => v / recs.length), db = Array.from(g.db.dataSync()).map((v) => v / recs.length);
    assert.ok(maxRelErr(da, ref.grads[peftKey(s.name, 'A')]) < 2e-3, `${s.name} dA rel err ${maxRelErr(da, ref.grads[peftKey(s.name, 'A')])}`);
    assert.ok(maxRelErr(db, ref.grads[peftKey(s.name, 'B')]) < 2e-3, `${s.name} dB rel err ${maxRelErr(db, ref.grads[peftKey(s.name, 'B')])}`);
    tf.dispose([g.da, g.db]);
  }
  for (const a of adapters.values()) disposeAdapter(a);
  model.dispose();
  assert.equal(tf.memory().numTensors, before, 'no tensors leak in recordBackward');
});

test('runProbe writes a report whose every dataset format agrees with its pre-tokenized equivalent', async () => {
  const dir = tmpDir();
  const alpaca = path.join(SHARED, 'data/code/code_alpaca_2k.json');
  const recs = records(STORIES, alpaca, 3, 96);
  const pre = path.join(dir, 'pre.jsonl');
  fs.writeFileSync(pre, recs.map((r) => JSON.stringify({ input_ids: r.inputIds, loss_mask: r.lossMask })).join('\n') + '\n');
  const a = await runProbe({ modelDir: STORIES, data: alpaca, samples: 3, seqLen: 96, backend: 'wasm', out: path.join(dir, 'a.json') });
  const b = await runProbe({ modelDir: STORIES, data: pre, samples: 3, seqLen: 96, backend: 'wasm' });
  assert.ok(fs.existsSync(path.join(dir, 'a.json')));
  assert.equal(a.report.dominant.name, b.report.dominant.name);
  a.report.modules.forEach((m, j) => assert.equal(m.pageExpected, b.report.modules[j].pageExpected));
});
