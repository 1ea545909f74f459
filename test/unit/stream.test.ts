// Layer streaming and activation checkpointing (how models beyond the 4 GiB wasm heap run): the same numbers as
// the resident model, no tensor left behind, and the estimate that turns streaming on.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend } from '../../src/engine/runtime/backend';
import { openModelFolder } from '../../src/engine/hf/folder';
import { Decoder } from '../../src/engine/model/decoder';
import { LoraGrads } from '../../src/engine/model/types';
import { ModelTokenizer } from '../../src/engine/hf/tokenizer';
import { candidateModules } from '../../src/engine/hf/modules';
import { normaliseConfig } from '../../src/engine/hf/config';
import { readDataset } from '../../src/engine/data/read';
import { tokenizeDataset } from '../../src/engine/data/tokenize';
import { initLoraA, loraScale, makeAdapter, disposeAdapter } from '../../src/engine/model/lora';
import { pageForRecord } from '../../src/engine/probe/page';
import { estimateJob } from '../../src/engine/runtime/estimate';
import { Rng } from '../../src/engine/runtime/rng';
import { SHARED, STORIES } from '../helpers/reference';

before(async () => { await initBackend('wasm'); });

test('streamed and checkpointed models give exactly the resident PAGE, loss and LoRA gradients', () => {
  const f = openModelFolder(STORIES);
  const recs = tokenizeDataset(readDataset(path.join(SHARED, 'data/math/gsm8k_train.jsonl')), ModelTokenizer.load(f.dir), { seqLen: 128, limit: 2 }).records;
  const modules = candidateModules(f.cfg);
  const targets = modules.filter((m) => ['model.layers.2.mlp.down_proj', 'model.layers.4.self_attn.q_proj'].includes(m.name));
  const results = [];
  for (const opt of [{}, { checkpoint: true }, { stream: true }]) {
    const n0 = tf.memory().numTensors;
    const m = Decoder.load(f.cfg, f.store, opt);
    const aT = new Map(modules.map((mm) => [mm.name, tf.tidy(() => tf.transpose(tf.tensor2d(initLoraA(0, mm.name, 8, mm.dIn), [8, mm.dIn])) as tf.Tensor2D)]));
    const page = pageForRecord(m, recs[0], modules, aT, 8, loraScale(16, 8));
    tf.dispose([...aT.values()]);
    const rs = new Rng(2);
    const adapters = new Map(targets.map((t) => [t.name, makeAdapter(t, 4, 2, initLoraA(1, t.name, 4, t.dIn), Float32Array.from({ length: t.dOut * 4 }, () => rs.uniform(-0.1, 0.1)))]));
    const grads = new Map<string, LoraGrads>();
    const loss = m.recordBackward(recs[1].inputIds, recs[1].lossMask, { adapters, loraGrads: grads, lowestKinds: ['down_proj'] }, 2).loss;
    const g = targets.map((t) => [Array.from(grads.get(t.name)!.da.dataSync()), Array.from(grads.get(t.name)!.db.dataSync())]);
    for (const x of grads.values()) tf.dispose([x.da, x.db]);
    for (const a of adapters.values()) disposeAdapter(a);
    m.dispose();
    assert.equal(tf.memory().numTensors, n0, `no tensors leak (${JSON.stringify(opt)})`);
    results.push({ page, loss, g });
  }
  for (const r of results.slice(1)) {
    assert.deepEqual(Array.from(r.page.expected), Array.from(results[0].page.expected));
    assert.deepEqual(Array.from(r.page.sampled), Array.from(results[0].page.sampled));
    assert.equal(r.loss, results[0].loss);
    assert.deepEqual(r.g, results[0].g);
  }
});

test('a Qwen2.5-0.5B-shaped model does not fit the wasm heap resident, and is planned streamed', () => {
  const cfg = normaliseConfig({ model_type: 'qwen2', hidden_size: 896, intermediate_size: 4864, num_hidden_layers: 24, num_attention_heads: 14,
    num_key_value_heads: 2, vocab_size: 151936, tie_word_embeddings: true, max_position_embeddings: 32768, rms_norm_eps: 1e-6, rope_theta: 1000000 });
  const est = estimateJob({ cfg, backend: 'wasm', threads: 2, tokensPerRecord: 512, backwardPasses: 8 });
  assert.equal(est.stream, true);
  assert.equal(est.fits, true, est.note);
  assert.match(est.note, /streamed/);
  const small = estimateJob({ cfg: normaliseConfig({ model_type: 'llama', hidden_size: 576, intermediate_size: 1536, num_hidden_layers: 30,
    num_attention_heads: 9, num_key_value_heads: 3, vocab_size: 49152, tie_word_embeddings: true }), backend: 'wasm', threads: 2, tokensPerRecord: 512, backwardPasses: 8 });
  assert.equal(small.stream, false, 'models that fit stay resident (faster)');
});

test('a load that fails halfway leaves nothing on the backend; per-length caches stay bounded', async () => {
  const { writeSynthModel } = await import('../../src/engine/hf/synth');
  const { tmpDir } = await import('../helpers/reference');
  const fs = await import('node:fs');
  const dir = path.join(tmpDir(), 'm');
  await writeSynthModel(dir, { hiddenSize: 32, intermediateSize: 48, layers: 2, heads: 4, kvHeads: 2, vocabSize: 384, tied: true, seed: 4 });
  const cfgFile = path.join(dir, 'config.json');
  const good = fs.readFileSync(cfgFile, 'utf8');
  fs.writeFileSync(cfgFile, good.replace('"intermediate_size": 48', '"intermediate_size": 50'));
  const n0 = tf.memory().numTensors;
  assert.throws(() => { const f = openModelFolder(dir); Decoder.load(f.cfg, f.store); }, /gate_proj.*shape/);
  assert.equal(tf.memory().numTensors, n0, 'the embedding and attention weights read before the failure were released');
  fs.writeFileSync(cfgFile, good);
  const f = openModelFolder(dir);
  const m = Decoder.load(f.cfg, f.store);
  const counts: number[] = [];
  for (let T = 4; T < 24; T++) {
    m.recordLoss(Array.from({ length: T }, (_, i) => 3 + i), Array.from({ length: T }, (_, i) => (i > 0 ? 1 : 0)));
    counts.push(tf.memory().numTensors);
  }
  assert.equal(counts[counts.length - 1], counts[11], `tensors grew with every new length: ${counts.join(' ')}`);
  m.dispose();
  assert.equal(tf.memory().numTensors, n0);
});
