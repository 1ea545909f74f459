// A cancel lands within one layer of a record, not at the end of the record: the passes run as steps
// (model.ts's *Steps generators) and runStepsAsync lets the event loop in at every layer. Stopping early leaves
// nothing on the backend, resident or streamed, and the steps give exactly what the straight-through call gives.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend } from '../../src/engine/runtime/backend';
import { openModelFolder } from '../../src/engine/hf/folder';
import { candidateModules } from '../../src/engine/hf/modules';
import { initLoraA, loraScale } from '../../src/engine/model/lora';
import { pageForRecord, pageForRecordSteps, pageForRecordsSteps } from '../../src/engine/probe/page';
import { writeSynthModel } from '../../src/engine/hf/synth';
import { Decoder } from '../../src/engine/model/decoder';
import { CancelledError } from '../../src/engine/runtime/errors';
import { runStepsAsync, Steps, type Values } from '../../src/engine/runtime/jobs';
import type { TokenizedRecord } from '../../src/engine/data/tokenize';
import { tmpDir } from '../helpers/reference';

before(async () => { await initBackend('wasm'); });

const LAYERS = 6;

/**
 * Counts the steps a pass takes, and aborts the job after `after` of them; a stop is passed on to the pass. A read
 * (the pass asking for values) is passed through to the driver and is not a step.
 */
function* counting<T>(steps: Steps<T>, seen: { n: number }, after: number, abort: () => void): Steps<T> {
  let done = false;
  let input: Values | undefined;
  try {
    for (;;) {
      const r = steps.next(input);
      if (r.done) { done = true; return r.value; }
      if (r.value) { input = yield r.value; continue; }
      if (++seen.n === after) abort();
      input = yield;
    }
  } finally {
    if (!done) steps.return(undefined as never);
  }
}

// A large vocabulary makes the LM head run in chunks (of 209 rows at V = 40000), a step each.
for (const [stream, V, T] of [[false, 300, 40], [true, 300, 40], [false, 40000, 300], [true, 40000, 300]] as const) {
  test(`cancel mid-record (${stream ? 'streamed, checkpointed' : 'resident'}, V = ${V}): lands within a layer or head chunk, leaves no tensor, and the steps equal the plain call`, async () => {
    const dir = path.join(tmpDir(), `cancel-${stream}-${V}`);
    await writeSynthModel(dir, { hiddenSize: 32, intermediateSize: 48, layers: LAYERS, heads: 4, kvHeads: 2, vocabSize: V, tied: false, seed: 9 });
    const folder = openModelFolder(dir);
    const before = tf.memory().numTensors;
    const model = Decoder.load(folder.cfg, folder.store, { stream });
    const modules = candidateModules(folder.cfg);
    const aT = new Map(modules.map((m) => [m.name, tf.tidy(() => tf.transpose(tf.tensor2d(initLoraA(1, m.name, 4, m.dIn), [4, m.dIn])) as tf.Tensor2D)]));
    const inputIds = Array.from({ length: T }, (_, t) => 3 + ((t * 37) % 290));
    const rec = { index: 0, line: 1, inputIds, lossMask: inputIds.map((_, t) => (t > 10 ? 1 : 0)) } as unknown as TokenizedRecord;
    const scale = loraScale(8, 4);
    const plain = pageForRecord(model, rec, modules, aT, 4, scale);
    const afterPlain = tf.memory().numTensors;

    // Run to the end through the async driver: the same values, and a step per layer forward and backward.
    const all = { n: 0 };
    const stepped = await runStepsAsync(counting(pageForRecordSteps(model, rec, modules, aT, 4, scale), all, -1, () => {}), {});
    assert.deepEqual(Array.from(stepped.expected), Array.from(plain.expected));
    assert.deepEqual(Array.from(stepped.sampled), Array.from(plain.sampled));
    assert.equal(stepped.loss, plain.loss);
    assert.ok(all.n >= 2 * LAYERS + (V > 1000 ? 1 : 0), `${all.n} steps for ${LAYERS} layers`);
    assert.equal(tf.memory().numTensors, afterPlain, 'a finished pass keeps nothing');

    // Cancel at every step of the pass: forward, head, backward.
    for (let at = 1; at < all.n; at++) {
      const ac = new AbortController();
      const seen = { n: 0 };
      await assert.rejects(
        runStepsAsync(counting(pageForRecordSteps(model, rec, modules, aT, 4, scale), seen, at, () => ac.abort()), { signal: ac.signal }),
        (e: unknown) => e instanceof CancelledError);
      assert.equal(seen.n, at, `stopped right after step ${at}, not at the end of the record`);
      assert.equal(tf.memory().numTensors, afterPlain, `cancel at step ${at} of ${all.n} leaves no tensor`);
    }
    // Evaluation (forward only) and training (adapters from layer 2 up, the frozen layers' output given): the same.
    const below = model.hiddenBelow(rec.inputIds, 2); // recordBackwardSteps clones it; it stays the caller's
    const held = afterPlain + 1;
    const shapes: [string, () => Steps<unknown>][] = [
      ['recordLossSteps', () => model.recordLossSteps(rec.inputIds, rec.lossMask)],
      ['recordBackwardSteps from layer 2', () => model.recordBackwardSteps(rec.inputIds, rec.lossMask, { lowestKinds: [...model.kinds] }, 2, below)],
    ];
    for (const [name, make] of shapes) {
      const whole = { n: 0 };
      await runStepsAsync(counting(make(), whole, -1, () => {}), {});
      assert.equal(tf.memory().numTensors, held, `${name}: a finished pass keeps nothing`);
      for (let at = 1; at < whole.n; at++) {
        const ac = new AbortController();
        const seen = { n: 0 };
        await assert.rejects(runStepsAsync(counting(make(), seen, at, () => ac.abort()), { signal: ac.signal }), (e: unknown) => e instanceof CancelledError);
        assert.equal(seen.n, at);
        assert.equal(tf.memory().numTensors, held, `${name}: cancel at step ${at} of ${whole.n} leaves no tensor`);
      }
    }
    below.dispose();
    tf.dispose([...aT.values()]);
    model.dispose();
    assert.equal(tf.memory().numTensors, before);
  });
}

// The layer-major schedule (big models: the layers streamed from the files, many records through each layer in turn)
// is steps too: a cancel lands within one layer of the group, not at the end of the pass, and leaves no tensor.
test('cancel mid-pass of a layer-major probe over three records (layers streamed): lands within a layer, leaves no tensor', async () => {
  const dir = path.join(tmpDir(), 'cancel-layer-major');
  await writeSynthModel(dir, { hiddenSize: 32, intermediateSize: 48, layers: LAYERS, heads: 4, kvHeads: 2, vocabSize: 300, tied: false, seed: 19 });
  const folder = openModelFolder(dir);
  const before = tf.memory().numTensors;
  const model = Decoder.load(folder.cfg, folder.store, { stream: true });
  const modules = candidateModules(folder.cfg);
  const aT = new Map(modules.map((m) => [m.name, tf.tidy(() => tf.transpose(tf.tensor2d(initLoraA(1, m.name, 4, m.dIn), [4, m.dIn])) as tf.Tensor2D)]));
  const recs = [0, 1, 2].map((n) => {
    const inputIds = Array.from({ length: 24 + 4 * n }, (_, t) => 3 + ((t * 37 + n * 11) % 290));
    return { index: n, line: n + 1, inputIds, lossMask: inputIds.map((_, t) => (t > 6 ? 1 : 0)) } as unknown as TokenizedRecord;
  });
  const scale = loraScale(8, 4);
  // A first pass fills the model's lazy tables (RoPE per length and the like), as the plain call does above.
  const first = await runStepsAsync(pageForRecordsSteps(model, recs, modules, aT, 4, scale), {});
  const held = tf.memory().numTensors;
  const all = { n: 0 };
  const whole = await runStepsAsync(counting(pageForRecordsSteps(model, recs, modules, aT, 4, scale), all, -1, () => {}), {});
  assert.equal(whole.length, 3);
  whole.forEach((p, n) => assert.deepEqual(Array.from(p.expected), Array.from(first[n].expected)));
  // A step per layer forward and per layer backward for the whole group, not per record.
  assert.ok(all.n >= 2 * LAYERS, `${all.n} steps for ${LAYERS} layers`);
  assert.equal(tf.memory().numTensors, held, 'a finished pass keeps nothing');
  for (let at = 1; at < all.n; at++) {
    const ac = new AbortController();
    const seen = { n: 0 };
    await assert.rejects(
      runStepsAsync(counting(pageForRecordsSteps(model, recs, modules, aT, 4, scale), seen, at, () => ac.abort()), { signal: ac.signal }),
      (e: unknown) => e instanceof CancelledError);
    assert.equal(seen.n, at, `stopped right after step ${at} of ${all.n}, not at the end of the pass`);
    assert.equal(tf.memory().numTensors, held, `cancel at step ${at} of ${all.n} leaves no tensor`);
  }
  tf.dispose([...aT.values()]);
  model.dispose();
  assert.equal(tf.memory().numTensors, before);
});
