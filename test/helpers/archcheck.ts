// One folder against the PyTorch reference (test/reference/llama_ref.py, float64): the loss, both PAGE quantities
// with the same A, and LoRA gradients with A and B non-zero (so the LoRA forward path and every backward step below it
// are checked); and the reference's own controls, each feature changing its loss. Every pass runs through the
// asynchronous driver, so the same checks run on wasm (arch.test.ts) and on a GPU (webgpu.test.ts).
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { openModelFolder } from '../../src/engine/hf/folder';
import { ARCHITECTURES } from '../../src/engine/arch/registry';
import { candidateModules, ModuleSpec } from '../../src/engine/hf/modules';
import { initLoraA, makeAdapter, disposeAdapter, loraScale } from '../../src/engine/model/lora';
import { pageForRecordSteps, type RecordPage } from '../../src/engine/probe/page';
import { writeSafetensors } from '../../src/engine/hf/safetensors';
import { writeSynthModel } from '../../src/engine/hf/synth';
import type { SynthShape } from '../../src/engine/arch/types';
import { Decoder } from '../../src/engine/model/decoder';
import type { LoraAdapter, LoraGrads } from '../../src/engine/model/types';
import { peftKey } from '../../src/engine/export/peft';
import { Rng } from '../../src/engine/runtime/rng';
import { runStepsAsync } from '../../src/engine/runtime/jobs';
import type { TokenizedRecord } from '../../src/engine/data/tokenize';
import { tmpDir, reference, maxRelErr } from './reference';

/** Random records: a prompt that is not supervised, then a supervised response (lengths straddle the windows). */
export function randomRecords(seed: number, lengths: number[], vocab: number): TokenizedRecord[] {
  const rng = new Rng(seed);
  return lengths.map((T, index) => {
    const inputIds = [1, ...Array.from({ length: T - 1 }, () => 3 + rng.nextInt(vocab - 3))];
    const lossMask = inputIds.map((_, t) => (t >= Math.floor(T / 3) ? 1 : 0));
    return { index, line: index + 1, inputIds, lossMask } as unknown as TokenizedRecord;
  });
}

export interface Errors { loss: number; share: number; sampled: number; expected: number; grad: number }

/** Loss, PAGE and LoRA gradients of one folder against the reference; returns the largest errors seen. */
export async function checkAgainstReference(label: string, shape: SynthShape, controls: Record<string, unknown>[] = [], lengths = [40, 29, 17]): Promise<Errors> {
  const dir = path.join(tmpDir(), label);
  await writeSynthModel(dir, shape);
  const recs = randomRecords(shape.seed + 100, lengths, shape.vocabSize);
  const asRef = recs.map((r) => ({ input_ids: r.inputIds, loss_mask: r.lossMask }));
  const before = tf.memory().numTensors;
  const folder = openModelFolder(dir);
  const model = Decoder.load(folder.cfg, folder.store);
  const modules = candidateModules(folder.cfg);
  assert.deepEqual([...model.kinds], [...ARCHITECTURES[folder.cfg.modelType].modules.kinds]);
  const err: Errors = { loss: 0, share: 0, sampled: 0, expected: 0, grad: 0 };

  // Loss (forward only).
  const ours: number[] = [];
  for (const r of recs) ours.push((await runStepsAsync(model.recordLossSteps(r.inputIds, r.lossMask), {})).loss);
  const refLoss = reference<{ losses: number[] }>({ model_dir: dir, records: asRef, mode: 'loss' });
  ours.forEach((l, i) => { err.loss = Math.max(err.loss, Math.abs(l - refLoss.losses[i])); });
  assert.ok(err.loss < 1e-5, `${label}: loss differs by ${err.loss} (${ours} vs ${refLoss.losses})`);

  // PAGE at every candidate with the same A.
  const rank = 4, alpha = 8, seed = 3;
  const initFile = path.join(dir, 'lora_init.safetensors');
  writeSafetensors(initFile, modules.map((m) => ({ name: `${m.name}.lora_A.weight`, shape: [rank, m.dIn], data: initLoraA(seed, m.name, rank, m.dIn) })));
  const aT = new Map(modules.map((m) => [m.name, tf.tidy(() => tf.transpose(tf.tensor2d(initLoraA(seed, m.name, rank, m.dIn), [rank, m.dIn])) as tf.Tensor2D)]));
  const rows: RecordPage[] = [];
  for (const r of recs) rows.push(await runStepsAsync(pageForRecordSteps(model, r, modules, aT, rank, loraScale(alpha, rank)), {}));
  tf.dispose([...aT.values()]);
  const ref = reference<{ modules: string[]; pageSampled: number[]; pageExpected: number[]; share: number[]; losses: number[] }>(
    { model_dir: dir, records: asRef, mode: 'page', rank, alpha, lora_init: initFile });
  assert.deepEqual(ref.modules, modules.map((m) => m.name), `${label}: candidate modules and their order`);
  const M = modules.length;
  const mean = (k: 'sampled' | 'expected') => Array.from({ length: M }, (_, j) => rows.reduce((s, r) => s + r[k][j], 0) / rows.length);
  const exp = mean('expected'), smp = mean('sampled');
  const total = exp.reduce((a, b) => a + b, 0);
  for (let j = 0; j < M; j++) err.share = Math.max(err.share, Math.abs(exp[j] / total - ref.share[j]));
  err.expected = maxRelErr(exp, ref.pageExpected);
  err.sampled = maxRelErr(smp, ref.pageSampled);
  rows.forEach((r, i) => { err.loss = Math.max(err.loss, Math.abs(r.loss - ref.losses[i])); });
  assert.ok(err.share < 1e-4, `${label}: PAGE share differs by ${err.share}`);
  assert.ok(err.expected < 1e-3, `${label}: expected PAGE rel err ${err.expected}`);
  assert.ok(err.sampled < 1e-3, `${label}: sampled PAGE rel err ${err.sampled}`);

  // LoRA gradients, A and B non-zero, on every kind of the first and last layer (the first makes the backward pass
  // run through every layer above it, the LoRA path of every kind is in the forward pass).
  const specs = modules.filter((m) => m.layer === 0 || m.layer === folder.cfg.numLayers - 1);
  err.grad = await checkGrads(model, dir, recs, specs, asRef);
  model.dispose();
  assert.equal(tf.memory().numTensors, before, `${label}: no tensors leak`);
  // Each feature under test must change the result: the reference without it (the config changed as `control`
  // says) gives another loss, by far more than the tolerance.
  const cfgFile = path.join(dir, 'config.json');
  const original = fs.readFileSync(cfgFile, 'utf8');
  for (const control of controls) {
    fs.writeFileSync(cfgFile, JSON.stringify({ ...JSON.parse(original), ...control }));
    const without = reference<{ losses: number[] }>({ model_dir: dir, records: asRef, mode: 'loss' });
    const change = Math.max(...without.losses.map((l, i) => Math.abs(l - refLoss.losses[i])));
    assert.ok(change > 1e-3, `${label}: the reference barely changes under ${JSON.stringify(control)} (${change}); the test would not see it`);
  }
  fs.writeFileSync(cfgFile, original);
  console.log(`# ${label}: max |loss diff| ${err.loss.toExponential(2)}, share ${err.share.toExponential(2)}, ` +
    `sampled rel ${err.sampled.toExponential(2)}, expected rel ${err.expected.toExponential(2)}, LoRA grad rel ${err.grad.toExponential(2)}`);
  return err;
}

export async function checkGrads(model: Decoder, dir: string, recs: TokenizedRecord[], specs: ModuleSpec[], asRef: unknown[]): Promise<number> {
  const rank = 3, alpha = 6, rng = new Rng(11);
  const tensors = specs.map((m) => ({ spec: m, a: initLoraA(7, m.name, rank, m.dIn), b: Float32Array.from({ length: m.dOut * rank }, () => rng.uniform(-0.1, 0.1)) }));
  const adapterFile = path.join(dir, 'adapter.safetensors');
  writeSafetensors(adapterFile, tensors.flatMap((t) => [
    { name: peftKey(t.spec.name, 'A'), shape: [rank, t.spec.dIn], data: t.a }, { name: peftKey(t.spec.name, 'B'), shape: [t.spec.dOut, rank], data: t.b }]));
  const adapters = new Map<string, LoraAdapter>(tensors.map((t) => [t.spec.name, makeAdapter(t.spec, rank, loraScale(alpha, rank), t.a, t.b)]));
  const grads = new Map<string, LoraGrads>();
  let loss = 0;
  for (const r of recs) loss += (await runStepsAsync(model.recordBackwardSteps(r.inputIds, r.lossMask, { adapters, loraGrads: grads, lowestKinds: [...model.kinds] }, 0), {})).loss / recs.length;
  const ref = reference<{ loss: number; grads: Record<string, number[]> }>({ model_dir: dir, records: asRef, mode: 'grad', adapter: adapterFile, rank, alpha });
  assert.ok(Math.abs(loss - ref.loss) < 1e-5, `loss with adapters ${loss} vs ${ref.loss}`);
  let worst = 0;
  for (const s of specs) {
    const g = grads.get(s.name)!;
    const da = Array.from(await g.da.data()).map((v) => v / recs.length), db = Array.from(await g.db.data()).map((v) => v / recs.length);
    const ea = maxRelErr(da, ref.grads[peftKey(s.name, 'A')]), eb = maxRelErr(db, ref.grads[peftKey(s.name, 'B')]);
    worst = Math.max(worst, ea, eb);
    assert.ok(ea < 2e-3 && eb < 2e-3, `${s.name}: dA rel err ${ea}, dB rel err ${eb}`);
    tf.dispose([g.da, g.db]);
  }
  for (const a of adapters.values()) disposeAdapter(a);
  return worst;
}

