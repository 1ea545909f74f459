// The placement check on stories260K (wasm): every placement's held-out loss is what `eval --adapter` and the PyTorch
// reference (adapter merged into the weights) give for the adapter it kept; the same seed gives the same check bit for
// bit; a cancelled check resumes without redoing finished runs; bad input is refused before any work.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { CheckParams, CheckResult } from '../../src/protocol/messages';
import { initBackend } from '../../src/engine/runtime/backend';
import { runCheck } from '../../src/engine/check/check';
import { runEval } from '../../src/engine/eval/evaluate';
import { readHeader, readTensorF32 } from '../../src/engine/hf/safetensors';
import { readDataset } from '../../src/engine/data/read';
import { tokenizeDataset } from '../../src/engine/data/tokenize';
import { ModelTokenizer } from '../../src/engine/hf/tokenizer';
import { DomLoraError } from '../../src/engine/runtime/errors';
import { FIXTURES, STORIES, reference, tmpDir } from '../helpers/reference';

before(async () => { await initBackend('wasm'); });

const DATA = path.join(FIXTURES, 'data/math/gsm8k_train.jsonl');
const SEQ = 128;
/** A small budget: the tests check what the check computes, not how well a 260K model learns. */
const SMALL = { modelDir: STORIES, data: DATA, seqLen: SEQ, batchSize: 2, maxSamples: 24, samples: 4, lr: 5e-3, backend: 'wasm' as const };

/** Held-out records of the same task that are not among the first 24 the runs train on. */
function evalFile(): string {
  const file = path.join(tmpDir(), 'eval.jsonl');
  fs.writeFileSync(file, fs.readFileSync(DATA, 'utf8').split('\n').slice(3000, 3040).join('\n') + '\n');
  return file;
}

/** An adapter's tensors by name. */
function tensors(dir: string): Map<string, Float32Array> {
  const h = readHeader(path.join(dir, 'adapter_model.safetensors'));
  return new Map([...h.tensors.keys()].map((k) => [k, readTensorF32(h, k)]));
}

const badInput = (re: RegExp) => (e: unknown) => e instanceof DomLoraError && e.code === 'bad-input' && re.test(e.message);

test('each placement\'s held-out loss is eval --adapter\'s with its kept adapter, and the PyTorch reference\'s with it merged', async () => {
  const dir = path.join(tmpDir(), 'check');
  const evalData = evalFile();
  const r = await runCheck({ ...SMALL, evalData, placements: ['dominant,lowest', 'vanilla'], steps: 4, out: dir });
  assert.deepEqual(r.placements.map((p) => p.id), ['dominant', 'lowest', 'vanilla']);
  assert.equal(r.report.probed, true);
  assert.equal(r.report.path, path.join(dir, 'report.json'));
  const report = JSON.parse(fs.readFileSync(r.report.path, 'utf8'));
  assert.deepEqual(r.placements[0].modules, [report.dominant.name]);
  assert.equal(r.placements[0].share, report.dominant.share);
  assert.equal(r.placements[2].trainableParams, 46240);
  assert.equal(r.vanillaParams, 46240);
  assert.deepEqual(JSON.parse(fs.readFileSync(path.join(dir, 'check.json'), 'utf8')), JSON.parse(JSON.stringify(r)), 'check.json is the result');

  const base = await runEval({ modelDir: STORIES, data: evalData, seqLen: SEQ, backend: 'wasm' });
  assert.equal(r.evalRecords, base.samples);
  const recs = tokenizeDataset(readDataset(evalData), ModelTokenizer.load(STORIES), { seqLen: SEQ }).records;
  for (const p of r.placements) {
    const run = p.runs[0];
    assert.equal(run.adapterDir, path.join(dir, 'adapters', p.id, 'seed-0'));
    assert.deepEqual(fs.readdirSync(run.adapterDir).sort(), ['adapter_config.json', 'adapter_model.safetensors'], 'PEFT\'s files only, the checkpoint gone once recorded');
    assert.equal(run.evalLossBefore, base.meanLoss, `${p.id}: the loss before training is the base model's`);
    const ev = await runEval({ modelDir: STORIES, data: evalData, adapter: run.adapterDir, seqLen: SEQ, backend: 'wasm' });
    assert.equal(run.evalLossAfter, ev.meanLoss, `${p.id}: the check's held-out loss is eval --adapter's`);
    assert.ok(run.evalLossAfter < run.evalLossBefore, `${p.id}: training lowered the loss (${run.evalLossBefore} -> ${run.evalLossAfter})`);
    assert.equal(run.reduction, run.evalLossBefore - run.evalLossAfter);
    const ref = reference<{ meanLoss: number; merged: boolean; adaptedModules: string[] }>({
      model_dir: STORIES, mode: 'eval-adapter', merge: true, adapter_dir: run.adapterDir, records: recs.map((x) => ({ input_ids: x.inputIds, loss_mask: x.lossMask })) });
    assert.equal(ref.merged, true);
    assert.deepEqual(ref.adaptedModules, [...p.modules].sort());
    assert.ok(Math.abs(ref.meanLoss - run.evalLossAfter) < 1e-4, `${p.id}: reference (merged) ${ref.meanLoss} vs ours ${run.evalLossAfter}`);
  }
  const state = JSON.parse(fs.readFileSync(path.join(dir, 'check-state.json'), 'utf8'));
  assert.deepEqual(Object.keys(state.finished).sort(), ['dominant#0', 'lowest#0', 'vanilla#0']);
});

test('same seed and budget: the same check bit for bit; its seeds vary the runs, never the held-out records', async () => {
  const root = tmpDir();
  const params = (out: string): CheckParams => ({ ...SMALL, placements: ['dominant', 'random:1'], seeds: 2, seed: 3, steps: 3, evalSplit: 0.25, out });
  const a = await runCheck(params(path.join(root, 'a')));
  const b = await runCheck(params(path.join(root, 'b')));
  assert.deepEqual(a.config.seeds, [3, 4]);
  assert.deepEqual(a.placements.map((p) => p.modules), b.placements.map((p) => p.modules), 'the same random module');
  assert.equal(a.placements[1].kind, 'random');
  const dom = JSON.parse(fs.readFileSync(a.report.path, 'utf8')).dominant;
  assert.equal(a.placements[1].modules[0].split('.').pop(), dom.kind, 'random modules are of the dominant\'s kind');
  for (const [i, p] of a.placements.entries()) {
    for (const [s, run] of p.runs.entries()) {
      const other = b.placements[i].runs[s];
      assert.equal(run.evalLossAfter, other.evalLossAfter, `${p.id} seed ${run.seed}: bit for bit`);
      assert.equal(run.evalLossBefore, other.evalLossBefore);
      const ta = tensors(run.adapterDir), tb = tensors(other.adapterDir);
      for (const [k, v] of ta) assert.deepEqual(tb.get(k), v, `${p.id} seed ${run.seed}: ${k}`);
    }
    assert.equal(p.runs[0].evalLossBefore, p.runs[1].evalLossBefore, 'both seeds are evaluated on the same records');
    assert.notEqual(p.runs[0].evalLossAfter, p.runs[1].evalLossAfter, 'another seed trains another adapter');
    assert.ok(p.reduction.sd !== undefined && p.reduction.n === 2);
  }
  assert.deepEqual(a.findings, b.findings);
});

test('a check cancelled inside a placement resumes from its checkpoint without redoing finished runs, to the same numbers', async () => {
  const root = tmpDir();
  const params = (out: string): CheckParams => ({ ...SMALL, placements: ['dominant', 'lowest'], steps: 6, evalSplit: 0.25, out });
  const full = await runCheck(params(path.join(root, 'full')));
  const cut = path.join(root, 'cut');
  const controller = new AbortController();
  const seen: string[] = [];
  await assert.rejects(runCheck(params(cut), {
    signal: controller.signal,
    onProgress: (p) => {
      if (p.placement && p.message) seen.push(p.message);
      if (p.placement?.index === 2 && p.phase === 'train' && p.done === 4) controller.abort();
    },
  }), (e: unknown) => e instanceof DomLoraError && e.code === 'cancelled');
  assert.ok(seen.some((m) => /placement 1 of 2: dominant \(layer \d · \w+\)$/.test(m)) && seen.some((m) => /placement 2 of 2: lowest/.test(m)), seen.slice(0, 3).join('\n'));
  const state = JSON.parse(fs.readFileSync(path.join(cut, 'check-state.json'), 'utf8'));
  assert.deepEqual(Object.keys(state.finished), ['dominant#0'], 'the first placement is recorded');
  const ck = JSON.parse(fs.readFileSync(path.join(cut, 'adapters/lowest/seed-0/checkpoint/trainer_state.json'), 'utf8'));
  assert.ok(ck.step >= 1 && ck.step < 6, `the second placement kept a checkpoint mid-run (step ${ck.step})`);
  const domFile = path.join(cut, 'adapters/dominant/seed-0/adapter_model.safetensors');
  const mtime = fs.statSync(domFile).mtimeMs;
  // A flag that would change the check is refused, naming the check's value.
  await assert.rejects(runCheck({ modelDir: STORIES, data: '', out: cut, resume: cut, steps: 7 }), badInput(/--steps 7 conflicts with the check's 6/));
  const logs: string[] = [];
  const resumed = await runCheck({ modelDir: STORIES, data: '', out: cut, resume: cut, backend: 'wasm' }, { log: (_l, m) => logs.push(m) });
  assert.equal(fs.statSync(domFile).mtimeMs, mtime, 'the finished placement was not trained again');
  assert.ok(logs.some((m) => /placement 1 of 2: .*: finished earlier, kept/.test(m)), logs.join('\n'));
  assert.ok(logs.some((m) => /continuing from its checkpoint at step \d of 6/.test(m)), logs.join('\n'));
  for (const [i, p] of full.placements.entries()) {
    assert.equal(resumed.placements[i].runs[0].evalLossAfter, p.runs[0].evalLossAfter, `${p.id}: the same held-out loss as without the cancel`);
    const ta = tensors(p.runs[0].adapterDir), tb = tensors(resumed.placements[i].runs[0].adapterDir);
    for (const [k, v] of ta) assert.deepEqual(tb.get(k), v, `${p.id}: ${k}`);
  }
  assert.ok(!fs.existsSync(path.join(cut, 'adapters/lowest/seed-0/checkpoint')), 'the checkpoint goes once the run is recorded');
});

test('bad input is refused before any work, and nothing of the user\'s is replaced', async () => {
  const root = tmpDir();
  const out = path.join(root, 'c');
  await assert.rejects(runCheck({ ...SMALL, placements: ['dominant', 'best'], out }), badInput(/"best" is neither dominant/));
  await assert.rejects(runCheck({ ...SMALL, placements: ['model.layers.7.mlp.down_proj'], out }), badInput(/neither .* nor a linear module of this model \(e\.g\. model\.layers\.0\.mlp\.down_proj/));
  await assert.rejects(runCheck({ ...SMALL, evalSplit: 0, out }), badInput(/no record is held out/));
  await assert.rejects(runCheck({ ...SMALL, seeds: 0, out }), badInput(/--seeds must be an integer from 1 to 100, got 0/));
  await assert.rejects(runCheck({ ...SMALL, alpha: 16.5, out }), badInput(/--alpha must be an integer/));
  assert.ok(!fs.existsSync(out), 'nothing written');
  const mine = path.join(root, 'mine');
  fs.mkdirSync(mine);
  fs.writeFileSync(path.join(mine, 'notes.txt'), 'mine');
  await assert.rejects(runCheck({ ...SMALL, out: mine }), badInput(/already exists/));
  await assert.rejects(runCheck({ ...SMALL, out: mine, force: true }), badInput(/is not a placement check folder DomLoRA wrote/));
  assert.equal(fs.readFileSync(path.join(mine, 'notes.txt'), 'utf8'), 'mine');
  await assert.rejects(runCheck({ modelDir: STORIES, data: '', out: mine, resume: mine }), badInput(/has no check-state\.json/));
  const otherReport = path.join(root, 'other.json');
  fs.writeFileSync(otherReport, JSON.stringify({ dominant: { name: 'x' }, model: { layers: 2 }, modules: [] }));
  await assert.rejects(runCheck({ ...SMALL, report: otherReport, out }), badInput(/made for a model with 2 layers/));
});

test('a finished check replaced with --force starts afresh; its result file names every placement', async () => {
  const out = path.join(tmpDir(), 'c');
  const params: CheckParams = { ...SMALL, placements: ['dominant'], steps: 1, evalSplit: 0.25, out };
  const first: CheckResult = await runCheck(params);
  await assert.rejects(runCheck(params), badInput(/already exists/));
  const again = await runCheck({ ...params, force: true, placements: ['lowest'] });
  assert.deepEqual(again.placements.map((p) => p.id), ['lowest']);
  assert.ok(!fs.existsSync(path.join(out, 'adapters/dominant')), 'the replaced check left nothing of its own');
  assert.equal(first.placements[0].runs.length, 1);
});
