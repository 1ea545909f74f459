// The dataset shapes people fine-tune on (test/fixtures/data/shapes: hand-written records with the real datasets'
// field names), gzip-compressed files, and the refusals: for each shape, what the prompt is and that exactly the
// answer is supervised.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import { readDataset } from '../../src/engine/data/read';
import { tokenizeDataset, type TokenizedRecord } from '../../src/engine/data/tokenize';
import { describeDataset, describeTokens } from '../../src/engine/data/summary';
import type { RecordFormat } from '../../src/engine/data/shapes';
import { ModelTokenizer } from '../../src/engine/hf/tokenizer';
import { DomLoraError } from '../../src/engine/runtime/errors';
import { FIXTURES, STORIES } from '../helpers/reference';

const SHAPES_DIR = path.join(FIXTURES, 'data/shapes');
const tok = ModelTokenizer.load(STORIES);
const tempRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'domlora-shapes-'));
after(() => fs.rmSync(tempRoot, { recursive: true, force: true }));
let tempCount = 0;

function writeTemp(name: string, data: string | Buffer): string {
  const file = path.join(tempRoot, `${tempCount++}-${name}`);
  fs.writeFileSync(file, data);
  return file;
}

const jsonl = (records: unknown[]) => records.map((r) => JSON.stringify(r)).join('\n') + '\n';

function tokenizeAll(file: string): TokenizedRecord[] {
  const result = tokenizeDataset(readDataset(file), tok, { seqLen: 100_000 });
  assert.equal(result.skipped, 0, result.skippedReasons.join('\n'));
  return result.records;
}

/** The decoded text of each contiguous run of supervised tokens: one run per answer. */
function supervisedRuns(rec: TokenizedRecord): string[] {
  const runs: string[] = [];
  let current: number[] = [];
  rec.lossMask.forEach((m, i) => {
    if (m === 1) current.push(rec.inputIds[i] as number);
    else if (current.length) { runs.push(tok.decode(current)); current = []; }
  });
  if (current.length) runs.push(tok.decode(current));
  return runs;
}

/**
 * What stories260K's tokenizer shows between two separately encoded pieces: it marks the start of every piece as a
 * word start (SentencePiece), which decodes as a space unless one of the two texts already had the space there
 * (the tokenizer moves it onto the marker). LLaMA-Factory and Axolotl encode prompt and answer apart the same way.
 */
const boundary = (before: string, after: string) => (tok.addsPrefixSpace && !before.endsWith(' ') && !after.startsWith(' ') ? ' ' : '');

/**
 * A single-turn record: the tokens before the first target decode to exactly `prompt` (its trailing space is carried
 * by the answer's first token), every token from there on is a target, and prompt + answer + EOS is the whole record.
 */
function assertExchange(rec: TokenizedRecord, prompt: string, answer: string): void {
  const first = rec.lossMask.indexOf(1);
  assert.ok(first > 1, 'a prompt comes first');
  assert.ok(rec.lossMask.slice(first).every((m) => m === 1), 'the answer, and nothing after it, is supervised');
  assert.equal(tok.decode(rec.inputIds.slice(0, first)), `<s> ${prompt.replace(/ $/, '')}`);
  assert.equal(tok.decode(rec.inputIds), `<s> ${prompt}${boundary(prompt, answer)}${answer}</s>`);
}

function isBadInput(file: string, ...patterns: RegExp[]) {
  return (err: unknown): boolean => {
    assert.ok(err instanceof DomLoraError, `expected a DomLoraError, got ${String(err)}`);
    assert.equal(err.code, 'bad-input');
    assert.equal(err.file, file);
    for (const p of patterns) assert.match(err.message, p);
    return true;
  };
}

function fixture(name: string, format: RecordFormat): { file: string; raw: Record<string, unknown>[]; records: TokenizedRecord[] } {
  const file = path.join(SHAPES_DIR, name);
  const ds = readDataset(file);
  assert.deepEqual(ds.shapes.map((s) => s.format), [format]);
  assert.deepEqual(ds.warnings, []);
  const records = tokenizeAll(file);
  records.forEach((r) => assert.equal(r.format, format));
  return { file, raw: ds.raw as Record<string, unknown>[], records };
}

// ---- Code ----------------------------------------------------------------------------------------------------------

test('HumanEval {prompt, canonical_solution}: the solution continues the prompt and only it is supervised', () => {
  const { raw, records } = fixture('humaneval.jsonl', 'humaneval');
  records.forEach((rec, i) => assertExchange(rec, raw[i]!.prompt as string, raw[i]!.canonical_solution as string));
});

test('MBPP {text, code, test_list} and sanitized {prompt, code, test_list}: the task and tests are the prompt, the code is supervised', () => {
  const { raw, records } = fixture('mbpp.jsonl', 'mbpp');
  const task = (r: Record<string, unknown>) => `${(r.text ?? r.prompt) as string}\nYour code should pass these tests:\n\n${(r.test_list as string[]).join('\n')}\n\n`;
  records.forEach((rec, i) => assertExchange(rec, task(raw[i]!), raw[i]!.code as string));
  assert.match(tok.decode(records[0]!.inputIds), /larger of two numbers\.\nYour code should pass these tests:\n\nassert larger\(1, 2\) == 2\nassert larger\(5, 3\) == 5\n\n def larger/);
});

test('Magicoder OSS-Instruct {problem, solution} and MATH: problem as prompt, solution supervised', () => {
  for (const name of ['magicoder_oss.jsonl', 'math_problem_solution.jsonl']) {
    const { raw, records } = fixture(name, 'problem-solution');
    assertExchange(records[0]!, `Problem:\n${raw[0]!.problem as string}\n\nSolution:\n`, raw[0]!.solution as string);
  }
});

test('instruction + response (Magicoder-Evol-Instruct, Dolly with context): Alpaca prompt, response supervised', () => {
  const evol = fixture('magicoder_evol.jsonl', 'instruction-response');
  assertExchange(evol.records[0]!, `### Instruction:\n${evol.raw[0]!.instruction as string}\n\n### Response:\n`, evol.raw[0]!.response as string);
  const dolly = fixture('dolly.jsonl', 'instruction-response');
  assertExchange(dolly.records[0]!, '### Instruction:\nWho wrote the story?\n\n### Input:\nThe story was written by Ann in 1901.\n\n### Response:\n', 'Ann wrote it.');
  assertExchange(dolly.records[1]!, '### Instruction:\nName a colour.\n\n### Response:\n', 'Blue.');
});

// ---- Maths and questions -------------------------------------------------------------------------------------------

test('MetaMathQA {query, response} and OpenOrca {system_prompt, question, response}: question as prompt, response supervised', () => {
  const mm = fixture('metamathqa.jsonl', 'query-response');
  assertExchange(mm.records[0]!, `Question: ${mm.raw[0]!.query as string}\nAnswer: `, mm.raw[0]!.response as string);
  const orca = fixture('openorca.jsonl', 'qa');
  assertExchange(orca.records[0]!, 'You are a helpful assistant.\n\nQuestion: What is the capital of Italy?\nAnswer: ', 'Rome.');
});

test('OpenAssistant {INSTRUCTION, RESPONSE} (Axolotl oasst): Alpaca prompt, RESPONSE supervised', () => {
  const { records } = fixture('oasst_axolotl.jsonl', 'oasst');
  assertExchange(records[0]!, '### Instruction:\nSay hello in French.\n\n### Response:\n', 'Bonjour.');
});

// ---- Chat ----------------------------------------------------------------------------------------------------------

test('MT-Bench {turns, reference}: each turn a user message, each reference answer supervised', () => {
  const { records } = fixture('mt_bench_reference.jsonl', 'mt-bench');
  assert.deepEqual(supervisedRuns(records[0]!), ['6</s>', '12</s>']);
  assert.match(tok.decode(records[0]!.inputIds), /User: What is 2 times 3\?\nAssistant: 6<\/s> User: And that times 2\?\nAssistant: 12<\/s>$/);
});

test('ShareGPT weights (SlimOrca): a gpt turn with weight 0 is not supervised; {role, content} turns; LIMA string conversations alternate', () => {
  const slim = fixture('slimorca_weights.jsonl', 'sharegpt');
  assert.deepEqual(supervisedRuns(slim.records[0]!), ['Yes.</s>']);
  assert.deepEqual(supervisedRuns(slim.records[1]!), ['Final answer.</s>']);
  assert.match(tok.decode(slim.records[1]!.inputIds), /Assistant: Draft answer\.<\/s> User: Again\?/);
  const roles = writeTemp('roles.jsonl', jsonl([{ conversations: [{ role: 'user', content: 'Hi?' }, { role: 'assistant', content: 'Hello.' }] }]));
  assert.deepEqual(supervisedRuns(tokenizeAll(roles)[0]!), ['Hello.</s>']);
  const lima = fixture('lima.jsonl', 'sharegpt');
  assert.deepEqual(supervisedRuns(lima.records[0]!), ['Put it in boiling water for nine minutes.</s>', 'Six minutes.</s>']);
  assert.match(tok.decode(lima.records[0]!.inputIds), /User: How do I boil an egg\?\nAssistant: Put it/);
});

test('OpenAI messages with weight 0 and the roles other tools write (developer, model, prompter)', () => {
  const file = writeTemp('weights.jsonl', jsonl([{
    messages: [
      { role: 'developer', content: 'Be terse.' }, { role: 'prompter', content: 'One?' }, { role: 'model', content: 'Uno.', weight: 0 },
      { role: 'user', content: 'Two?' }, { role: 'assistant', content: 'Dos.', weight: 1 },
    ],
  }]));
  const [rec] = tokenizeAll(file);
  assert.deepEqual(supervisedRuns(rec!), ['Dos.</s>']);
  assert.match(tok.decode(rec!.inputIds), /System: Be terse\.\nUser: One\?\nAssistant: Uno\.<\/s> User: Two\?\nAssistant: Dos\.<\/s>$/);
  const bad = writeTemp('weight.jsonl', jsonl([{ messages: [{ role: 'assistant', content: 'x', weight: 0.5 }] }]));
  assert.throws(() => tokenizeDataset(readDataset(bad), tok, { seqLen: 64 }), isBadInput(bad, /messages\[0\]\.weight is 0\.5; expected 0 or 1/));
});

test('preference pairs: prompt + chosen supervised, rejected unused (TRL text and messages, Orca DPO, LLaMA-Factory, UltraFeedback, HH-RLHF)', () => {
  const dpo = fixture('dpo_pairs.jsonl', 'preference');
  const [text, conversational, orca, alpaca, ultra] = dpo.records;
  assertExchange(text!, 'Capital of Spain?', 'Madrid.');
  assert.deepEqual(supervisedRuns(conversational!), ['Four.</s>']);
  assert.match(tok.decode(conversational!.inputIds), /User: Two plus two\?\nAssistant: Four\.<\/s>$/);
  assertExchange(orca!, 'Be brief.\n\nQuestion: Largest planet?\nAnswer: ', 'Jupiter.');
  assertExchange(alpaca!, '### Instruction:\nTranslate to German.\n\n### Input:\ncat\n\n### Response:\n', 'Katze');
  assert.deepEqual(supervisedRuns(ultra!), ['Hello!</s>']);
  for (const rec of dpo.records) assert.ok(!tok.decode(rec.inputIds).match(/Paris|Five|Mars|Hund|Go away/), 'rejected never appears');

  const hh = fixture('hh_rlhf.jsonl', 'preference');
  assert.deepEqual(supervisedRuns(hh.records[0]!), ['A small furry animal.</s>', 'Yes, they do.</s>']);
  assert.match(tok.decode(hh.records[0]!.inputIds), /User: What is a cat\?\nAssistant: A small furry animal\.<\/s> User: Do they purr\?\nAssistant: Yes, they do\.<\/s>$/);

  const lone = writeTemp('lone.jsonl', jsonl([{ chosen: 'Just an answer.', rejected: 'Another.' }]));
  assert.throws(() => tokenizeDataset(readDataset(lone), tok, { seqLen: 64 }), isBadInput(lone, /line 1 \(record 0\)/, /prompt cannot be told from the answer/));
});

test('Axolotl input_output {segments}: texts joined as written, the segments labelled true supervised', () => {
  const { records } = fixture('axolotl_segments.jsonl', 'segments');
  assert.deepEqual(supervisedRuns(records[0]!), ['Answer: 4']);
  // Each segment is encoded on its own, so each starts a word (see boundary above).
  assert.equal(tok.decode(records[0]!.inputIds), '<s> Question: 2+2?\n Answer: 4 \nThanks.');
  const bad = writeTemp('seg.jsonl', jsonl([{ segments: [{ label: 'yes', text: 'x' }] }]));
  assert.throws(() => tokenizeDataset(readDataset(bad), tok, { seqLen: 64 }), isBadInput(bad, /segments\[0\] must be an object \{label: true \| false, text\}/));
});

// ---- Refusals: no answer, or no telling which field is the answer ----------------------------------------------------

test('records whose answer would be dropped or that have none are refused, each with its reason', () => {
  const cases: [unknown, RegExp][] = [
    // MBPP with test_list missing: reading `text` alone would drop the code.
    [{ text: 'Write a function.', code: 'def f(): pass' }, /has `text` and also `code`: reading it as plain text would train on `text` alone and drop it \(MBPP records need text, code and test_list/],
    [{ text: 'A review.', label: 1 }, /`text` and also `label`/],
    [{ text: 'Q', output: 'A', extra: 'x' }, /`text` and also `output`, `extra`.*drop them/],
    [{ question_id: 81, category: 'writing', turns: ['Write a poem.', 'Shorter.'] }, /MT-Bench questions: `turns` holds only the user's turns/],
    [{ task_id: 'HumanEval/0', prompt: 'def f():\n', test: 'x', entry_point: 'f' }, /HumanEval without its `canonical_solution`/],
    [{ prompt: 'Tell me a joke.' }, /prompt-only record: there is no answer/],
    [{ question: 'Why?', context: 'Because.' }, /a `question` with no `answer` or `response`/],
    [{ message_id: 'a', parent_id: null, role: 'prompter', text: 'Hi' }, /one message of an OpenAssistant message tree, not a training example/],
  ];
  for (const [record, pattern] of cases) {
    const file = writeTemp('refused.jsonl', jsonl([{ text: 'fine' }, record]));
    assert.throws(() => readDataset(file), isBadInput(file, /line 2 \(record 1\): /, pattern, /its keys are /));
  }
  // Plain text keeps its metadata (C4's url and timestamp, RedPajama's meta) and numbers beside it.
  const c4 = writeTemp('c4.jsonl', jsonl([{ text: 'Some web page.', url: 'https://x', timestamp: '2019-04-25T12:57:54Z', meta: { a: 1 }, perplexity: 12.5 }]));
  assert.equal(readDataset(c4).format, 'text');
  // KTO data: a completion labelled undesirable must not be learned.
  const kto = writeTemp('kto.jsonl', jsonl([{ prompt: 'Hi', completion: 'Hello.', label: true }, { prompt: 'Hi', completion: 'Go away.', label: false }]));
  assert.throws(() => tokenizeDataset(readDataset(kto), tok, { seqLen: 64 }), isBadInput(kto, /line 2 \(record 1\): the completion is labelled undesirable \(label: false/));
});

// ---- What the user is told ---------------------------------------------------------------------------------------------

test('the detected shape, a warning for mixed shapes, and the supervised token counts', () => {
  const ds = readDataset(path.join(SHAPES_DIR, 'humaneval.jsonl'));
  assert.deepEqual(describeDataset(ds), [
    'humaneval.jsonl: 2 records, shape humaneval {prompt, canonical_solution} (HumanEval); supervised: canonical_solution, as the continuation of prompt',
  ]);
  const t = tokenizeDataset(ds, tok, { seqLen: 512 });
  const supervised = t.records.reduce((a, r) => a + r.lossMask.filter((m) => m === 1).length, 0);
  const total = t.records.reduce((a, r) => a + r.inputIds.length, 0);
  assert.equal(t.supervisedTokens, supervised);
  assert.equal(t.tokens, total);
  assert.ok(supervised > 0 && supervised < total);
  assert.equal(describeTokens(t), `${supervised} of ${total} tokens supervised (${((100 * supervised) / total).toFixed(1)}%) in 2 records`);

  const mixed = writeTemp('mixed.jsonl', jsonl([
    { instruction: 'A', output: 'B' }, { text: 'plain words' }, { instruction: 'C', output: 'D' },
  ]));
  const m = readDataset(mixed);
  assert.equal(m.format, 'alpaca');
  assert.deepEqual(m.shapes, [{ format: 'alpaca', count: 2, firstLine: 1 }, { format: 'text', count: 1, firstLine: 2 }]);
  assert.equal(m.warnings.length, 1);
  assert.match(m.warnings[0]!, /mixes record shapes: 2 alpaca \{instruction, input\?, output\} \(first at line 1\), 1 text \{text\} \(first at line 2\)/);
  assert.match(m.warnings[0]!, /plain-text records are supervised on every token/);
  assert.match(describeDataset(m).join('\n'), /2 of 3 records, shape alpaca[^\n]*\n[^\n]*1 of 3 records, shape text[^\n]*\nwarning: the file mixes/);
  const mt = tokenizeDataset(m, tok, { seqLen: 512 });
  assert.deepEqual(mt.byFormat.map((f) => [f.format, f.records]), [['alpaca', 2], ['text', 1]]);
  assert.match(describeTokens(mt), /: alpaca \d+ of \d+ in 2, text \d+ of \d+ in 1$/);
});

// ---- Compressed files ----------------------------------------------------------------------------------------------

test('a gzip file says so in its description and reads like the plain one', () => {
  const plain = path.join(SHAPES_DIR, 'humaneval.jsonl');
  const file = writeTemp('HumanEval.jsonl.gz', zlib.gzipSync(fs.readFileSync(plain)));
  const ds = readDataset(file);
  assert.equal(ds.format, 'humaneval');
  assert.match(describeDataset(ds)[0]!, /^\d+-HumanEval\.jsonl\.gz \(gzip\): 2 records, shape humaneval/);
  assert.deepEqual(tokenizeAll(file).map((r) => r.inputIds), tokenizeAll(plain).map((r) => r.inputIds));
});
