import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import { readDataset } from '../../src/engine/data/read';
import { tokenizeDataset, tokenizeRecord } from '../../src/engine/data/tokenize';
import type { RecordFormat } from '../../src/engine/data/shapes';
import type { TokenizedRecord } from '../../src/engine/data/tokenize';
import { ModelTokenizer } from '../../src/engine/hf/tokenizer';
import { DomLoraError } from '../../src/engine/runtime/errors';

// Tests run from the project root; the model and data are in test/fixtures.
const FIXTURES = path.resolve(process.cwd(), 'test/fixtures');
const MODEL = path.join(FIXTURES, 'models/stories260K');
const tok = ModelTokenizer.load(MODEL);
const NO_TRUNCATION = 1_000_000;

const tempRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'domlora-data-'));
after(() => fs.rmSync(tempRoot, { recursive: true, force: true }));
let tempCount = 0;

function writeTemp(name: string, text: string | Buffer): string {
  const file = path.join(tempRoot, `${tempCount++}-${name}`);
  fs.writeFileSync(file, text);
  return file;
}

function jsonl(records: unknown[]): string {
  return records.map((r) => JSON.stringify(r)).join('\n') + '\n';
}

function encode(text: string): number[] {
  return tok.encode(text, { addSpecial: false });
}

/** The decoded text of each contiguous run of supervised tokens: one run per response. */
function supervisedRuns(rec: TokenizedRecord, t: ModelTokenizer = tok): string[] {
  const runs: string[] = [];
  let current: number[] = [];
  rec.lossMask.forEach((m, i) => {
    if (m === 1) current.push(rec.inputIds[i] as number);
    else if (current.length) { runs.push(t.decode(current)); current = []; }
  });
  if (current.length) runs.push(t.decode(current));
  return runs;
}

function tokenizeAll(file: string, t: ModelTokenizer = tok): TokenizedRecord[] {
  const result = tokenizeDataset(readDataset(file), t, { seqLen: NO_TRUNCATION });
  assert.equal(result.skipped, 0, result.skippedReasons.join('\n'));
  return result.records;
}

function isBadInput(file: string, ...patterns: RegExp[]) {
  return (err: unknown): boolean => {
    assert.ok(err instanceof DomLoraError, `expected a DomLoraError, got ${String(err)}`);
    assert.equal(err.code, 'bad-input');
    assert.equal(err.file, file);
    assert.ok(err.message.includes(file), `the message names the file: ${err.message}`);
    for (const p of patterns) assert.match(err.message, p);
    return true;
  };
}

// ---- Each shape, from small files -------------------------------------------------------------------------------

test('alpaca (JSON array): prompt template, response + EOS supervised, system and history, record lines', () => {
  const records = [
    { instruction: 'Add the numbers.', input: '2 and 3', output: '2 + 3 = 5.' },
    { instruction: 'Say hello.', input: '', output: 'Hello!' },
    { instruction: 'Greet.', output: 'Hi.', system: 'Be brief.' },
    { instruction: 'And now?', input: '', output: 'Done.', history: [['First?', 'Yes.']] },
  ];
  const text = JSON.stringify(records, null, 2);
  const file = writeTemp('alpaca.json', text);
  const ds = readDataset(file);
  assert.equal(ds.format, 'alpaca');
  assert.equal(ds.count, 4);
  const starts = text.split('\n').flatMap((l, i) => (l === '  {' ? [i + 1] : []));
  assert.deepEqual(ds.lines, starts);

  const [r0, r1, r2, r3] = tokenizeAll(file);
  const prompt0 = [1, ...encode('### Instruction:\nAdd the numbers.\n\n### Input:\n2 and 3\n\n### Response:\n')];
  const response0 = [...encode('2 + 3 = 5.'), 2];
  assert.deepEqual(r0?.inputIds, [...prompt0, ...response0]);
  assert.deepEqual(r0?.lossMask, [...prompt0.map(() => 0), ...response0.map(() => 1)]);
  assert.equal(r0?.format, 'alpaca');
  assert.equal(r0?.line, starts[0]);

  assert.deepEqual(r1?.inputIds.slice(0, r1.lossMask.indexOf(1)), [1, ...encode('### Instruction:\nSay hello.\n\n### Response:\n')]);
  assert.deepEqual(supervisedRuns(r1!), ['Hello!</s>']);
  assert.deepEqual(r2?.inputIds.slice(0, r2.lossMask.indexOf(1)), [1, ...encode('Be brief.\n\n### Instruction:\nGreet.\n\n### Response:\n')]);
  // With history the record is a conversation: every assistant turn is a target.
  assert.deepEqual(supervisedRuns(r3!), ['Yes.</s>', 'Done.</s>']);
  assert.match(tok.decode(r3!.inputIds), /User: First\?\nAssistant: Yes\.<\/s> User: And now\?\nAssistant: Done\.<\/s>$/);
});

test('qa (JSONL with blank lines): "Question/Answer" prompt, answer + EOS supervised', () => {
  const file = writeTemp('qa.jsonl', '{"question": "What is 2+2?", "answer": "4"}\n\n\n{"question": "Capital of France?", "answer": "Paris"}\n');
  const ds = readDataset(file);
  assert.equal(ds.format, 'qa');
  assert.deepEqual(ds.lines, [1, 4]);
  const [r0, r1] = tokenizeAll(file);
  // The prompt's trailing space is carried by the word-start marker of the separately encoded answer ("▁4"),
  // so the joined tokens read "Answer: 4", not "Answer:  4".
  const prompt = [1, ...encode('Question: What is 2+2?\nAnswer:')];
  const answer = [...encode('4'), 2];
  assert.deepEqual(r0?.inputIds, [...prompt, ...answer]);
  assert.deepEqual(r0?.lossMask, [...prompt.map(() => 0), ...answer.map(() => 1)]);
  assert.equal(tok.decode(r0!.inputIds), '<s> Question: What is 2+2?\nAnswer: 4</s>');
  assert.deepEqual(supervisedRuns(r1!), ['Paris</s>']);
  assert.equal(r1?.line, 4);
});

test('prompt-completion: plain strings, and TRL conversational lists where only the completion is supervised', () => {
  const file = writeTemp('pc.jsonl', jsonl([
    { prompt: 'The sky is', completion: ' blue.' },
    {
      prompt: [
        { role: 'system', content: 'Be kind.' }, { role: 'user', content: 'Hi' },
        { role: 'assistant', content: 'Hello, who is it?' }, { role: 'user', content: 'Me' },
      ],
      completion: [{ role: 'assistant', content: 'Welcome back.' }],
    },
  ]));
  const ds = readDataset(file);
  assert.equal(ds.format, 'prompt-completion');
  const [r0, r1] = tokenizeAll(file);
  // The completion's leading space becomes the word-start marker of "▁blue", as in the unsplit text.
  assert.deepEqual(r0?.inputIds, [1, ...encode('The sky is blue.'), 2]);
  assert.deepEqual(supervisedRuns(r0!), ['blue.</s>']);
  assert.deepEqual(supervisedRuns(r1!), ['Welcome back.</s>']);
  assert.match(tok.decode(r1!.inputIds), /System: Be kind\.\nUser: Hi\nAssistant: Hello, who is it\?<\/s> User: Me\nAssistant: Welcome back\.<\/s>$/);
});

test('messages: every assistant turn is supervised; messages win over an UltraChat-style prompt key', () => {
  const file = writeTemp('messages.jsonl', jsonl([
    {
      messages: [
        { role: 'system', content: 'You are terse.' }, { role: 'user', content: 'One?' },
        { role: 'assistant', content: 'Uno.' }, { role: 'user', content: 'Two?' }, { role: 'assistant', content: 'Dos.' },
      ],
    },
    { prompt: 'Colour?', prompt_id: 'abc', messages: [{ role: 'user', content: 'Colour?' }, { role: 'assistant', content: 'Red.' }] },
  ]));
  const ds = readDataset(file);
  assert.equal(ds.format, 'messages');
  const [r0, r1] = tokenizeAll(file);
  assert.deepEqual(supervisedRuns(r0!), ['Uno.</s>', 'Dos.</s>']);
  assert.deepEqual(supervisedRuns(r1!), ['Red.</s>']);
  assert.equal(r1?.format, 'messages');
});

test('sharegpt: gpt and function_call supervised, observation not; Capybara conversation pairs', () => {
  const file = writeTemp('sharegpt.json', JSON.stringify([
    {
      conversations: [
        { from: 'human', value: 'Hi' }, { from: 'gpt', value: 'Hello.' }, { from: 'human', value: 'Weather?' },
        { from: 'function_call', value: '{"name": "weather"}' }, { from: 'observation', value: '{"temp": 20}' },
        { from: 'gpt', value: 'It is 20 degrees.' },
      ],
      tools: '[{"name": "weather"}]',
    },
    { source: 'x', conversation: [{ input: 'A?', output: 'B.' }, { input: 'C?', output: 'D.' }] },
  ]));
  const ds = readDataset(file);
  assert.equal(ds.format, 'sharegpt');
  const [r0, r1] = tokenizeAll(file);
  assert.deepEqual(supervisedRuns(r0!), ['Hello.</s>', '{"name": "weather"}</s>', 'It is 20 degrees.</s>']);
  const whole = tok.decode(r0!.inputIds);
  assert.ok(whole.includes('Tools: [{"name":"weather"}]\nUser: Hi\nAssistant: '), whole);
  assert.ok(whole.includes('Tool: {"temp": 20}\nAssistant: '), whole);
  assert.deepEqual(supervisedRuns(r1!), ['B.</s>', 'D.</s>']);
});

test('text: every token after the first is supervised; tokenized: loss_mask and labels', () => {
  const ids = tok.encode('Once upon a time');
  const file = writeTemp('mixed.jsonl', jsonl([
    { text: 'Once upon a time' },
    { input_ids: ids, loss_mask: [1, 0, 1, 1, 1] },
    { input_ids: ids, labels: [-100, -100, ids[2], ids[3], ids[4]] },
    { input_ids: ids },
  ]));
  const ds = readDataset(file);
  assert.equal(ds.format, 'tokenized', 'the most common format');
  const [text, masked, labelled, bare] = tokenizeAll(file);
  assert.deepEqual(text?.inputIds, ids);
  assert.deepEqual(text?.lossMask, [0, 1, 1, 1, 1]);
  assert.equal(text?.format, 'text');
  assert.deepEqual(masked?.lossMask, [0, 0, 1, 1, 1], 'position 0 is never a target');
  assert.deepEqual(labelled?.lossMask, [0, 0, 1, 1, 1]);
  assert.deepEqual(labelled?.inputIds, ids);
  assert.deepEqual(bare?.lossMask, [0, 1, 1, 1, 1]);
});

// ---- The real datasets ------------------------------------------------------------------------------------------

type Raw = Record<string, unknown>;

/** The responses of a record, read straight from its JSON, independently of data.ts. */
function responsesOf(raw: Raw): string[] {
  if (Array.isArray(raw.messages)) {
    return (raw.messages as Raw[]).filter((m) => m.role === 'assistant').map((m) => m.content as string);
  }
  if (Array.isArray(raw.conversations)) {
    return (raw.conversations as Raw[]).filter((m) => m.from === 'gpt' || m.from === 'function_call').map((m) => m.value as string);
  }
  if (Array.isArray(raw.conversation)) return (raw.conversation as Raw[]).map((p) => p.output as string);
  if (typeof raw.output === 'string') return [raw.output];
  if (typeof raw.answer === 'string') return [raw.answer];
  throw new Error(`unexpected record ${JSON.stringify(raw).slice(0, 80)}`);
}

const REAL: { file: string; format: RecordFormat; count: number }[] = [
  { file: 'instruction/alpaca_en_demo.json', format: 'alpaca', count: 999 },
  { file: 'code/code_alpaca_2k.json', format: 'alpaca', count: 2017 },
  { file: 'math/gsm8k_train.jsonl', format: 'qa', count: 7473 },
  { file: 'conversation/ultrachat_16.jsonl', format: 'messages', count: 16 },
  { file: 'conversation/capybara_16.jsonl', format: 'sharegpt', count: 16 },
  { file: 'conversation/glaive_toolcall_300.json', format: 'sharegpt', count: 300 },
];

for (const real of REAL) {
  test(`real data ${real.file}: shape, lines, and masks on exactly the responses`, () => {
    const file = path.join(FIXTURES, 'data', real.file);
    const ds = readDataset(file);
    assert.equal(ds.format, real.format);
    assert.equal(ds.count, real.count);
    assert.equal(ds.sha256, crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex'));
    const fileLines = fs.readFileSync(file, 'utf8').split('\n');
    for (let i = 0; i < 5; i++) {
      const startLine = fileLines[(ds.lines[i] as number) - 1] ?? '';
      if (real.file.endsWith('.jsonl')) assert.deepEqual(JSON.parse(startLine), ds.raw[i]);
      else assert.equal(startLine.trim(), '{');
    }

    const { records, skipped } = tokenizeDataset(ds, tok, { seqLen: NO_TRUNCATION, limit: 4 });
    assert.equal(skipped, 0);
    assert.equal(records.length, 4);
    records.forEach((rec, i) => {
      assert.equal(rec.index, i);
      assert.equal(rec.inputIds[0], 1, 'starts with BOS');
      assert.equal(rec.lossMask.length, rec.inputIds.length);
      assert.ok(rec.lossMask.indexOf(1) > 1, 'a prompt comes before the first target');
      assert.deepEqual(supervisedRuns(rec), responsesOf(ds.raw[i] as Raw).map((r) => `${r}</s>`));
    });
  });
}

test('real data: alpaca pre-tokenized as {input_ids, loss_mask} and as {input_ids, labels} reads back identically', () => {
  const ds = readDataset(path.join(FIXTURES, 'data/instruction/alpaca_en_demo.json'));
  // 128 tokens truncates many responses, so the truncated form is round-tripped too.
  const { records } = tokenizeDataset(ds, tok, { seqLen: 128, limit: 12 });
  assert.equal(records.length, 12);
  const withMask = writeTemp('tok-mask.jsonl', jsonl(records.map((r) => ({ input_ids: r.inputIds, loss_mask: r.lossMask }))));
  const withLabels = writeTemp('tok-labels.jsonl',
    jsonl(records.map((r) => ({ input_ids: r.inputIds, labels: r.inputIds.map((id, t) => (r.lossMask[t] ? id : -100)) }))));
  for (const file of [withMask, withLabels]) {
    const again = tokenizeDataset(readDataset(file), tok, { seqLen: 128 });
    assert.equal(again.records.length, records.length);
    again.records.forEach((rec, i) => {
      assert.deepEqual(rec.inputIds, records[i]?.inputIds);
      assert.deepEqual(rec.lossMask, records[i]?.lossMask);
      assert.equal(rec.index, i);
      assert.equal(rec.line, i + 1);
      assert.equal(rec.format, 'tokenized');
    });
  }
});

// ---- Chat templates ---------------------------------------------------------------------------------------------

const CHATML = "{% for m in messages %}{{ '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/**
 * stories260K's vocabulary plus ChatML's two special tokens, with the SentencePiece-style word-start marker (and the
 * decoder step that strips it) left out: then every segment decodes back to exactly its text, so the test sees the
 * masks alone. (With the marker, each separately encoded segment gains a leading space token.)
 */
function chatModel(template: string | undefined): ModelTokenizer {
  const dir = fs.mkdtempSync(path.join(tempRoot, 'chatml-'));
  const json = JSON.parse(fs.readFileSync(path.join(MODEL, 'tokenizer.json'), 'utf8')) as Raw;
  const special = (id: number, content: string) =>
    ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
  json.added_tokens = [...(json.added_tokens as unknown[]), special(512, '<|im_start|>'), special(513, '<|im_end|>')];
  json.normalizer = { type: 'Replace', pattern: { String: ' ' }, content: '▁' };
  json.decoder = { type: 'Sequence', decoders: [{ type: 'Replace', pattern: { String: '▁' }, content: ' ' }, { type: 'ByteFallback' }, { type: 'Fuse' }] };
  fs.writeFileSync(path.join(dir, 'tokenizer.json'), JSON.stringify(json));
  fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify({
    add_bos_token: true, add_eos_token: false, bos_token: '<s>', eos_token: '<|im_end|>', chat_template: template,
  }));
  return ModelTokenizer.load(dir);
}

test('chat template: masks cover exactly the assistant contents and their end-of-turn, one BOS', () => {
  const conversation = [
    { role: 'system', content: 'You are terse.' }, { role: 'user', content: 'One?' }, { role: 'assistant', content: 'Uno.' },
    { role: 'user', content: 'Two?' }, { role: 'assistant', content: 'Dos, amigo.' },
  ];
  const cases: { record: Raw; messages: { role: string; content: string }[] }[] = [
    { record: { messages: conversation }, messages: conversation },
    {
      record: { instruction: 'Sum.', input: '2 and 3', output: '5' },
      messages: [{ role: 'user', content: 'Sum.\n\n2 and 3' }, { role: 'assistant', content: '5' }],
    },
    { record: { question: 'Q?', answer: 'A.' }, messages: [{ role: 'user', content: 'Q?' }, { role: 'assistant', content: 'A.' }] },
    { record: { prompt: 'P', completion: 'C' }, messages: [{ role: 'user', content: 'P' }, { role: 'assistant', content: 'C' }] },
    {
      // A template that knows no 'tool' role gets the observation as a user turn.
      record: { conversations: [{ from: 'human', value: 'W?' }, { from: 'function_call', value: '{"f":1}' }, { from: 'observation', value: '20' }, { from: 'gpt', value: 'Warm.' }] },
      messages: [{ role: 'user', content: 'W?' }, { role: 'assistant', content: '{"f":1}' }, { role: 'user', content: '20' }, { role: 'assistant', content: 'Warm.' }],
    },
  ];
  for (const template of [CHATML, `{{ bos_token }}${CHATML}`]) {
    const chat = chatModel(template);
    const file = writeTemp('chat.jsonl', jsonl(cases.map((c) => c.record)));
    const records = tokenizeAll(file, chat);
    records.forEach((rec, i) => {
      const { messages } = cases[i]!;
      assert.equal(rec.inputIds[0], 1);
      assert.equal(rec.inputIds[1], 512, 'no second BOS, whether or not the template writes one');
      const rendered = chat.applyChatTemplate(messages);
      assert.equal(chat.decode(rec.inputIds), template === CHATML ? `<s>${rendered}` : rendered);
      assert.deepEqual(supervisedRuns(rec, chat),
        messages.filter((m) => m.role === 'assistant').map((m) => `${m.content}<|im_end|>\n`));
    });
  }
});

test('without a word-start marker (byte-level style), a boundary space moves into the response', () => {
  const plain = chatModel(undefined);
  assert.equal(plain.addsPrefixSpace, false);
  assert.equal(tok.addsPrefixSpace, true);
  const file = writeTemp('qa-bytelevel.jsonl', jsonl([{ question: 'Q?', answer: 'A.' }]));
  const [rec] = tokenizeAll(file, plain);
  assert.deepEqual(supervisedRuns(rec!, plain), [' A.<|im_end|>']);
  assert.equal(plain.decode(rec!.inputIds), '<s>Question: Q?\nAnswer: A.<|im_end|>');
});

test('chat template: a template that rewrites earlier turns is reported, not guessed', () => {
  // Renders only the last message: a prefix of the conversation is not a prefix of its text.
  const chat = chatModel("{{ messages[-1].content }}{% if add_generation_prompt %}>{% endif %}");
  const file = writeTemp('rewrite.jsonl', jsonl([{ messages: [{ role: 'user', content: 'Hi' }, { role: 'assistant', content: 'Yo' }] }]));
  assert.throws(() => tokenizeDataset(readDataset(file), chat, { seqLen: 64 }), isBadInput(file, /line 1/, /continuation/));
});

// ---- Errors, skipping, sampling ---------------------------------------------------------------------------------

test('an empty dataset is a clear error', () => {
  for (const text of ['', '  \n\n', '[]', '\uFEFF\n']) {
    const file = writeTemp('empty.jsonl', text);
    assert.throws(() => readDataset(file), isBadInput(file, /empty/));
  }
  const missing = path.join(tempRoot, 'missing.jsonl');
  assert.throws(() => readDataset(missing), isBadInput(missing, /cannot read/));
});

test('invalid JSON names the file and the line', () => {
  const lines = writeTemp('bad.jsonl', '{"text": "a"}\n\n{"text": "b"\n{"text": "c"}\n');
  assert.throws(() => readDataset(lines), isBadInput(lines, /line 3: invalid JSON/));
  const array = writeTemp('bad.json', '[\n  {"text": "a"},\n  {"text": }\n]\n');
  assert.throws(() => readDataset(array), isBadInput(array, /line 3: invalid JSON/));
  const trailingComma = writeTemp('comma.json', '[\n  {"text": "a"},\n  {"text": "b"},\n]\n');
  assert.throws(() => readDataset(trailingComma), isBadInput(trailingComma, /line 4: invalid JSON/));
  const inRecord = writeTemp('record.json', '[\n  {"text": "a"},\n  {\n    "text": "b",\n    "x": tru\n  }\n]\n');
  assert.throws(() => readDataset(inRecord), isBadInput(inRecord, /line 3: invalid JSON/));

  // A single pretty-printed object is not JSON Lines, but it is one unambiguous record.
  const single = writeTemp('single.json', '{\n  "question": "Q?",\n  "answer": "A."\n}\n');
  assert.equal(readDataset(single).count, 1);
});

test('a record of unknown shape names the file, line, expected shapes and its keys', () => {
  const lines = writeTemp('unknown.jsonl', '{"text": "a"}\n{"foo": 1, "bar": 2}\n');
  assert.throws(() => readDataset(lines),
    isBadInput(lines, /line 2 \(record 1\): record has none of the known shapes/, /instruction/, /conversations/, /its keys are foo, bar/));
  const array = writeTemp('unknown.json', '[\n  {"text": "a"},\n  "just a string"\n]');
  assert.throws(() => readDataset(array), isBadInput(array, /line 3 \(record 1\)/, /not an object/));
  const badRole = writeTemp('role.jsonl', jsonl([{ messages: [{ role: 'narrator', content: 'x' }] }]));
  assert.throws(() => tokenizeDataset(readDataset(badRole), tok, { seqLen: 64 }), isBadInput(badRole, /line 1/, /narrator/));
});

test('pre-tokenized records are validated: ids within the vocabulary, lengths, labels', () => {
  const cases: [Raw, RegExp][] = [
    [{ input_ids: [1, 9999], loss_mask: [0, 1] }, /input_ids\[1\] = 9999 is not a token id of this tokenizer \(0\.\.511\)/],
    [{ input_ids: [1, -1], loss_mask: [0, 1] }, /input_ids\[1\] = -1/],
    [{ input_ids: [1, 2.5], loss_mask: [0, 1] }, /input_ids\[1\] = 2\.5/],
    [{ input_ids: [1, 5, 6], loss_mask: [0, 1] }, /loss_mask must be a list as long as input_ids \(3\)/],
    [{ input_ids: [1, 5], labels: [-100, 7] }, /labels\[1\] = 7; expected -100 or input_ids\[1\] \(5\)/],
    [{ input_ids: [] }, /input_ids is empty/],
  ];
  for (const [record, pattern] of cases) {
    const file = writeTemp('tok.jsonl', `{"text": "fine"}\n${JSON.stringify(record)}\n`);
    assert.throws(() => tokenizeDataset(readDataset(file), tok, { seqLen: 64 }), isBadInput(file, /line 2 \(record 1\)/, pattern));
  }
});

test('records without a supervised token after truncation are skipped and counted; the rest are truncated', () => {
  const file = writeTemp('long.jsonl', jsonl([
    { question: `${'very '.repeat(100)}long?`, answer: 'Yes.' },
    { question: 'Short?', answer: `${'and '.repeat(100)}done.` },
    { input_ids: [1, 5, 6], loss_mask: [0, 0, 0] },
    { question: 'Also short?', answer: 'Yes.' },
  ]));
  const ds = readDataset(file);
  const result = tokenizeDataset(ds, tok, { seqLen: 64 });
  assert.deepEqual(result.records.map((r) => r.index), [1, 3]);
  assert.equal(result.skipped, 2);
  assert.match(result.skippedReasons[0] ?? '', /line 1 \(record 0\): the response starts at token \d+, beyond the sequence length 64/);
  assert.match(result.skippedReasons[1] ?? '', /line 3 \(record 2\): no supervised token at all/);
  const long = result.records[0]!;
  assert.equal(long.inputIds.length, 64);
  assert.equal(long.lossMask.length, 64);

  // tokenizeRecord itself truncates and reports an all-zero mask rather than skipping.
  const rec = tokenizeRecord(ds.raw[0], tok, 64, { index: 0, line: 1, file });
  assert.equal(rec.inputIds.length, 64);
  assert.ok(rec.lossMask.every((m) => m === 0));

  // limit stops at that many usable records.
  assert.deepEqual(tokenizeDataset(ds, tok, { seqLen: 64, limit: 1 }).records.map((r) => r.index), [1]);
});

test('random sampling is deterministic by seed and differs across seeds', () => {
  const ds = readDataset(path.join(FIXTURES, 'data/math/gsm8k_train.jsonl'));
  const pick = (seed: number) => tokenizeDataset(ds, tok, { seqLen: 512, limit: 8, sample: 'random', seed }).records.map((r) => r.index);
  const a = pick(1);
  assert.deepEqual(pick(1), a);
  assert.notDeepEqual(pick(2), a);
  assert.equal(new Set(a).size, 8);
  assert.ok(a.every((i) => Number.isInteger(i) && i >= 0 && i < ds.count));
  assert.notDeepEqual([...a].sort((x, y) => x - y), [0, 1, 2, 3, 4, 5, 6, 7]);
  assert.deepEqual(tokenizeDataset(ds, tok, { seqLen: 512, limit: 8 }).records.map((r) => r.index), [0, 1, 2, 3, 4, 5, 6, 7]);
});

// ---- Compressed files ----------------------------------------------------------------------------------------------

test('a gzip file is read transparently whatever its name; its sha256 is that of the file as stored', () => {
  const text = jsonl([{ question: 'What is 2+2?', answer: '4' }, { instruction: 'Say hi.', output: 'Hi.' }]);
  const plain = writeTemp('plain.jsonl', text);
  const gz = zlib.gzipSync(Buffer.from(text));
  const expected = tokenizeAll(plain);
  // HumanEval ships as HumanEval.jsonl.gz; the bytes decide, not the name.
  for (const name of ['HumanEval.jsonl.gz', 'HumanEval.jsonl', 'data.json']) {
    const file = writeTemp(name, gz);
    const ds = readDataset(file);
    assert.equal(ds.compression, 'gzip');
    assert.equal(ds.sha256, crypto.createHash('sha256').update(gz).digest('hex'));
    assert.equal(ds.count, 2);
    assert.deepEqual(tokenizeAll(file).map((r) => r.inputIds), expected.map((r) => r.inputIds));
  }
  // A JSON array compressed, and a plain file that is merely named .gz.
  const array = writeTemp('array.json.gz', zlib.gzipSync(JSON.stringify([{ question: 'Q?', answer: 'A.' }])));
  assert.equal(readDataset(array).format, 'qa');
  const named = writeTemp('plain.jsonl.gz', text);
  assert.equal(readDataset(named).compression, undefined);
  assert.equal(readDataset(plain).compression, undefined);
  // A truncated download is named as such.
  const cut = writeTemp('cut.jsonl.gz', gz.subarray(0, gz.length - 12));
  assert.throws(() => readDataset(cut), isBadInput(cut, /gzip-compressed but cannot be decompressed/));
});

test('other compressed and binary files say what they are instead of "invalid JSON"', () => {
  const cases: [number[], RegExp][] = [
    [[0x28, 0xb5, 0x2f, 0xfd, 0, 0], /zstd-compressed, not JSON or JSON Lines: decompress it first/],
    [[0x42, 0x5a, 0x68, 0x39, 0x31], /bzip2-compressed/],
    [[0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00, 0], /xz-compressed/],
    [[0x50, 0x4b, 0x03, 0x04, 0], /a zip archive/],
    [[0x50, 0x41, 0x52, 0x31, 0], /a Parquet file, not JSON or JSON Lines: convert it to JSON Lines first/],
  ];
  for (const [bytes, pattern] of cases) {
    const file = writeTemp('data.jsonl', Buffer.from(bytes));
    assert.throws(() => readDataset(file), isBadInput(file, pattern));
  }
});
