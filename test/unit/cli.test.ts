// The `domlora` CLI as a user runs it: `node dist/cli.js ...` (built by `npm run build`), on the wasm backend.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { CLI, ROOT, cli, cliBadInput, cliJson } from '../helpers/cli';

const MODEL = path.resolve(ROOT, 'test/fixtures/models/stories260K');
const MODEL_ARG = 'test/fixtures/models/stories260K';
const GSM8K = 'test/fixtures/data/math/gsm8k_train.jsonl';
const GOLDEN = JSON.parse(fs.readFileSync(path.join(MODEL, 'golden_reference.json'), 'utf8'));

const tempRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'domlora-cli-'));
after(() => fs.rmSync(tempRoot, { recursive: true, force: true }));
let tempCount = 0;

function tempPath(name: string): string {
  return path.join(tempRoot, `${tempCount++}-${name}`);
}

function writeTemp(name: string, text: string): string {
  const file = tempPath(name);
  fs.writeFileSync(file, text);
  return file;
}

before(() => {
  assert.ok(fs.existsSync(CLI), `${CLI} is missing: run npm run build first`);
});

test('eval reproduces the golden per-record losses of stories260K', () => {
  const keys = ['tinystories_greedy_text', 'gsm8k_train_0_question'];
  const data = writeTemp('golden.jsonl', keys.map((k) => JSON.stringify({ text: GOLDEN[k].text })).join('\n') + '\n');
  const r = cliJson('eval', MODEL_ARG, '--data', data, '--per-record', '--json');
  const out = r.json;
  assert.equal(out.backend, 'wasm');
  assert.equal(out.samples, 2);
  assert.equal(out.skipped, 0);
  // Every token after BOS is supervised for plain text.
  assert.equal(out.tokens, keys.reduce((s, k) => s + GOLDEN[k].ids_with_bos.length - 1, 0));
  assert.equal(out.losses.length, 2);
  keys.forEach((k, i) => {
    const golden = GOLDEN[k].mean_next_token_ce_nats;
    assert.ok(Math.abs(out.losses[i] - golden) < 1e-4, `${k}: loss ${out.losses[i]} vs golden ${golden}`);
  });
  assert.ok(Math.abs(out.meanLoss - (out.losses[0] + out.losses[1]) / 2) < 1e-12);
  // Progress went to stderr.
  assert.match(r.stderr, /eval 2\/2/);
  assert.doesNotMatch(r.stdout, /eval \d+\/\d+/);
});

test('eval without --per-record leaves out the losses; without --json prints a summary line', () => {
  const data = writeTemp('one.jsonl', JSON.stringify({ text: GOLDEN.tinystories_greedy_text.text }) + '\n');
  const r = cliJson('eval', MODEL_ARG, '--data', data, '--json', '--quiet');
  assert.equal(r.json.losses, undefined);
  assert.ok(Math.abs(r.json.meanLoss - GOLDEN.tinystories_greedy_text.mean_next_token_ce_nats) < 1e-4);
  assert.doesNotMatch(r.stderr, /eval 1\/1/, '--quiet silences progress');
  const text = cli('eval', MODEL_ARG, '--data', data);
  assert.equal(text.status, 0, text.stderr);
  assert.equal(text.lines.length, 1, text.stdout);
  assert.match(text.lines[0], /^mean loss 0\.3857\d+ over 1 records \(\d+ supervised tokens\) on wasm$/);
});

test('generate reproduces the golden prompt ids, greedy continuation and top-5 logits', () => {
  const r = cliJson('generate', MODEL_ARG, '--prompt', 'Once upon a time', '--max-new-tokens', '15', '--json');
  const g = GOLDEN.prompt_once_upon_a_time;
  assert.deepEqual(r.json.promptIds, g.ids_with_bos);
  const first20: number[] = GOLDEN.greedy_from_bos_first20;
  assert.equal(r.json.ids.length, g.ids_with_bos.length + 15);
  assert.deepEqual(r.json.ids.slice(0, 20), first20);
  assert.equal(r.json.lastTop.length, 5);
  assert.deepEqual(r.json.lastTop.map((x: [number, number]) => x[0]), g.last_logits_top5.map((x: [number, number]) => x[0]));
  r.json.lastTop.forEach(([id, v]: [number, number], i: number) => {
    const golden = g.last_logits_top5[i][1];
    assert.ok(Math.abs(v - golden) < 1e-3, `logit of ${id}: ${v} vs golden ${golden}`);
  });
  assert.equal(typeof r.json.text, 'string');
  assert.ok(r.json.text.startsWith(', there was a little girl'), r.json.text);
});

test('info --json describes stories260K', () => {
  const r = cliJson('info', MODEL_ARG, '--json');
  const info = r.json;
  assert.deepEqual(info.model, {
    path: MODEL, modelType: 'llama', layers: 5, hiddenSize: 64, intermediateSize: 172, heads: 8, kvHeads: 4, headDim: 8,
    vocabSize: 512, parameters: 260032, tiedEmbeddings: true,
  });
  assert.deepEqual(info.kinds, ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj']);
  assert.equal(info.rank, 8);
  assert.equal(info.dtype, 'F32');
  assert.equal(info.modules.length, 35);
  assert.deepEqual(info.modules[13], { name: 'model.layers.1.mlp.down_proj', layer: 1, kind: 'down_proj', dIn: 172, dOut: 64, adapterParams: 8 * (172 + 64) });
  for (const m of info.modules) assert.equal(m.adapterParams, 8 * (m.dIn + m.dOut), m.name);
  const r4 = cliJson('info', MODEL_ARG, '--rank', '4', '--json');
  assert.equal(r4.json.rank, 4);
  assert.equal(r4.json.modules[0].adapterParams, 4 * (64 + 64));
  // The human-readable form.
  const text = cli('info', MODEL_ARG);
  assert.equal(text.status, 0, text.stderr);
  assert.match(text.stdout, /llama: 5 layers, hidden 64, intermediate 172, 8 heads \/ 4 kv heads \(head dim 8\), vocab 512, 260,032 parameters, F32, tied embeddings/);
  assert.match(text.stdout, /candidate modules: 35/);
});

test('info on a folder without config.json exits 2 naming the folder and config.json', () => {
  const dir = tempPath('not-a-model');
  fs.mkdirSync(dir);
  fs.writeFileSync(path.join(dir, 'model.safetensors'), '');
  const r = cliBadInput('info', dir, '--json');
  assert.ok(r.stderr.includes(dir), r.stderr);
  assert.match(r.stderr, /config\.json/);
  const missing = path.join(tempRoot, 'nowhere');
  const r2 = cliBadInput('info', missing);
  assert.ok(r2.stderr.includes(missing), r2.stderr);
  assert.match(r2.stderr, /does not exist/);
});

test('usage errors exit 2: unknown command, unknown flag, bad backend, bad number, missing model', () => {
  const unknown = cliBadInput('frobnicate', MODEL_ARG);
  assert.match(unknown.stderr, /unknown command "frobnicate"/);
  // One line that points to --help, not the whole usage after it.
  assert.match(unknown.stderr, /--help lists the commands/);
  assert.doesNotMatch(unknown.stderr, /Usage:/);
  assert.match(cliBadInput('info', MODEL_ARG, '--no-such-flag').stderr, /no-such-flag/);
  assert.match(cliBadInput('eval', MODEL_ARG, '--data', GSM8K, '--backend', 'tpu').stderr, /--backend must be one of auto, tensorflow, webgpu, wasm, cpu, got "tpu"/);
  assert.match(cliBadInput('info', MODEL_ARG, '--rank', 'eight').stderr, /--rank must be an integer from 1 to 1024, got "eight"/);
  assert.match(cliBadInput('info').stderr, /^domlora: MODEL_DIR is missing \(domlora --help shows each command's usage\)\n$/);
  const none = cli();
  assert.equal(none.status, 2);
  assert.match(none.stdout, /Usage:/);
  const help = cli('--help');
  assert.equal(help.status, 0);
  assert.match(help.stdout, /^domlora \S+: /);
});

test('eval without --data, or with a --data file that does not exist, exits 2', () => {
  assert.match(cliBadInput('eval', MODEL_ARG, '--json').stderr, /--data is required/);
  const missing = path.join(tempRoot, 'no-such-data.jsonl');
  const r = cliBadInput('eval', MODEL_ARG, '--data', missing, '--json');
  assert.ok(r.stderr.includes(missing), r.stderr);
  assert.match(r.stderr, /no-such-data\.jsonl: no such file \(--data\)$/m);
});

test('a malformed dataset line exits 2 naming the file and the line', () => {
  const bad = writeTemp('bad.jsonl', '{"text": "Once upon a time"}\n{"text": "there was"\n{"text": "a cat"}\n');
  const r = cliBadInput('eval', MODEL_ARG, '--data', bad, '--json');
  assert.ok(r.stderr.includes(bad), r.stderr);
  assert.match(r.stderr, /line 2: invalid JSON/);
  const shape = writeTemp('shape.jsonl', '{"text": "a"}\n{"text": "b"}\n{"title": "c"}\n');
  const r2 = cliBadInput('eval', MODEL_ARG, '--data', shape, '--json');
  assert.ok(r2.stderr.includes(shape), r2.stderr);
  assert.match(r2.stderr, /line 3\b/);
  assert.match(r2.stderr, /none of the known shapes/);
});

test('make-demo-model writes a usable model deterministically', () => {
  const dir = tempPath('demo');
  fs.mkdirSync(dir);
  const m1 = path.join(dir, 'm'), m2 = path.join(dir, 'm2'), d1 = path.join(dir, 'd.jsonl'), d2 = path.join(dir, 'd2.jsonl');
  const made = cliJson('make-demo-model', m1, '--data', d1, '--json');
  assert.deepEqual(made.json, { model: m1, data: d1 });
  for (const f of ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json']) {
    assert.ok(fs.existsSync(path.join(m1, f)), `${f} written`);
  }
  assert.ok(fs.statSync(d1).size > 0);

  const info = cliJson('info', m1, '--json');
  assert.equal(info.json.model.modelType, 'llama');
  assert.equal(info.json.model.layers, 6);
  assert.equal(info.json.modules.length, 6 * 7);
  const ev = cliJson('eval', m1, '--data', d1, '--max-samples', '4', '--json');
  assert.equal(ev.json.samples, 4);
  assert.equal(ev.json.backend, 'wasm');
  assert.ok(Number.isFinite(ev.json.meanLoss) && ev.json.meanLoss > 0, `mean loss ${ev.json.meanLoss}`);

  // A second run, elsewhere and over the first, gives the same bytes.
  cliJson('make-demo-model', m2, '--data', d2, '--json');
  const bytes = (f: string) => fs.readFileSync(f);
  assert.ok(bytes(path.join(m1, 'model.safetensors')).equals(bytes(path.join(m2, 'model.safetensors'))), 'model.safetensors is deterministic');
  assert.ok(bytes(d1).equals(bytes(d2)), 'the dataset is deterministic');
  const before = bytes(path.join(m1, 'model.safetensors'));
  // Its own folder is replaced only when asked (careful-user.test.ts: a folder of the user's never is).
  assert.equal(cli('make-demo-model', m1).status, 2);
  const again = cli('make-demo-model', m1, '--force');
  assert.equal(again.status, 0, again.stderr);
  assert.ok(bytes(path.join(m1, 'model.safetensors')).equals(before), 'rewriting in place gives the same bytes');
  assert.deepEqual(fs.readdirSync(dir).sort(), ['d.jsonl', 'd2.jsonl', 'm', 'm2'], 'no temporary folders are left behind');
});

test('probe writes a consistent report to --out and stdout', () => {
  const out = tempPath('r.json');
  const r = cliJson('probe', MODEL_ARG, '--data', GSM8K, '--samples', '4', '--seq-len', '128', '--out', out, '--json');
  assert.ok(fs.existsSync(out), 'the report file exists');
  const file = JSON.parse(fs.readFileSync(out, 'utf8'));
  const stdout = r.json;
  for (const k of Object.keys(file)) assert.deepEqual(stdout[k], file[k], `key ${k}`);
  assert.ok(Object.keys(file).length >= 10);

  assert.equal(file.tool.name, 'domlora');
  assert.equal(file.config.samples, 4);
  assert.equal(file.config.seqLen, 128);
  assert.equal(file.config.backend, 'wasm');
  assert.equal(file.config.dataset, path.resolve(ROOT, GSM8K));
  assert.equal(file.model.parameters, 260032);
  const mods: { name: string; share: number; rank: number; pageExpected: number }[] = file.modules;
  assert.equal(mods.length, 35);
  assert.equal(new Set(mods.map((m) => m.name)).size, 35);
  const shareSum = mods.reduce((s, m) => s + m.share, 0);
  assert.ok(Math.abs(shareSum - 1) < 1e-6, `shares sum to ${shareSum}`);
  for (const m of mods) assert.ok(m.share >= 0 && m.share <= 1, `${m.name} share ${m.share}`);
  assert.deepEqual(mods.map((m) => m.rank).sort((a, b) => a - b), Array.from({ length: 35 }, (_, i) => i + 1));
  // Ranks follow the shares: a better rank never has a smaller share.
  const byRank = [...mods].sort((a, b) => a.rank - b.rank);
  for (let i = 1; i < byRank.length; i++) assert.ok(byRank[i - 1].share >= byRank[i].share, `rank ${i} vs ${i + 1}`);
  const top = mods.find((m) => m.rank === 1)!;
  assert.equal(file.dominant.name, top.name);
  assert.equal(file.dominant.share, top.share);
  assert.ok(file.dominant.stability >= 0 && file.dominant.stability <= 1, `stability ${file.dominant.stability}`);
  assert.equal(file.dominant.runnerUp.name, mods.find((m) => m.rank === 2)!.name);
  assert.equal(file.records.length, 4);
  assert.ok(Number.isFinite(file.meanLoss) && file.meanLoss > 0);
  assert.match(r.stderr, /probe 4\/4/);
});

test('probe --samples 0 exits 2 and writes nothing', () => {
  const out = tempPath('r0.json');
  const r = cliBadInput('probe', MODEL_ARG, '--data', GSM8K, '--samples', '0', '--out', out, '--json');
  assert.match(r.stderr, /--samples must be an integer from 1 to 65,536, got 0/);
  assert.ok(!fs.existsSync(out));
});

test('probe on an empty dataset exits 2 naming the file and writes no report', () => {
  const empty = writeTemp('empty.jsonl', '');
  const blank = writeTemp('blank.jsonl', '\n  \n');
  for (const data of [empty, blank]) {
    const out = tempPath('r-empty.json');
    const r = cliBadInput('probe', MODEL_ARG, '--data', data, '--samples', '4', '--out', out, '--json');
    assert.ok(r.stderr.includes(data), r.stderr);
    assert.match(r.stderr, /the dataset is empty/);
    assert.ok(!fs.existsSync(out), 'no report written');
    assert.deepEqual(fs.readdirSync(path.dirname(out)).filter((f) => f.includes('r-empty')), [], 'no temporary report left');
  }
});
