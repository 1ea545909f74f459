// Kernel launches ("dispatches") per record: one PAGE record (forward, head, backward with a tap on every module) on
// the backend given, with attention in either shape. On a GPU each launch costs microseconds whatever its size, so
// the count is what the attention shape (runtime/backend.ts attentionShape) is chosen by.
//
//   npx esbuild scripts/dispatches.ts --bundle --platform=node --packages=external --outfile=out/dispatches.js
//   DOMLORA_ATTENTION=grouped node out/dispatches.js webgpu     (or batched; wasm)
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { candidateModules, initBackend, initLoraA, loadModel, loraScale, runStepsAsync, writeSynthModel } from '../src/engine';
import { pageForRecordSteps } from '../src/engine/probe/page';
import { attentionShape } from '../src/engine/runtime/backend';
import type { TokenizedRecord } from '../src/engine/data/tokenize';

async function main(): Promise<void> {
  const backend = (process.argv[2] ?? 'wasm') as 'wasm' | 'webgpu' | 'cpu';
  await initBackend(backend);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'domlora-dispatch-'));
  try {
    // SmolLM-135M's layer (9 heads, 3 key/value groups), 2 layers, a small vocabulary: counts scale with the layers.
    const layers = 2;
    await writeSynthModel(dir, { hiddenSize: 576, intermediateSize: 1536, layers, heads: 9, kvHeads: 3, vocabSize: 2048, tied: true, seed: 1, init: 'uniform' });
    const { model, folder } = loadModel(dir);
    const modules = candidateModules(folder.cfg);
    const aT = new Map(modules.map((m) => [m.name, tf.tidy(() => tf.transpose(tf.tensor2d(initLoraA(0, m.name, 8, m.dIn), [8, m.dIn])) as tf.Tensor2D)]));
    const T = 128;
    const ids = Array.from({ length: T }, (_, t) => 3 + ((t * 37) % 2000));
    const rec = { index: 0, line: 1, inputIds: ids, lossMask: ids.map((_, t) => (t > T / 4 ? 1 : 0)) } as unknown as TokenizedRecord;
    const run = () => runStepsAsync(pageForRecordSteps(model, rec, modules, aT, 8, loraScale(16, 8)), {});
    await run(); // warm: tables, shader compilation
    // Every op goes through the engine's runKernel: count there (tf.profile's kernel list is not complete in 4.22).
    const engine = tf.engine() as unknown as { runKernel: (name: string, ...rest: unknown[]) => unknown };
    const original = engine.runKernel.bind(engine);
    let counts = new Map<string, number>();
    engine.runKernel = (name: string, ...rest: unknown[]) => { counts.set(name, (counts.get(name) ?? 0) + 1); return original(name, ...rest); };
    const total = () => [...counts.values()].reduce((a, b) => a + b, 0);
    model.hiddenStates(ids).dispose();
    const forward = total();
    counts = new Map();
    const t0 = Date.now();
    await run();
    const ms = Date.now() - t0;
    engine.runKernel = original;
    console.log(JSON.stringify({
      backend, attention: attentionShape(), layers, tokens: T, kernelsPerPageRecord: total(), kernelsForwardOnly: forward,
      pageRecordMs: ms, top: [...counts.entries()].sort((a, b) => b[1] - a[1]).slice(0, 10),
    }));
    tf.dispose([...aT.values()]);
    model.dispose();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().then(() => process.exit(0), (e) => { console.error(e); process.exit(1); });
