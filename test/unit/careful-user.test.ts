// The CLI as a careless user met it on main (notes on issue #14): make-demo-model and demo replacing a user's files,
// the data never described, the lost space after a generate prompt, train's adapter written beside the model, Node's
// own wording for flag mistakes, the wrong advice for an eval split, and input checks that waited for the backend.
// On stories260K and the wasm backend.
import { before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { tempPaths } from '../helpers/reference';
import { CLI, ROOT, cli, cliBadInput, cliJson } from '../helpers/cli';

const MODEL = 'test/fixtures/models/stories260K';
const GSM8K = 'test/fixtures/data/math/gsm8k_train.jsonl';
const TARGET = 'model.layers.1.mlp.down_proj';

const temp = tempPaths('domlora-careful-user-');

function write(file: string, text: string): string {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, text);
  return file;
}

/** Every file under `dir` with its bytes, to show that a refused command changed nothing. */
function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const f of fs.readdirSync(dir, { recursive: true }) as string[]) {
    const p = path.join(dir, f);
    if (fs.statSync(p).isFile()) out[f] = fs.readFileSync(p).toString('base64');
  }
  return out;
}

/** The first n records of gsm8k in a file of their own. */
function gsm8kHead(n: number): string {
  return write(temp(`gsm8k-${n}.jsonl`), fs.readFileSync(GSM8K, 'utf8').split('\n').slice(0, n).join('\n') + '\n');
}

const noBackend = (r: { stderr: string }) => assert.doesNotMatch(r.stderr, /^backend:/m, 'refused before the backend starts');

before(() => {
  assert.ok(fs.existsSync(CLI), `${CLI} is missing: run npm run build first`);
});

test('make-demo-model refuses a folder or file of the user\'s, --force or not, and replaces only its own with --force', () => {
  const dir = temp('mdm');
  const theirs = write(path.join(dir, 'theirs', 'important.txt'), 'mine');
  write(path.join(dir, 'theirs', 'config.json'), '{"mine": true}\n');
  const theirsDir = path.dirname(theirs);
  const userData = write(path.join(dir, 'mydata.jsonl'), '{"text": "mine"}\n');
  const before = snapshot(dir);
  for (const force of [[], ['--force']]) {
    const r = cliBadInput('make-demo-model', theirsDir, ...force);
    assert.match(r.stderr, new RegExp(`${theirsDir}: (already exists|is not a demo model folder DomLoRA wrote)`));
    // --data onto a file of the user's: refused before the model is written.
    const d = cliBadInput('make-demo-model', path.join(dir, 'fresh'), '--data', userData, ...force);
    assert.match(d.stderr, new RegExp(`${userData}: (already exists|is not the demo dataset DomLoRA writes)`));
  }
  assert.deepEqual(snapshot(dir), before, 'nothing of the user\'s changed, and no model was written');
  assert.ok(!fs.existsSync(path.join(dir, 'fresh')));

  // Its own folder and dataset: refused without --force, replaced with it (the same bytes: it is deterministic).
  const m = path.join(dir, 'm'), data = path.join(dir, 'd.jsonl');
  assert.deepEqual(cliJson('make-demo-model', m, '--data', data, '--json').json, { model: m, data });
  const ours = snapshot(m);
  assert.match(cliBadInput('make-demo-model', m).stderr, /m: already exists; choose another DIR, or pass --force/);
  assert.match(cliBadInput('make-demo-model', path.join(dir, 'm2'), '--data', data).stderr, /d\.jsonl: already exists; choose another --data/);
  cliJson('make-demo-model', m, '--data', data, '--force', '--json');
  assert.deepEqual(snapshot(m), ours, 'rewriting its own folder in place gives the same bytes');
  // Once the user adds a file to it or edits the dataset, it is theirs too.
  fs.appendFileSync(data, '{"question": "mine?", "answer": "yes"}\n');
  assert.match(cliBadInput('make-demo-model', path.join(dir, 'm3'), '--data', data, '--force').stderr, /d\.jsonl: is not the demo dataset DomLoRA writes/);
  write(path.join(m, 'notes.txt'), 'mine');
  assert.match(cliBadInput('make-demo-model', m, '--force').stderr, /m: holds files DomLoRA did not write \(notes\.txt\)/);
  assert.equal(fs.readFileSync(path.join(m, 'notes.txt'), 'utf8'), 'mine');
  assert.deepEqual(fs.readdirSync(dir).sort(), ['d.jsonl', 'm', 'mydata.jsonl', 'theirs'], 'no temporary folders are left behind');
});

test('demo claims all its outputs first: a file of the user\'s stops it before anything is written; its own are reused', () => {
  const cases: [string, string, RegExp][] = [
    ['model/notes.txt', 'mine', /model: is not a demo model folder DomLoRA wrote/],
    ['arithmetic.jsonl', '{"question": "mine?", "answer": "yes"}\n', /arithmetic\.jsonl: is not the demo dataset DomLoRA writes/],
    ['page-report.json', '{"mine": true}\n', /page-report\.json: is not a PAGE report DomLoRA wrote/],
    ['lora_config.py', 'print("mine")\n', /lora_config\.py: does not start with DomLoRA's line/],
  ];
  for (const [file, text, re] of cases) {
    const dir = temp('demo-theirs');
    write(path.join(dir, file), text);
    const before = snapshot(dir);
    const r = cliBadInput('demo', '--dir', dir, '--steps', '1');
    assert.match(r.stderr, re);
    assert.match(r.stderr, /the demo reuses or replaces only what DomLoRA wrote/);
    noBackend(r);
    assert.deepEqual(snapshot(dir), before, `${file}: nothing written, nothing of the user's changed`);
  }

  // A demo folder of its own (the model and data make-demo-model writes): reused as it is, and a file of the user's
  // beside the demo's outputs is left alone.
  const dir = temp('demo-ours');
  cliJson('make-demo-model', path.join(dir, 'model'), '--data', path.join(dir, 'arithmetic.jsonl'), '--json');
  write(path.join(dir, 'important.txt'), 'mine');
  const model = fs.statSync(path.join(dir, 'model', 'model.safetensors')).mtimeMs;
  const r = cli('demo', '--dir', dir, '--steps', '1');
  assert.equal(r.status, 0, r.stderr);
  assert.equal(fs.statSync(path.join(dir, 'model', 'model.safetensors')).mtimeMs, model, 'its own model is reused, not rewritten');
  assert.deepEqual(fs.readdirSync(dir).sort(), ['adapter-domlora', 'arithmetic.jsonl', 'important.txt', 'lora_config.py', 'model', 'page-report.json']);
  assert.equal(fs.readFileSync(path.join(dir, 'important.txt'), 'utf8'), 'mine');
  const said = r.stderr.match(/^data: .*$/gm) ?? [];
  assert.ok(said.length >= 1 && new Set(said).size === said.length, `the demo says each description of its data once:\n${said.join('\n')}`);
});

test('eval, probe and train say the data: file, records, shape and supervised tokens, and warn about mixed shapes and dropped records', () => {
  const mixed = write(temp('mixed.jsonl'), [
    { instruction: 'Say hi.', output: 'Hi there.' }, { text: 'Once upon a time there was a cat.' }, { instruction: 'Add.', input: '2 and 3', output: '5' },
  ].map((x) => JSON.stringify(x)).join('\n') + '\n');
  const line = new RegExp(`^data: ${mixed} — 3 records, mixed shapes \\(2 alpaca, 1 text\\), \\d+ supervised tokens of \\d+$`, 'm');
  const ev = cli('eval', MODEL, '--data', mixed);
  assert.equal(ev.status, 0, ev.stderr);
  assert.match(ev.stderr, line);
  assert.match(ev.stderr, /^warn: data: .*mixed\.jsonl: the file mixes record shapes: 2 alpaca/m);
  assert.ok(ev.stderr.indexOf('data: ') < ev.stderr.indexOf('backend:'), 'said before the backend starts');

  const j = cliJson('eval', MODEL, '--data', mixed, '--json').json;
  assert.deepEqual(j.data.shapes.map((s: { format: string; count: number }) => [s.format, s.count]), [['alpaca', 2], ['text', 1]]);
  assert.equal(j.data.records, 3);
  assert.equal(j.data.used, 3);
  assert.equal(j.data.supervisedTokens, j.tokens, 'the supervised tokens are those the loss is over');
  assert.ok(j.data.tokens > j.data.supervisedTokens);
  assert.match(j.data.warnings[0], /mixes record shapes/);
  assert.match(j.data.line, line);

  const p = cliJson('probe', MODEL, '--data', mixed, '--samples', '3', '--json').json;
  assert.match(p.data.line, line);
  assert.match(p.data.warnings[0], /mixes record shapes/);

  // train warns about the records --seq-len drops, as probe and eval do, and says it in --json too.
  const data = gsm8kHead(12);
  const t = cli('train', MODEL, '--data', data, '--target', TARGET, '--steps', '1', '--seq-len', '110', '--eval-split', '0', '--out', temp('ad'), '--json');
  assert.equal(t.status, 0, t.stderr);
  assert.match(t.stderr, /^data: .*gsm8k-12\.jsonl — \d+ of 12 records, shape qa \{question, answer \| response\}, \d+ supervised tokens of \d+$/m);
  assert.match(t.stderr, /^warn: data: .*gsm8k-12\.jsonl: \d+ record\(s\) skipped, no supervised token within --seq-len 110/m);
  assert.ok(t.json.data.skipped > 0 && t.json.data.used + t.json.data.skipped <= 12, JSON.stringify(t.json.data));
  assert.match(t.json.data.warnings.join('\n'), /record\(s\) skipped/);
});

test('generate keeps the space between the prompt and the first new word', () => {
  const r = cli('generate', MODEL, '--prompt', 'Once upon', '--max-new-tokens', '3');
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /^Once upon a time/);
  const j = cliJson('generate', MODEL, '--prompt', 'Once upon', '--max-new-tokens', '3', '--json').json;
  assert.match(j.text, /^ a time/);
  // An empty prompt starts the story itself, with no stray space.
  assert.match(cli('generate', MODEL, '--max-new-tokens', '3').stdout, /^Once upon/);
});

test('train without --out writes the adapter to the current folder, never beside the model; --resume checks come before the backend', () => {
  const dir = temp('cwd');
  const models = path.join(dir, 'models');
  fs.cpSync(path.join(ROOT, MODEL), path.join(models, 'm'), { recursive: true });
  const work = path.join(dir, 'work');
  fs.mkdirSync(work);
  const data = gsm8kHead(30);
  const r = spawnSync(process.execPath, [CLI, 'train', path.join(models, 'm'), '--data', data, '--target', TARGET, '--steps', '1', '--seq-len', '128',
    '--eval-split', '0', '--keep-checkpoint', '--json'], { cwd: work, encoding: 'utf8', env: { ...process.env, DOMLORA_BACKEND: 'wasm', NO_COLOR: '1' } });
  assert.equal(r.status, 0, r.stderr);
  const adapter = path.join(work, 'm-domlora-adapter');
  assert.equal(JSON.parse(r.stdout.trim().split('\n').at(-1)!).adapterDir, adapter);
  assert.ok(fs.existsSync(path.join(adapter, 'adapter_model.safetensors')));
  assert.deepEqual(fs.readdirSync(models), ['m'], 'nothing written beside the model');
  // --help says where it goes.
  assert.match(cli('train', '--help').stdout, /Without --out the adapter goes to the current folder/);

  // A resumed run's conflicts are named before any backend starts.
  noBackend(cliBadInput('train', MODEL, '--resume', adapter, '--lr', '0.5'));
  const other = cliBadInput('train', path.join(models, 'm'), '--resume', adapter, '--data', gsm8kHead(20), '--steps', '3');
  assert.match(other.stderr, /--data is not the data the checkpoint was trained on/);
  noBackend(other);
});

test('flag and file mistakes are said in a user\'s terms, before any work', () => {
  const folder = temp('a-folder');
  fs.mkdirSync(folder);
  const notAdapter = temp('not-adapter');
  fs.mkdirSync(notAdapter);
  const missing = temp('missing.jsonl');
  const cases: [string[], RegExp][] = [
    [['eval', MODEL, '--data', '--max-samples', '2'], /^domlora: --data needs a value, but --max-samples follows it/],
    [['probe', MODEL, '--data', GSM8K, '--out'], /^domlora: --out needs a value$/],
    [['train', MODEL, '--data', GSM8K, '--step', '2'], /^domlora: unknown flag --step; did you mean --steps/],
    [['train', MODEL, '--data', GSM8K, '--learning-rate', '1e-3'], /^domlora: unknown flag --learning-rate; did you mean --lr\?/],
    [['eval', MODEL, '--data', GSM8K, '--bogus'], /^domlora: unknown flag --bogus \(domlora --help lists every command's flags\)$/],
    [['eval', MODEL, '--data', folder], /a-folder: is a folder, expected a JSON or JSON Lines file \(--data\)$/],
    [['eval', MODEL, '--data', missing], /missing\.jsonl: no such file \(--data\)$/],
    [['train', MODEL, '--data', GSM8K, '--from-report', folder, '--out', temp('x')], /a-folder: is a folder, expected a PAGE report \(\.json\) \(--from-report\)$/],
    [['train', MODEL, '--data', GSM8K, '--target', 'model.layers.1.mlp.down_prj', '--out', temp('x')],
      /--target "model\.layers\.1\.mlp\.down_prj" is not a linear module of this model; did you mean model\.layers\.1\.mlp\.down_proj/],
    [['eval', '--data', GSM8K], /^domlora: MODEL_DIR is missing \(domlora --help shows each command's usage\)$/],
    [['tran', MODEL], /^domlora: unknown command "tran"; did you mean train\?/],
    [['eval', MODEL, '--data', GSM8K, '--adapter', notAdapter], /not-adapter: not a PEFT adapter folder/],
  ];
  for (const [args, re] of cases) {
    const r = cliBadInput(...args);
    assert.match(r.stderr.trim(), re, `domlora ${args.join(' ')}`);
    assert.doesNotMatch(r.stderr, /Usage:|ambiguous|Unknown option|EISDIR|ENOENT/, `domlora ${args.join(' ')}: in our words, on one line`);
    noBackend(r);
  }
});

test('an eval split that cannot work gets the advice that fits the data', () => {
  const one = gsm8kHead(1);
  const ten = gsm8kHead(10);
  const train = (data: string, split: string) => ['train', MODEL, '--data', data, '--target', TARGET, '--steps', '1', '--eval-split', split, '--out', temp('x')];
  const r1 = cliBadInput(...train(one, '0.5'));
  assert.match(r1.stderr, /leaving none to train on: 1 record\(s\) are too few to hold any out/);
  assert.doesNotMatch(r1.stderr, /larger split/);
  // Too few held out: the smallest split that holds out enough.
  assert.match(cliBadInput(...train(ten, '0.1')).stderr, /holds out 1, fewer than the 4 .*: use --eval-split 0\.4 or more/);
  // Nothing left: the largest split that leaves a record to train on.
  assert.match(cliBadInput(...train(ten, '0.97')).stderr, /holds out 10, leaving none to train on: use --eval-split 0\.9 or less/);
});
