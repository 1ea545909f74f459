// The layer-major schedule (model/schedule.ts) against the record-major passes it replaces for big models: the same
// losses, PAGE values and LoRA gradients, with the layers read from the files one at a time and the vocabulary
// streamed in parts (a binding limit forced small), for architectures with different residual structures: Llama,
// Gemma 2 (sandwich norms, soft-caps) and GPT-NeoX (parallel residual). Tolerance: 1e-5 relative on losses, 1e-4 on
// PAGE, 1e-3 on gradients (their small entries amplify rounding; a fault shows at order one): the same f32 maths in another order (a running log-sum-exp over the vocabulary's parts, the
// layer inputs round-tripped through host memory exactly).
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend } from '../../src/engine/runtime/backend';
import { openModelFolder } from '../../src/engine/hf/folder';
import { candidateModules } from '../../src/engine/hf/modules';
import { writeSynthModel } from '../../src/engine/hf/synth';
import type { SynthShape } from '../../src/engine/arch/types';
import { Decoder } from '../../src/engine/model/decoder';
import { backwardLayerMajor, lossLayerMajor } from '../../src/engine/model/schedule';
import { initLoraA, makeAdapter, disposeAdapter, loraScale } from '../../src/engine/model/lora';
import type { LoraAdapter, LoraGrads } from '../../src/engine/model/types';
import { pageForRecordSteps, pageForRecordsSteps } from '../../src/engine/probe/page';
import { runSteps } from '../../src/engine/runtime/jobs';
import { Rng } from '../../src/engine/runtime/rng';
import { tmpDir, maxRelErr, relErr } from '../helpers/reference';
import { randomRecords } from '../helpers/archcheck';

before(async () => { await initBackend('wasm'); });

const BASE = { hiddenSize: 32, intermediateSize: 48, layers: 3, heads: 4, kvHeads: 2, vocabSize: 384, tied: false };

// How the streamed layers' modules are kept: in blocks of their output columns (1000 bytes: 5-7 columns of these
// modules, balanced), in one layout (the backward takes W^T as its left operand) or both; or whole, in one layout.
const ONE_IN_BLOCKS = { keepBothLayouts: false, blockBytes: 1000 }, BOTH_IN_BLOCKS = { keepBothLayouts: true, blockBytes: 1000 };
for (const [label, shape, layout] of [
  ['llama', { ...BASE, seed: 71 }, ONE_IN_BLOCKS],
  ['gemma2', { ...BASE, seed: 72, arch: 'gemma2', tied: true, headDim: 12, config: { sliding_window: 8, attn_logit_softcapping: 1.5, final_logit_softcapping: 4.0 } }, BOTH_IN_BLOCKS],
  ['gpt_neox', { ...BASE, seed: 73, arch: 'gpt_neox', kvHeads: 4 }, { keepBothLayouts: false }],
] as [string, SynthShape, { keepBothLayouts: boolean; blockBytes?: number }][]) {
  test(`layer-major with streamed layers (${layout.keepBothLayouts ? 'both layouts' : 'one layout'}, ${layout.blockBytes ? 'in blocks' : 'whole'}) and vocabulary equals record-major (${label}): losses, PAGE, LoRA gradients`, async () => {
    const dir = path.join(tmpDir(), label);
    await writeSynthModel(dir, shape);
    const folder = openModelFolder(dir);
    const recs = randomRecords(shape.seed + 5, [30, 17, 24], shape.vocabSize);
    const modules = candidateModules(folder.cfg);
    const before = tf.memory().numTensors;
    const resident = Decoder.load(folder.cfg, folder.store);
    process.env.DOMLORA_MAX_BINDING_BYTES = String(50 * shape.hiddenSize * 4); // 50 rows a part: 8 parts of 384
    const streamed = Decoder.load(folder.cfg, folder.store, { stream: true, streamVocab: true, ...layout });
    delete process.env.DOMLORA_MAX_BINDING_BYTES;
    assert.deepEqual(streamed.plan, { streamLayers: true, streamVocab: true });
    try {
      // Forward only.
      const a = recs.map((r) => resident.recordLoss(r.inputIds, r.lossMask).loss);
      const b = runSteps(lossLayerMajor(streamed, recs.map((r) => ({ ids: r.inputIds, mask: r.lossMask })))).map((p) => p.loss);
      a.forEach((l, i) => assert.ok(relErr(b[i], l) < 1e-5, `record ${i}: loss ${b[i]} vs ${l}`));
      // PAGE on every module.
      const rank = 4, scale = loraScale(8, rank);
      const aT = new Map(modules.map((m) => [m.name, tf.tidy(() => tf.transpose(tf.tensor2d(initLoraA(2, m.name, rank, m.dIn), [rank, m.dIn])) as tf.Tensor2D)]));
      const pa = recs.map((r) => runSteps(pageForRecordSteps(resident, r, modules, aT, rank, scale)));
      const pb = runSteps(pageForRecordsSteps(streamed, recs, modules, aT, rank, scale));
      tf.dispose([...aT.values()]);
      pa.forEach((p, i) => {
        assert.ok(maxRelErr(pb[i].expected, p.expected) < 1e-4, `record ${i}: expected PAGE rel err ${maxRelErr(pb[i].expected, p.expected)}`);
        assert.ok(maxRelErr(pb[i].sampled, p.sampled) < 1e-4, `record ${i}: sampled PAGE rel err ${maxRelErr(pb[i].sampled, p.sampled)}`);
        assert.ok(relErr(pb[i].loss, p.loss) < 1e-5);
      });
      // LoRA gradients, A and B non-zero, on every module of layers 1 and 2 (the pass starts at layer 1).
      const rng = new Rng(5);
      const specs = modules.filter((m) => m.layer >= 1);
      const adapters = new Map<string, LoraAdapter>(specs.map((m) => [m.name, makeAdapter(m, rank, scale, initLoraA(3, m.name, rank, m.dIn),
        Float32Array.from({ length: m.dOut * rank }, () => rng.uniform(-0.1, 0.1)))]));
      const lowestKinds = [...new Set(specs.filter((m) => m.layer === 1).map((m) => m.kind))];
      const ga = new Map<string, LoraGrads>(), gb = new Map<string, LoraGrads>();
      for (const r of recs) resident.recordBackward(r.inputIds, r.lossMask, { adapters, loraGrads: ga, lowestKinds }, 1);
      runSteps(backwardLayerMajor(streamed, recs.map((r) => ({ ids: r.inputIds, mask: r.lossMask, ctx: { adapters, loraGrads: gb, lowestKinds } })), 1));
      for (const m of specs) {
        for (const k of ['da', 'db'] as const) {
          const e = maxRelErr(gb.get(m.name)![k].dataSync(), ga.get(m.name)![k].dataSync());
          assert.ok(e < 1e-3, `${m.name} ${k}: rel err ${e}`);
        }
      }
      for (const g of [...ga.values(), ...gb.values()]) tf.dispose([g.da, g.db]);
      for (const ad of adapters.values()) disposeAdapter(ad);
    } finally {
      resident.dispose();
      streamed.dispose();
    }
    assert.equal(tf.memory().numTensors, before, 'nothing left on the backend');
  });
}

test('jobs planned layer-major by a small memory budget give the resident jobs\' probe, evaluation and training', async () => {
  const { runProbe } = await import('../../src/engine/probe/probe');
  const { runEval } = await import('../../src/engine/eval/evaluate');
  const { runTrain } = await import('../../src/engine/train/loop');
  const { synthDataset } = await import('../../src/engine/hf/synth');
  const dir = tmpDir();
  const model = path.join(dir, 'model');
  await writeSynthModel(model, { ...BASE, layers: 4, seed: 74, tied: true });
  const data = path.join(dir, 'data.jsonl');
  synthDataset(data, 24, 3);
  const logs: string[] = [];
  const log = { log: (_l: string, m: string) => logs.push(m) };
  /** Runs `fn` with the backend's memory budget forced to `bytes` (none: the real one). */
  const within = async <T>(bytes: number | undefined, fn: () => Promise<T>): Promise<T> => {
    if (bytes) process.env.DOMLORA_MEMORY_BUDGET = String(bytes);
    try { return await fn(); } finally { delete process.env.DOMLORA_MEMORY_BUDGET; }
  };
  // Budgets below what each job needs resident (about 2.3 MB for the probe and training, 1.45 MB for evaluation)
  // and above what one layer at a time needs.
  const run = async (backward?: number, forward?: number) => {
    const probe = await within(backward, () => runProbe({ modelDir: model, data, samples: 6, seqLen: 64, backend: 'wasm', bootstrap: 10 }, log));
    const ev = await within(forward, () => runEval({ modelDir: model, data, maxSamples: 5, seqLen: 64, backend: 'wasm' }, log));
    const tr = await within(backward, () => runTrain({ modelDir: model, data, targets: ['model.layers.2.mlp.down_proj', 'model.layers.3.self_attn.v_proj'],
      steps: 3, batchSize: 3, lr: 1e-2, seqLen: 64, evalSplit: 0.2, out: path.join(dir, `adapter-${backward ?? 0}`), backend: 'wasm' }, log));
    return { probe: probe.report, ev, tr };
  };
  const resident = await run();
  assert.equal(logs.filter((l) => /record-major/.test(l)).length, 3, logs.join('\n'));
  logs.length = 0;
  const streamed = await run(2e6, 1.2e6);
  assert.equal(logs.filter((l) => /layer-major: .*streamed from the files/.test(l)).length, 3, logs.join('\n'));
  const pa = resident.probe.modules.map((m) => m.pageExpected), pb = streamed.probe.modules.map((m) => m.pageExpected);
  assert.ok(maxRelErr(pb, pa) < 1e-4, `PAGE rel err ${maxRelErr(pb, pa)}`);
  assert.equal(streamed.probe.dominant.name, resident.probe.dominant.name);
  assert.ok(relErr(streamed.ev.meanLoss, resident.ev.meanLoss) < 1e-5);
  assert.ok(relErr(streamed.tr.evalLossAfter!, resident.tr.evalLossAfter!) < 1e-4, `${streamed.tr.evalLossAfter} vs ${resident.tr.evalLossAfter}`);
  assert.ok(streamed.tr.evalLossAfter! < streamed.tr.evalLossBefore!);
});
