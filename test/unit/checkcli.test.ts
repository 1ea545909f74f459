// `domlora check` and `domlora compare` as a user runs them: a check killed (SIGKILL, the whole process group) in the
// middle of a placement resumes with --resume without redoing the placement it had finished, and ends with the
// numbers of a check that was never interrupted; compare's table and JSON; refusals with exit code 2.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CLI, ROOT, cli, cliBadInput, cliJson } from '../helpers/cli';
import { FIXTURES, STORIES, tmpDir } from '../helpers/reference';
import { readHeader, readTensorF32 } from '../../src/engine/hf/safetensors';

const MATH = path.join(FIXTURES, 'data/math/gsm8k_train.jsonl');
const CODE = path.join(FIXTURES, 'data/code/code_alpaca_2k.json');
const FLAGS = ['--data', MATH, '--placements', 'dominant,lowest,random:1', '--steps', '12', '--batch-size', '2', '--seq-len', '128',
  '--max-samples', '24', '--samples', '4', '--eval-split', '0.25', '--lr', '5e-3'];

function tensors(dir: string): Map<string, Float32Array> {
  const h = readHeader(path.join(dir, 'adapter_model.safetensors'));
  return new Map([...h.tensors.keys()].map((k) => [k, readTensorF32(h, k)]));
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test('a check killed in the middle of a placement resumes without redoing the finished one, to the uninterrupted numbers', async () => {
  const root = tmpDir();
  const dir = path.join(root, 'killed');
  // Its own process group, so that the kill takes the CLI and the child it runs the job in, as a closed terminal would.
  const child = spawn(process.execPath, [CLI, 'check', STORIES, ...FLAGS, '--out', dir], {
    cwd: ROOT, detached: true, stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, DOMLORA_BACKEND: 'wasm', DOMLORA_DEBUG: '', NO_COLOR: '1' },
  });
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
  const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
  const checkpoint = path.join(dir, 'adapters/lowest/seed-0/checkpoint/trainer_state.json');
  const t0 = Date.now();
  // The second placement has begun and written its first checkpoint: kill everything at once.
  while (!(/placement 2 of 3: lowest/.test(stderr) && fs.existsSync(checkpoint))) {
    assert.ok(Date.now() - t0 < 180_000 && child.exitCode === null, `the check should reach placement 2; stderr:\n${stderr}`);
    await sleep(20);
  }
  process.kill(-child.pid!, 'SIGKILL');
  await exited;
  assert.match(stderr, /placement 1 of 3: dominant \(layer \d · \w+\)/);
  const state = JSON.parse(fs.readFileSync(path.join(dir, 'check-state.json'), 'utf8'));
  assert.deepEqual(Object.keys(state.finished), ['dominant#0'], 'killed after the first placement was recorded');
  const ck = JSON.parse(fs.readFileSync(checkpoint, 'utf8'));
  assert.ok(ck.step >= 1 && ck.step < 12, `killed in the middle of the second placement (checkpoint at step ${ck.step})`);
  assert.ok(!fs.existsSync(path.join(dir, 'check.json')), 'no result before the check is complete');
  const domFile = path.join(dir, 'adapters/dominant/seed-0/adapter_model.safetensors');
  const mtime = fs.statSync(domFile).mtimeMs;

  const resumed = cliJson('check', STORIES, '--resume', dir, '--json');
  assert.match(resumed.stderr, /resuming the check in .*: 1 of 3 runs finished earlier are kept/);
  assert.match(resumed.stderr, /placement 1 of 3: dominant .*: finished earlier, kept/);
  assert.match(resumed.stderr, /continuing from its checkpoint at step \d+ of 12/);
  assert.equal(fs.statSync(domFile).mtimeMs, mtime, 'the finished placement was not trained again');

  const whole = cliJson('check', STORIES, ...FLAGS, '--out', path.join(root, 'whole'), '--json');
  const a = resumed.json, b = whole.json;
  assert.deepEqual(a.placements.map((p: { modules: string[] }) => p.modules), b.placements.map((p: { modules: string[] }) => p.modules));
  for (const [i, p] of b.placements.entries()) {
    const x = a.placements[i].runs[0], y = p.runs[0];
    assert.equal(x.evalLossBefore, y.evalLossBefore);
    assert.equal(x.evalLossAfter, y.evalLossAfter, `${p.id}: the same held-out loss as the uninterrupted check`);
    const ta = tensors(x.adapterDir), tb = tensors(y.adapterDir);
    for (const [k, v] of tb) assert.deepEqual(ta.get(k), v, `${p.id}: ${k}`);
  }
  assert.deepEqual(a.correlation, b.correlation);

  // The table, as a person reads it.
  const text = cli('check', STORIES, '--resume', dir);
  assert.equal(text.status, 0, text.stderr);
  assert.match(text.stdout, /rank\s+placement\s+params\s+share\s+eval loss after\s+reduction\s+time/);
  assert.match(text.stdout, /dominant \(layer \d · \w+\)\s+[\d,]+\s+[\d.]+%/);
  assert.match(text.stdout, /One seed per placement: no spread was measured/);
});

test('check and compare refuse bad input with exit 2 before any work', () => {
  const root = tmpDir();
  const out = path.join(root, 'c');
  const r = cliBadInput('check', STORIES, '--data', MATH, '--out', out, '--placements', 'dominant,nowhere', '--json');
  assert.match(r.json.error.message, /"nowhere" is neither dominant, runner-up, lowest, random:K, vanilla nor a linear module/);
  cliBadInput('check', STORIES, '--data', MATH, '--out', out, '--seeds', '0');
  cliBadInput('check', STORIES, '--resume', out, '--force');
  cliBadInput('check', STORIES, '--data', MATH);
  assert.ok(!fs.existsSync(out), 'nothing written');
  cliBadInput('compare', path.join(root, 'one.json'));
});

test('compare: the dominant of each report and the pairwise Spearman matrix, for N reports of one model', () => {
  const root = tmpDir();
  const reports = [['math', MATH], ['code', CODE]].map(([name, data]) => {
    const file = path.join(root, `${name}.json`);
    cliJson('probe', STORIES, '--data', data, '--samples', '4', '--seq-len', '128', '--out', file, '--json');
    return file;
  });
  // A third report of the same data: identical orderings, for a known entry of the matrix.
  fs.copyFileSync(reports[0], path.join(root, 'math2.json'));
  reports.push(path.join(root, 'math2.json'));
  const r = cliJson('compare', ...reports, '--json').json;
  const probe = reports.map((f) => JSON.parse(fs.readFileSync(f, 'utf8')));
  assert.equal(r.reports.length, 3);
  assert.deepEqual(r.reports.map((x: { dominant: { name: string } }) => x.dominant.name), probe.map((p) => p.dominant.name));
  assert.equal(r.spearman[0][2], 1);
  assert.equal(r.spearman[0][1], r.spearman[1][0]);
  assert.ok(r.spearman[0][1] > -1 && r.spearman[0][1] < 1, `math vs code ${r.spearman[0][1]}`);
  assert.equal(r.sameDominantLayer, probe.every((p) => p.dominant.layer === probe[0].dominant.layer));
  // The same pair through probe --compare gives the same coefficient.
  const viaProbe = cliJson('probe', STORIES, '--data', CODE, '--samples', '4', '--seq-len', '128', '--compare', reports[0], '--json').json;
  assert.equal(viaProbe.comparison.spearman, r.spearman[1][0]);
  const text = cli('compare', ...reports);
  assert.equal(text.status, 0);
  assert.match(text.stdout, /Spearman rank correlation of the module orderings:\n\s+R1\s+R2\s+R3\n\s+R1\s+1\.000/);
  // A report of another model is refused, naming it.
  const other = { ...probe[0], model: { ...probe[0].model, layers: 9 } };
  fs.writeFileSync(path.join(root, 'other.json'), JSON.stringify(other));
  const bad = cliBadInput('compare', reports[0], path.join(root, 'other.json'), '--json');
  assert.match(bad.json.error.message, /is a report of another model/);
  assert.equal(bad.json.error.file, path.join(root, 'other.json'));
});
