// The CLI as a careless user drives it (issue #14): every flag checked before any work, outputs checked before the
// model loads and nothing of the user's replaced, a run of any length that changes the adapter, --resume that refuses
// what it would ignore, the model's context respected, skipped records said, a probe report's settings carried to
// the run it places, and errors as JSON under --json. On stories260K and the wasm backend.
import { before, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { tempPaths } from '../helpers/reference';
import { CLI, cli, cliBadInput, cliJson } from '../helpers/cli';
import { readHeader, readTensorF32 } from '../../src/engine/hf/safetensors';

const MODEL = 'test/fixtures/models/stories260K';
const GSM8K = 'test/fixtures/data/math/gsm8k_train.jsonl';
const TARGET = 'model.layers.1.mlp.down_proj';

const temp = tempPaths('domlora-careful-');

/** The first n records of gsm8k in a file of their own: quick to tokenize, and data with another sha256. */
function gsm8kHead(n: number): string {
  const file = temp(`gsm8k-${n}.jsonl`);
  fs.writeFileSync(file, fs.readFileSync(GSM8K, 'utf8').split('\n').slice(0, n).join('\n') + '\n');
  return file;
}

/** max |x| of the adapter's tensors whose name ends with `suffix`. */
function maxAbs(adapterDir: string, suffix: string): number {
  const h = readHeader(path.join(adapterDir, 'adapter_model.safetensors'));
  let m = 0;
  for (const k of h.tensors.keys()) if (k.endsWith(suffix)) for (const v of readTensorF32(h, k)) m = Math.max(m, Math.abs(v));
  return m;
}

before(() => {
  assert.ok(fs.existsSync(CLI), `${CLI} is missing: run npm run build first`);
});

test('every numeric flag of every command is checked before any work: exit 2, one line naming the flag and its range', () => {
  const adapter = temp('no-adapter');
  const demoDir = temp('demo');
  const cases: [string[], RegExp][] = [
    [['train', MODEL, '--data', GSM8K, '--batch-size', '0'], /^domlora: --batch-size must be an integer from 1 to 1024, got 0$/],
    [['train', MODEL, '--data', GSM8K, '--batch-size=-3'], /^domlora: --batch-size must be an integer from 1 to 1024, got -3$/],
    [['train', MODEL, '--data', GSM8K, '--grad-accum', '0'], /^domlora: --grad-accum must be an integer from 1 to 1024, got 0$/],
    [['train', MODEL, '--data', GSM8K, '--lr', '0'], /^domlora: --lr must be a number above 0 and at most 1, got 0$/],
    [['train', MODEL, '--data', GSM8K, '--lr=-1'], /^domlora: --lr must be a number above 0 and at most 1, got -1$/],
    [['train', MODEL, '--data', GSM8K, '--lr', '1e9'], /^domlora: --lr must be a number above 0 and at most 1, got 1000000000$/],
    [['train', MODEL, '--data', GSM8K, '--steps', '1.5'], /^domlora: --steps must be an integer from 1 to 10,000,000, got 1\.5$/],
    [['train', MODEL, '--data', GSM8K, '--eval-split', '1'], /^domlora: --eval-split must be a number at least 0 and below 1, got 1$/],
    [['train', MODEL, '--data', GSM8K, '--warmup-steps', '-1'], /^domlora: --warmup-steps must be an integer from 0 to 10,000,000, got -1$/],
    [['info', MODEL, '--rank', '-1'], /^domlora: --rank must be an integer from 1 to 1024, got -1$/],
    [['info', MODEL, '--threads', '0'], /^domlora: --threads must be an integer from 1 to 256, got 0$/],
    [['eval', MODEL, '--data', GSM8K, '--seq-len', '1'], /^domlora: --seq-len must be an integer from 2 to 1,048,576, got 1$/],
    [['eval', MODEL, '--data', GSM8K, '--max-samples', '0x10'], /^domlora: --max-samples must be an integer from 1 to 100,000,000, got "0x10"$/],
    [['generate', MODEL, '--prompt', 'Once', '--max-new-tokens', '0'], /^domlora: --max-new-tokens must be an integer from 1 to 1,048,576, got 0$/],
    [['probe', MODEL, '--data', GSM8K, '--samples', '-2'], /^domlora: --samples must be an integer from 1 to 65,536, got -2$/],
    [['probe', MODEL, '--data', GSM8K, '--alpha', '0'], /^domlora: --alpha must be a number above 0 and at most 65,536, got 0$/],
    [['probe', MODEL, '--data', GSM8K, '--bootstrap', '0'], /^domlora: --bootstrap must be an integer from 1 to 100,000, got 0$/],
    [['export', adapter, '--format', 'peft-config', '--out', temp('x.py'), '--gpus', '0'], /^domlora: --gpus must be an integer from 1 to 4096, got 0$/],
    [['demo', '--dir', demoDir, '--steps', '0'], /^domlora: --steps must be an integer from 1 to 10,000,000, got 0$/],
  ];
  for (const [args, re] of cases) {
    const r = cliBadInput(...args);
    assert.match(r.stderr.trim(), re, `domlora ${args.join(' ')}`);
    assert.doesNotMatch(r.stderr, /Usage:|ambiguous|backend:/, 'one line, before any backend starts');
  }
  assert.ok(!fs.existsSync(demoDir), 'the demo wrote nothing');
  // With --json, the same error as one JSON object on stdout.
  const j = cliBadInput('train', MODEL, '--data', GSM8K, '--batch-size', '0', '--json');
  assert.deepEqual(j.json, { error: { code: 'bad-input', message: '--batch-size must be an integer from 1 to 1024, got 0' }, exitCode: 2 });
  // A command's --help is the usage, not an error.
  const help = cli('train', '--help');
  assert.equal(help.status, 0);
  assert.match(help.stdout, /--keep-checkpoint/);
});

test('errors print one JSON object with --json: a missing file names it, and the exit code matches', () => {
  const missing = temp('missing.jsonl');
  const r = cliBadInput('eval', MODEL, '--data', missing, '--json');
  assert.ok(r.json.error.message.includes(missing), r.stdout);
  assert.equal(r.json.error.file, missing);
  assert.match(cliBadInput('frobnicate', '--json').json.error.message, /unknown command "frobnicate"/);
});

test('outputs are checked before the model loads, and --force replaces only what DomLoRA wrote', () => {
  const data = gsm8kHead(30);
  const dir = temp('outputs');
  fs.mkdirSync(dir);
  fs.writeFileSync(path.join(dir, 'file'), 'mine');
  const probe = (...extra: string[]) => ['probe', MODEL, '--data', data, '--samples', '2', '--seq-len', '128', ...extra];
  const train = (...extra: string[]) => ['train', MODEL, '--data', data, '--target', TARGET, '--steps', '1', '--seq-len', '128', '--eval-split', '0', ...extra];
  const before = (r: { stderr: string }) => assert.doesNotMatch(r.stderr, /estimate on|loading model|probe 1\/|train 1\//, 'refused before the model loads');
  for (const [args, re] of [
    [probe('--out', dir), /outputs: is a folder; --out names the file to write a PAGE report to/],
    [probe('--out', path.join(dir, 'file/r.json')), /file\/r\.json: cannot write there: .*outputs\/file is a file, not a folder/],
    [probe('--out', '/proc/nope/r.json'), /\/proc\/nope\/r\.json: cannot write there: the folder \/proc\/nope cannot be created/],
    [train('--out', '/proc/nope/adapter'), /\/proc\/nope\/adapter: cannot write there/],
    [train('--out', path.join(dir, 'file')), /file: is a file; --out names the folder to write an adapter folder in/],
  ] as const) {
    const r = cliBadInput(...args);
    assert.match(r.stderr, re);
    before(r);
    assert.ok(r.ms < 30_000, `refused at once (${r.ms} ms)`);
  }
  // A folder of the user's survives --force, whatever it holds.
  const theirs = path.join(dir, 'theirs');
  fs.mkdirSync(theirs);
  fs.writeFileSync(path.join(theirs, 'important.txt'), 'mine');
  const refused = cliBadInput(...train('--out', theirs, '--force'));
  assert.match(refused.stderr, /theirs: is not an adapter folder DomLoRA wrote .*--force replaces only an adapter folder DomLoRA wrote, so it is left as it is/);
  before(refused);
  assert.deepEqual(fs.readdirSync(theirs), ['important.txt']);
  assert.equal(fs.readFileSync(path.join(theirs, 'important.txt'), 'utf8'), 'mine');
  // One rule for every output: probe refuses an existing report too, and --force replaces its own.
  const report = path.join(dir, 'r.json');
  cliJson(...probe('--out', report, '--json'));
  const first = JSON.parse(fs.readFileSync(report, 'utf8')).createdAt;
  assert.match(cliBadInput(...probe('--out', report)).stderr, /r\.json: already exists; choose another --out, or pass --force to replace it/);
  cliJson(...probe('--out', report, '--force', '--json'));
  assert.notEqual(JSON.parse(fs.readFileSync(report, 'utf8')).createdAt, first, 'replaced');
  // A trained adapter is DomLoRA's: --force may replace it, and an export of it too; a file of the user's may not be.
  const adapter = path.join(dir, 'adapter');
  cliJson(...train('--out', adapter, '--json'));
  cliJson(...train('--out', adapter, '--force', '--json'));
  const py = path.join(dir, 'lora_config.py');
  cliJson('export', adapter, '--format', 'peft-config', '--out', py, '--json');
  assert.match(cliBadInput('export', adapter, '--format', 'peft-config', '--out', py).stderr, /lora_config\.py: already exists/);
  cliJson('export', adapter, '--format', 'peft-config', '--out', py, '--force', '--json');
  const mine = path.join(dir, 'train.py');
  fs.writeFileSync(mine, 'import torch\n');
  assert.match(cliBadInput('export', adapter, '--format', 'peft-config', '--out', mine, '--force').stderr, /train\.py: does not start with DomLoRA's line/);
  assert.equal(fs.readFileSync(mine, 'utf8'), 'import torch\n');
  assert.deepEqual(fs.readdirSync(dir).sort(), ['adapter', 'file', 'lora_config.py', 'r.json', 'theirs', 'train.py'], 'nothing else written or left');
});

test('--steps 1 changes the adapter; the finished folder holds PEFT files only unless --keep-checkpoint; --resume refuses what it would ignore and extends', () => {
  const data = gsm8kHead(30);
  const one = temp('one');
  const r = cliJson('train', MODEL, '--data', data, '--target', TARGET, '--steps', '1', '--seq-len', '128', '--eval-split', '0', '--out', one, '--json');
  assert.equal(r.json.steps, 1);
  assert.ok(maxAbs(one, 'lora_B.weight') > 0, 'one step moved lora_B off zero');
  assert.deepEqual(fs.readdirSync(one).sort(), ['adapter_config.json', 'adapter_model.safetensors'], 'no checkpoint/ to publish by mistake');
  assert.match(cliBadInput('train', MODEL, '--resume', one, '--steps', '2').stderr, /one: has no checkpoint\/: a finished run keeps its checkpoint only when trained with --keep-checkpoint/);

  const kept = temp('kept');
  cliJson('train', MODEL, '--data', data, '--target', TARGET, '--steps', '2', '--seq-len', '128', '--eval-split', '0', '--out', kept, '--keep-checkpoint', '--json');
  assert.ok(fs.existsSync(path.join(kept, 'checkpoint/optimizer.safetensors')));
  const state = path.join(kept, 'checkpoint/trainer_state.json');
  const other = gsm8kHead(31);
  for (const [args, re] of [
    [['--lr', '0.01'], /trainer_state\.json: --lr 0\.01 conflicts with the checkpoint's 0\.002: --resume continues the same run; leave --lr out/],
    [['--rank', '4'], /--rank 4 conflicts with the checkpoint's 8/],
    [['--seq-len', '96'], /--seq-len 96 conflicts with the checkpoint's 128/],
    [['--data', other], /--data is not the data the checkpoint was trained on/],
    [['--steps', '1'], /--steps 1 is fewer than the checkpoint's 2: a resumed run can be extended, not shortened/],
    [[], /the run is finished \(2 of 2 steps\); pass --steps N \(more than 2\) to extend it/],
  ] as const) {
    const bad = cliBadInput('train', MODEL, '--resume', kept, ...args);
    assert.match(bad.stderr, re);
    if (!args.length || args[0] !== '--data') assert.ok(bad.stderr.includes(state), `names the checkpoint: ${bad.stderr}`);
  }
  const before = fs.readFileSync(path.join(kept, 'adapter_model.safetensors'));
  const ext = cliJson('train', MODEL, '--resume', kept, '--steps', '3', '--json');
  assert.equal(ext.json.steps, 3);
  assert.equal(ext.json.curve.filter((c: { loss?: number }) => c.loss !== undefined).length, 3, 'the curve goes on from the checkpoint');
  assert.match(ext.stderr, /extending the run from 2 to 3 steps/);
  assert.ok(!fs.readFileSync(path.join(kept, 'adapter_model.safetensors')).equals(before), 'the third step changed the adapter');
});

test('the model\'s context bounds generation; dropped records are said; a tiny eval split is refused', () => {
  const gen = cliBadInput('generate', MODEL, '--prompt', 'Once upon a time', '--max-new-tokens', '100000');
  assert.match(gen.stderr, /--max-new-tokens 100000: the prompt's 5 tokens and 100000 new ones exceed the model's context of 512 tokens \(max_position_embeddings in .*config\.json\); use --max-new-tokens 507 or less/);
  assert.doesNotMatch(gen.stderr, /--seq-len/, 'generate has no --seq-len to suggest');
  const data = gsm8kHead(30);
  // Past the context of a RoPE model: a warning, and the job runs.
  const ev = cliJson('eval', MODEL, '--data', data, '--seq-len', '600', '--max-samples', '1', '--json');
  assert.match(ev.stderr, /warn: --seq-len 600 is longer than the model's context \(max_position_embeddings 512/);
  // Records that do not fit are counted and said, by eval, probe and train alike.
  const skipped = /warn: .*gsm8k-30\.jsonl: \d+ record\(s\) skipped, no supervised token within --seq-len 128 \(first: line \d+/;
  assert.match(cliJson('eval', MODEL, '--data', data, '--seq-len', '128', '--json').stderr, skipped);
  assert.match(cliJson('probe', MODEL, '--data', data, '--seq-len', '128', '--samples', '30', '--json').stderr, skipped);
  const split = cliBadInput('train', MODEL, '--data', data, '--target', TARGET, '--seq-len', '128', '--eval-split', '0.2', '--steps', '1');
  assert.match(split.stderr, skipped);
  assert.match(split.stderr, /--eval-split 0\.2 of \d+ usable record\(s\) holds out \d, fewer than the 4 an eval loss needs/);
  // The default split steps aside on small data, saying so.
  const small = cliJson('train', MODEL, '--data', data, '--target', TARGET, '--seq-len', '128', '--steps', '1', '--out', temp('a'), '--json');
  assert.match(small.stderr, /no held-out evaluation: the default --eval-split 0\.05 of \d+ usable record\(s\) holds out \d/);
  assert.equal(small.json.evalLossBefore, undefined);
});

test('--from-report carries the probe\'s sequence length and warns about other data and an unsettled winner; --compare goes into the report', () => {
  const data = gsm8kHead(30);
  const a = temp('a.json'), b = temp('b.json');
  cliJson('probe', MODEL, '--data', data, '--samples', '3', '--seq-len', '160', '--out', a, '--json');
  const pb = cliJson('probe', MODEL, '--data', data, '--samples', '3', '--seq-len', '160', '--seed', '1', '--out', b, '--compare', a, '--json');
  const saved = JSON.parse(fs.readFileSync(b, 'utf8'));
  assert.deepEqual(saved.comparison, pb.json.comparison, 'the comparison is in the report file');
  assert.equal(saved.comparison.other, a);
  assert.equal(typeof saved.comparison.sameDominant, 'boolean');
  assert.equal(saved.comparison.modules, 35);
  // The same report, as if its bootstrap had not settled.
  const shaky = JSON.parse(fs.readFileSync(a, 'utf8'));
  shaky.dominant.stability = 0.48;
  shaky.dominant.runnerUp.wins = 0.375;
  const shakyFile = temp('shaky.json');
  fs.writeFileSync(shakyFile, JSON.stringify(shaky));
  const out = temp('from-report');
  const r = cliJson('train', MODEL, '--data', gsm8kHead(29), '--from-report', shakyFile, '--steps', '1', '--eval-split', '0', '--out', out, '--keep-checkpoint', '--json');
  assert.deepEqual(r.json.targets, [shaky.dominant.name]);
  assert.match(r.stderr, /warn: .*shaky\.json: the probe measured .*gsm8k-\d+\.jsonl, and this run trains on .*gsm8k-29\.jsonl \(another sha256\)/);
  assert.match(r.stderr, /warn: .*shaky\.json: the dominant module \S+ won only 48\.0% of the probe's bootstrap resamples \(runner-up \S+ won 37\.5%\)/);
  assert.doesNotMatch(r.stderr, /records cut to/, 'the probe\'s --seq-len is carried, so no warning about it');
  assert.equal(JSON.parse(fs.readFileSync(path.join(out, 'checkpoint/trainer_state.json'), 'utf8')).plan.seqLen, 160, 'trained at the probe\'s length');
  const r2 = cliJson('train', MODEL, '--data', data, '--from-report', a, '--seq-len', '128', '--steps', '1', '--eval-split', '0', '--out', temp('b'), '--json');
  assert.match(r2.stderr, /a\.json: the probe measured records cut to 160 tokens, and this run trains on 128/);
  assert.doesNotMatch(r2.stderr, /another sha256/);
});
