// The careful user's engine, without a model run: the table of parameter ranges and defaults (one source for the CLI,
// the extension and the demo), the learning-rate schedule, what --resume lets change, the sequence length against the
// model's context, and the rule every output follows (checked and made ready before the work; --force replaces only
// what DomLoRA wrote).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { DEFAULTS, LIMITS, describeLimit, limitProblem, withinLimit, type LimitKey } from '../../src/protocol/params';
import { USAGE, negativesAsValues } from '../../src/cli/args';
import { completePlan, learningRate, resumePlan, runSettings, checkTrainParams, type RunPlan, type TrainerState } from '../../src/engine/train/plan';
import { PROBE_DEFAULTS } from '../../src/engine/probe/probe';
import { claimOutput, whyNotOurs } from '../../src/engine/runtime/outputs';
import { checkLimits, jobSeqLen } from '../../src/engine/runtime/limits';
import { readConfig } from '../../src/engine/hf/config';
import { writeSynthModel } from '../../src/engine/hf/synth';
import { encodeSafetensors } from '../../src/engine/hf/safetensors';
import { DomLoraError } from '../../src/engine/runtime/errors';
import { STORIES, tmpDir } from '../helpers/reference';

function badInput(fn: () => unknown, re: RegExp): void {
  assert.throws(fn, (e: unknown) => e instanceof DomLoraError && e.code === 'bad-input' && re.test(e.message),
    `expected a bad-input error matching ${re}`);
}

test('every numeric parameter has a range: bounds in, outside out, non-numbers out, each message names the flag', () => {
  for (const [key, l] of Object.entries(LIMITS) as [LimitKey, (typeof LIMITS)[LimitKey]][]) {
    const lim = l as { min: number; max: number; minExclusive?: boolean; maxExclusive?: boolean; integer?: boolean; flag: string };
    assert.equal(withinLimit(key, lim.min), !lim.minExclusive, `${key} at its minimum`);
    assert.equal(withinLimit(key, lim.max), !lim.maxExclusive, `${key} at its maximum`);
    assert.equal(withinLimit(key, lim.min - 1), false, `${key} below its minimum`);
    assert.equal(withinLimit(key, lim.max + 1), false, `${key} above its maximum`);
    for (const bad of [NaN, Infinity, '8', null]) assert.equal(withinLimit(key, bad), false, `${key}: ${String(bad)}`);
    if (lim.integer) assert.equal(withinLimit(key, lim.min + 0.5), false, `${key} is an integer`);
    assert.match(limitProblem(key, lim.min - 1)!, new RegExp(`^--${lim.flag} must be (an integer|a number) `));
    assert.ok(USAGE.includes(`--${lim.flag}`), `--help mentions --${lim.flag}`);
  }
  assert.equal(limitProblem('lr', 0), '--lr must be a number above 0 and at most 1, got 0');
  assert.equal(limitProblem('lr', 1e9, true), '--lr (setting domlora.learningRate) must be a number above 0 and at most 1, got 1000000000');
  assert.equal(limitProblem('batchSize', 0), '--batch-size must be an integer from 1 to 1024, got 0');
  assert.equal(limitProblem('evalSplit', 1), '--eval-split must be a number at least 0 and below 1, got 1');
  assert.equal(limitProblem('rank', 'eight'), '--rank must be an integer from 1 to 1024, got "eight"');
  assert.equal(describeLimit(LIMITS.maxNewTokens), 'an integer from 1 to 1,048,576');
  for (const key of Object.keys(DEFAULTS) as LimitKey[]) assert.ok(withinLimit(key, DEFAULTS[key as keyof typeof DEFAULTS]), `default of ${key} is in range`);
  // The engine refuses the same values with the same words (and the setting, for the extension's user).
  badInput(() => checkLimits({ lr: -1 }, ['lr']), /^--lr \(setting domlora\.learningRate\) must be a number above 0 and at most 1, got -1$/);
  badInput(() => checkTrainParams({ modelDir: 'm', data: 'd', out: 'o', gradAccum: 0 }), /--grad-accum must be an integer from 1 to 1024, got 0/);
  badInput(() => checkTrainParams({ modelDir: 'm', data: 'd', out: 'o', steps: 5, epochs: 1 }), /--steps or --epochs, not both/);
});

test("package.json's settings declare the protocol's defaults and ranges, and the engine uses the same defaults", () => {
  const pkg = JSON.parse(fs.readFileSync(path.resolve('package.json'), 'utf8'));
  const props = pkg.contributes.configuration.properties as Record<string, Record<string, unknown>>;
  const withSetting = (Object.entries(LIMITS) as [LimitKey, { setting?: string; min: number; max: number; minExclusive?: boolean; integer?: boolean }][])
    .filter(([, l]) => l.setting);
  assert.ok(withSetting.length >= 6);
  for (const [key, l] of withSetting) {
    const p = props[l.setting!];
    assert.ok(p, `${l.setting} is contributed`);
    assert.equal(p.default, DEFAULTS[key as keyof typeof DEFAULTS], `default of ${l.setting}`);
    assert.equal(p.type, l.integer ? 'integer' : 'number', `type of ${l.setting}`);
    assert.equal(l.minExclusive ? p.exclusiveMinimum : p.minimum, l.min, `lower bound of ${l.setting}`);
    assert.equal(p.maximum, l.max, `upper bound of ${l.setting}`);
  }
  assert.equal(PROBE_DEFAULTS.samples, DEFAULTS.samples);
  assert.equal(PROBE_DEFAULTS.rank, DEFAULTS.rank);
  // A run without --steps takes the default number of steps, whatever the data's size (not one epoch).
  const s = { preset: 'domlora' as const, rank: 8, alpha: 16, lr: DEFAULTS.lr, batchSize: 4, gradAccum: 1, seqLen: 64, seed: 0, weightDecay: 0,
    beta1: 0.9, beta2: 0.999, eps: 1e-8, evalSplit: 0 };
  const a = { fingerprint: 'f', targets: ['t'], trainCount: 7000, data: 'd.jsonl', dataSha256: 'x' };
  assert.equal(completePlan(s, { modelDir: 'm', data: 'd', out: 'o' }, a).steps, DEFAULTS.steps);
  assert.equal(completePlan(s, { modelDir: 'm', data: 'd', out: 'o', epochs: 2 }, a).steps, 3500);
});

test('a negative number after a flag is read as its value, not as an option', () => {
  const opts = { rank: { type: 'string' as const }, quiet: { type: 'boolean' as const } };
  assert.deepEqual(negativesAsValues(['m', '--rank', '-1', '--quiet'], opts), ['m', '--rank=-1', '--quiet']);
  assert.deepEqual(negativesAsValues(['--rank', '-.5'], opts), ['--rank=-.5']);
  assert.deepEqual(negativesAsValues(['--rank=-3'], opts), ['--rank=-3']);
  // Only after a flag that takes a value, and never a flag-looking word.
  assert.deepEqual(negativesAsValues(['--quiet', '-1'], opts), ['--quiet', '-1']);
  assert.deepEqual(negativesAsValues(['--rank', '-h'], opts), ['--rank', '-h']);
  assert.deepEqual(negativesAsValues(['--', '--rank', '-1'], opts), ['--', '--rank', '-1']);
});

test('the schedule gives every step of a run of any length a learning rate above 0, warm-up included', () => {
  for (const steps of [1, 2, 3, 10, 100, 1000]) {
    for (const warmupSteps of [0, 1, Math.min(Math.max(1, Math.round(0.05 * steps)), 100), steps]) {
      const plan = { lr: 2e-3, steps, warmupSteps };
      for (let s = 0; s < steps; s++) assert.ok(learningRate(plan, s) > 0, `steps ${steps}, warm-up ${warmupSteps}: step ${s} has lr ${learningRate(plan, s)}`);
      if (warmupSteps > 0) assert.equal(learningRate(plan, warmupSteps - 1), 2e-3, 'the warm-up ends at the full rate');
    }
  }
  assert.equal(learningRate({ lr: 1e-2, steps: 1, warmupSteps: 1 }, 0), 1e-2, 'a 1-step run learns at the full rate');
  // After the warm-up: transformers' cosine, lr * 0.5 (1 + cos(pi (s - W) / (S - W))).
  const plan = { lr: 1, steps: 20, warmupSteps: 4 };
  for (let s = 4; s < 20; s++) assert.ok(Math.abs(learningRate(plan, s) - 0.5 * (1 + Math.cos((Math.PI * (s - 4)) / 16))) < 1e-15);
  assert.deepEqual([0, 1, 2, 3].map((s) => learningRate(plan, s)), [0.25, 0.5, 0.75, 1]);
});

function trainerState(step: number): TrainerState {
  const plan: RunPlan = {
    modelFingerprint: 'llama:L5', targets: ['model.layers.1.mlp.down_proj'], preset: 'domlora', rank: 8, alpha: 16, lr: 2e-3, steps: 6,
    batchSize: 2, gradAccum: 1, seqLen: 96, seed: 0, weightDecay: 0, warmupSteps: 1, evalEvery: 1, checkpointEvery: 2, beta1: 0.9,
    beta2: 0.999, eps: 1e-8, data: '/data/train.jsonl', dataSha256: 'abc', evalSplit: 0.05, maxSamples: 20,
  };
  return { plan, step, curve: [], seconds: 1 };
}

test('--resume refuses a flag that would change the run, naming the checkpoint value; --steps may extend it', () => {
  const st = trainerState(2);
  const base = { modelDir: 'm', data: '', out: 'o', resume: 'o' };
  const file = '/o/checkpoint/trainer_state.json';
  assert.deepEqual(resumePlan(base, st, file), st.plan);
  // Repeating the checkpoint's own values is fine.
  assert.deepEqual(resumePlan({ ...base, lr: 2e-3, rank: 8, steps: 6, targets: ['model.layers.1.mlp.down_proj'] }, st, file), st.plan);
  badInput(() => resumePlan({ ...base, lr: 0.01 }, st, file), /trainer_state\.json: --lr 0\.01 conflicts with the checkpoint's 0\.002: --resume continues the same run; leave --lr out/);
  badInput(() => resumePlan({ ...base, rank: 4 }, st, file), /--rank 4 conflicts with the checkpoint's 8/);
  badInput(() => resumePlan({ ...base, batchSize: 4 }, st, file), /--batch-size 4 conflicts with the checkpoint's 2/);
  badInput(() => resumePlan({ ...base, seqLen: 512 }, st, file), /--seq-len 512 conflicts with the checkpoint's 96/);
  badInput(() => resumePlan({ ...base, preset: 'vanilla' }, st, file), /--preset vanilla conflicts with the checkpoint's domlora/);
  badInput(() => resumePlan({ ...base, targets: ['model.layers.2.mlp.down_proj'] }, st, file), /--target model\.layers\.2\.mlp\.down_proj conflicts/);
  badInput(() => resumePlan(base, st, file, ['model.layers.0.self_attn.q_proj']), /--from-report \(dominant module\) model\.layers\.0\.self_attn\.q_proj conflicts/);
  badInput(() => resumePlan({ ...base, steps: 4 }, st, file), /--steps 4 is fewer than the checkpoint's 6: a resumed run can be extended, not shortened/);
  badInput(() => checkTrainParams({ ...base, epochs: 2 }), /--epochs cannot be combined with --resume/);
  assert.equal(resumePlan({ ...base, steps: 12 }, st, file).steps, 12, '--steps above the checkpoint\'s extends the run');
  assert.equal(resumePlan({ ...base, steps: 12 }, trainerState(6), file).steps, 12, 'a finished run too');
});

test('the sequence length defaults to min(512, context); past the context GPT-2 is refused and RoPE warned about', async () => {
  const dir = tmpDir();
  const shape = { hiddenSize: 32, intermediateSize: 64, layers: 1, heads: 4, kvHeads: 4, vocabSize: 384, tied: true, seed: 3 };
  await writeSynthModel(path.join(dir, 'gpt2'), { ...shape, arch: 'gpt2', config: { n_positions: 64 } });
  await writeSynthModel(path.join(dir, 'llama'), { ...shape, config: { max_position_embeddings: 128 } });
  const gpt2 = readConfig(path.join(dir, 'gpt2')), llama = readConfig(path.join(dir, 'llama')), stories = readConfig(STORIES);
  const warnings: string[] = [];
  const hooks = { log: (_: string, m: string) => { warnings.push(m); } };
  assert.equal(jobSeqLen(stories, 'config.json', undefined, hooks), 512);
  assert.equal(jobSeqLen(gpt2, 'config.json', undefined, hooks), 64);
  assert.equal(jobSeqLen(llama, 'config.json', undefined, hooks), 128);
  assert.equal(jobSeqLen(gpt2, 'config.json', 64, hooks), 64);
  assert.deepEqual(warnings, []);
  badInput(() => jobSeqLen(gpt2, '/m/config.json', 65, hooks), /^\/m\/config\.json: --seq-len 65 is longer than the model's context: max_position_embeddings is 64 and its learned position table has no row beyond that; use --seq-len 64 or less$/);
  assert.equal(jobSeqLen(llama, '/m/config.json', 256, hooks), 256);
  assert.equal(warnings.length, 1);
  assert.match(warnings[0], /--seq-len 256 is longer than the model's context \(max_position_embeddings 128 in \/m\/config\.json\)/);
  badInput(() => jobSeqLen(llama, 'config.json', 1, hooks), /--seq-len .* must be an integer from 2 to 1,048,576, got 1/);
  // A fresh run from a report trains at the report's length unless told otherwise.
  const report = { config: { seqLen: 96 } } as unknown as Parameters<typeof runSettings>[3];
  assert.equal(runSettings({ modelDir: 'm', data: 'd', out: 'o' }, stories, 'c', report, hooks).seqLen, 96);
  assert.equal(runSettings({ modelDir: 'm', data: 'd', out: 'o', seqLen: 128 }, stories, 'c', report, hooks).seqLen, 128);
  assert.equal(runSettings({ modelDir: 'm', data: 'd', out: 'o' }, stories, 'c', undefined, hooks).seqLen, 512);
});

test('an output is checked and its folder made before the work: files, folders and unwritable places are named', () => {
  const dir = tmpDir();
  fs.writeFileSync(path.join(dir, 'file'), 'x');
  fs.mkdirSync(path.join(dir, 'folder'));
  fs.writeFileSync(path.join(dir, 'folder/keep.txt'), 'mine');
  badInput(() => claimOutput(path.join(dir, 'folder'), 'report'), /folder: is a folder; --out names the file to write a PAGE report to$/);
  badInput(() => claimOutput(path.join(dir, 'file'), 'adapter'), /file: is a file; --out names the folder to write an adapter folder in$/);
  badInput(() => claimOutput(path.join(dir, 'file/r.json'), 'report'), /r\.json: cannot write there: .*\/file is a file, not a folder$/);
  badInput(() => claimOutput(path.join(dir, 'file/a/b/r.json'), 'report'), /cannot write there: .*\/file is a file, not a folder$/);
  if (fs.existsSync('/proc/self')) {
    // Node's recursive mkdir never returns under /proc; one mkdir at a time fails at once.
    const t0 = Date.now();
    badInput(() => claimOutput('/proc/nope/deeper/r.json', 'report'), /^\/proc\/nope\/deeper\/r\.json: cannot write there: the folder \/proc\/nope cannot be created/);
    assert.ok(Date.now() - t0 < 2000);
  }
  // Missing parents are made, and taken away again when the job fails.
  const claim = claimOutput(path.join(dir, 'new/deep/r.json'), 'report');
  assert.equal(claim.path, path.join(dir, 'new/deep/r.json'));
  assert.ok(fs.statSync(path.join(dir, 'new/deep')).isDirectory());
  claim.release();
  assert.ok(!fs.existsSync(path.join(dir, 'new')), 'the folders the claim made are gone');
  assert.deepEqual(fs.readdirSync(dir).sort(), ['file', 'folder'], 'no temporary file is left');
  // An empty folder (the extension reserves one) holds nothing to lose.
  fs.mkdirSync(path.join(dir, 'empty'));
  assert.equal(claimOutput(path.join(dir, 'empty'), 'adapter').path, path.join(dir, 'empty'));
});

test('--force replaces only what DomLoRA wrote: a report, an adapter or merged folder of its own files, an exported config', () => {
  const dir = tmpDir();
  const p = (f: string) => path.join(dir, f);
  // Without --force, any existing output is refused, ours or not.
  fs.writeFileSync(p('report.json'), JSON.stringify({ tool: { name: 'domlora', version: '0.1.0' }, dominant: { name: 'x' } }));
  badInput(() => claimOutput(p('report.json'), 'report'), /report\.json: already exists; choose another --out, or pass --force to replace it/);
  assert.equal(claimOutput(p('report.json'), 'report', { force: true }).path, p('report.json'));
  fs.writeFileSync(p('notes.json'), '{"mine": true}');
  badInput(() => claimOutput(p('notes.json'), 'report', { force: true }), /notes\.json: is not a PAGE report DomLoRA wrote .*--force replaces only a PAGE report DomLoRA wrote, so it is left as it is/);
  assert.equal(fs.readFileSync(p('notes.json'), 'utf8'), '{"mine": true}');
  // A folder of the user's, and an adapter folder the user put a file into.
  fs.mkdirSync(p('theirs'));
  fs.writeFileSync(p('theirs/important.txt'), 'mine');
  badInput(() => claimOutput(p('theirs'), 'adapter', { force: true }), /theirs: is not an adapter folder DomLoRA wrote \(adapter_model\.safetensors is missing\)/);
  fs.mkdirSync(p('ours'));
  fs.writeFileSync(p('ours/adapter_config.json'), '{}');
  fs.writeFileSync(p('ours/adapter_model.safetensors'), encodeSafetensors([], { format: 'pt', 'domlora.version': '0.1.0' }));
  fs.mkdirSync(p('ours/checkpoint'));
  assert.equal(whyNotOurs(p('ours'), 'adapter'), undefined);
  fs.writeFileSync(p('ours/important.txt'), 'mine');
  badInput(() => claimOutput(p('ours'), 'adapter', { force: true }), /ours: holds files DomLoRA did not write \(important\.txt\)/);
  fs.mkdirSync(p('peft'));
  fs.writeFileSync(p('peft/adapter_model.safetensors'), encodeSafetensors([], { format: 'pt' }));
  assert.match(whyNotOurs(p('peft'), 'adapter')!, /has no "domlora\.version" metadata/);
  fs.writeFileSync(p('cfg.yaml'), '# LoRA placement found by DomLoRA (PAGE).\nlora_r: 8\n');
  assert.equal(whyNotOurs(p('cfg.yaml'), 'config'), undefined);
  fs.writeFileSync(p('train.py'), 'import torch\n');
  badInput(() => claimOutput(p('train.py'), 'config', { force: true }), /train\.py: does not start with DomLoRA's line/);
  fs.mkdirSync(p('merged'));
  fs.writeFileSync(p('merged/model.safetensors'), encodeSafetensors([], { format: 'pt', 'domlora.merged_from': '/a' }));
  fs.writeFileSync(p('merged/config.json'), '{}');
  assert.equal(whyNotOurs(p('merged'), 'merged'), undefined);
  assert.match(whyNotOurs(p('theirs'), 'merged')!, /is not a merged model folder DomLoRA wrote/);
});
