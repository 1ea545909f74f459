// The probe as a user runs it: its report, its refusals, early stopping, comparison, cancel.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { initBackend } from '../../src/engine/runtime/backend';
import { runProbe } from '../../src/engine/probe/probe';
import { bootstrapWins } from '../../src/engine/probe/report';
import { compareReports } from '../../src/engine/probe/compare';
import { DomLoraError } from '../../src/engine/runtime/errors';
import { SHARED, STORIES, tmpDir } from '../helpers/reference';

before(async () => { await initBackend('wasm'); });
const GSM = path.join(SHARED, 'data/math/gsm8k_train.jsonl');

test('--samples larger than the dataset probes every usable record and says how many', async () => {
  const dir = tmpDir();
  const small = path.join(dir, 'small.jsonl');
  fs.writeFileSync(small, fs.readFileSync(GSM, 'utf8').split('\n').slice(0, 3).join('\n') + '\n');
  const warnings: string[] = [];
  const { report } = await runProbe({ modelDir: STORIES, data: small, samples: 10, seqLen: 256, backend: 'wasm' }, { log: (l, m) => { if (l === 'warn') warnings.push(m); } });
  assert.equal(report.config.samples, 3);
  assert.equal(report.config.requestedSamples, 10);
  assert.ok(warnings.some((w) => /only 3 usable records/.test(w)), warnings.join('; '));
  assert.equal(report.records.length, 3);
  assert.equal(report.perRecordExpected.length, 3);
  assert.equal(report.modules.length, 35);
  assert.match(report.config.datasetSha256, /^[0-9a-f]{64}$/);
});

test('records without supervised tokens after truncation are skipped and counted; none left is an error', async () => {
  const dir = tmpDir();
  const long = { instruction: 'word '.repeat(200), input: '', output: 'the answer' };
  const short = { instruction: 'Add 2 and 2.', input: '', output: '4' };
  const mixed = path.join(dir, 'mixed.json');
  fs.writeFileSync(mixed, JSON.stringify([long, short, long]));
  const { report } = await runProbe({ modelDir: STORIES, data: mixed, samples: 5, seqLen: 64, backend: 'wasm' });
  assert.equal(report.config.samples, 1);
  assert.equal(report.config.skipped, 2);
  const none = path.join(dir, 'none.json');
  fs.writeFileSync(none, JSON.stringify([long, long]));
  const out = path.join(dir, 'r.json');
  await assert.rejects(runProbe({ modelDir: STORIES, data: none, samples: 5, seqLen: 64, backend: 'wasm', out }),
    (e: unknown) => e instanceof DomLoraError && e.code === 'bad-input' && /no usable records/.test(e.message) && e.message.includes(none));
  assert.ok(!fs.existsSync(out), 'nothing written');
});

test('cancel stops within a record and writes no report', async () => {
  const dir = tmpDir();
  const out = path.join(dir, 'r.json');
  const c = new AbortController();
  let seen = 0;
  await assert.rejects(runProbe({ modelDir: STORIES, data: GSM, samples: 8, seqLen: 64, backend: 'wasm', out },
    { signal: c.signal, onProgress: (p) => { if (p.phase === 'probe') { seen = p.done; if (p.done === 2) c.abort(); } } }),
  (e: unknown) => e instanceof DomLoraError && e.code === 'cancelled');
  assert.equal(seen, 2, 'no record started after the cancel');
  assert.deepEqual(fs.readdirSync(dir), [], 'no report and no temporary file');
});

test('--until-stable stops before N once the dominant module stays stable, and a second task compares', async () => {
  const a = await runProbe({ modelDir: STORIES, data: GSM, samples: 24, seqLen: 64, backend: 'wasm', untilStable: true, stabilityThreshold: 0.6 });
  assert.ok(a.report.config.samples < 24 && a.report.config.samples >= 8, `used ${a.report.config.samples}`);
  assert.ok(a.report.config.untilStable);
  const b = await runProbe({ modelDir: STORIES, data: path.join(SHARED, 'data/instruction/alpaca_en_demo.json'), samples: 8, seqLen: 64, backend: 'wasm' });
  const self = compareReports(a.report, a.report);
  assert.equal(self.spearman, 1);
  assert.equal(self.sameDominant, true);
  const cmp = compareReports(a.report, b.report);
  assert.ok(cmp.spearman > -1 && cmp.spearman < 1);
  assert.equal(cmp.sameDominant, a.report.dominant.name === b.report.dominant.name);
});

test('bootstrap: a module that wins in every record is stable; a tie is not', () => {
  const sure = Array.from({ length: 10 }, () => [1, 5, 2]);
  const b1 = bootstrapWins(sure, 200, 0);
  assert.equal(b1.winner, 1);
  assert.equal(b1.stability, 1);
  const tie = Array.from({ length: 20 }, (_, i) => (i % 2 ? [1, 0] : [0, 1.0001]));
  const b2 = bootstrapWins(tie, 200, 0);
  assert.ok(b2.stability > 0.2 && b2.stability < 0.8, `stability ${b2.stability}`);
});

test('every dataset format gives the same PAGE as its pre-tokenized equivalent', async () => {
  const { readDataset } = await import('../../src/engine/data/read'); const { tokenizeDataset } = await import('../../src/engine/data/tokenize');
  const { ModelTokenizer } = await import('../../src/engine/hf/tokenizer');
  const tok = ModelTokenizer.load(STORIES);
  const files = ['math/gsm8k_train.jsonl', 'conversation/ultrachat_16.jsonl', 'conversation/capybara_16.jsonl', 'conversation/glaive_toolcall_300.json', 'instruction/alpaca_en_demo.json'];
  const formats = new Set<string>();
  for (const f of files) {
    const file = path.join(SHARED, 'data', f);
    const ds = readDataset(file);
    formats.add(ds.format);
    const recs = tokenizeDataset(ds, tok, { seqLen: 160, limit: 2 }).records;
    const dir = tmpDir();
    const pre = path.join(dir, 'pre.jsonl');
    fs.writeFileSync(pre, recs.map((r) => JSON.stringify({ input_ids: r.inputIds, labels: r.inputIds.map((id, t) => (r.lossMask[t] ? id : -100)) })).join('\n') + '\n');
    const a = await runProbe({ modelDir: STORIES, data: file, samples: 2, seqLen: 160, backend: 'wasm' });
    const b = await runProbe({ modelDir: STORIES, data: pre, samples: 2, seqLen: 160, backend: 'wasm' });
    assert.equal(b.report.config.datasetFormat, 'tokenized');
    assert.equal(a.report.tokens, b.report.tokens, f);
    a.report.modules.forEach((m, j) => assert.equal(m.pageExpected, b.report.modules[j].pageExpected, `${f}: ${m.name}`));
  }
  assert.deepEqual([...formats].sort(), ['alpaca', 'messages', 'qa', 'sharegpt']);
});

test('a bootstrap of zero resamples is refused instead of reporting NaN stability', async () => {
  await assert.rejects(runProbe({ modelDir: STORIES, data: GSM, samples: 2, seqLen: 64, backend: 'wasm', bootstrap: 0 }),
    (e: unknown) => e instanceof DomLoraError && e.code === 'bad-input' && /--bootstrap/.test(e.message));
});
