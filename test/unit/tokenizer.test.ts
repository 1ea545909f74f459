import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ModelTokenizer } from '../../src/engine/hf/tokenizer';
import { DomLoraError } from '../../src/engine/runtime/errors';

// Tests run from the project root; the model is in test/fixtures.
const MODEL = path.resolve(process.cwd(), 'test/fixtures/models/stories260K');

interface Golden { [key: string]: { text?: string; ids_with_bos: number[] } }
const golden = JSON.parse(fs.readFileSync(path.join(MODEL, 'golden_reference.json'), 'utf8')) as Golden;

const tempDirs: string[] = [];
after(() => { for (const dir of tempDirs) fs.rmSync(dir, { recursive: true, force: true }); });

function tempDir(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'domlora-tok-'));
  tempDirs.push(dir);
  return dir;
}

/** A copy of stories260K's tokenizer.json in a temp folder, with the given tokenizer_config and extra files. */
function modelCopy(config: Record<string, unknown> | undefined, extra: Record<string, string> = {}): string {
  const dir = tempDir();
  fs.copyFileSync(path.join(MODEL, 'tokenizer.json'), path.join(dir, 'tokenizer.json'));
  if (config) fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify(config));
  for (const [name, text] of Object.entries(extra)) fs.writeFileSync(path.join(dir, name), text);
  return dir;
}

function isBadInput(file: string, pattern: RegExp) {
  return (err: unknown): boolean => {
    assert.ok(err instanceof DomLoraError, `expected a DomLoraError, got ${String(err)}`);
    assert.equal(err.code, 'bad-input');
    assert.equal(err.file, file);
    assert.match(err.message, pattern);
    return true;
  };
}

const CHATML = "{% for m in messages %}{{ '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

test('stories260K: encode reproduces the golden token ids, BOS included', () => {
  const tok = ModelTokenizer.load(MODEL);
  for (const key of ['tinystories_greedy_text', 'gsm8k_train_0_question']) {
    const entry = golden[key];
    assert.ok(entry?.text);
    assert.deepEqual(tok.encode(entry.text), entry.ids_with_bos, key);
  }
  assert.deepEqual(tok.encode('Once upon a time'), golden.prompt_once_upon_a_time?.ids_with_bos);
});

test('stories260K: special tokens, vocabulary and flags come from the config', () => {
  const tok = ModelTokenizer.load(MODEL);
  assert.equal(tok.bosId, 1);
  assert.equal(tok.eosId, 2);
  assert.equal(tok.bosToken, '<s>');
  assert.equal(tok.eosToken, '</s>');
  assert.equal(tok.vocabSize, 512);
  assert.equal(tok.addBos, true);
  assert.equal(tok.addEos, false);
  assert.equal(tok.chatTemplate, undefined);
  assert.equal(tok.tokenToId('</s>'), 2);
});

test('encode without special tokens has no BOS, and decode inverts it', () => {
  const tok = ModelTokenizer.load(MODEL);
  const text = 'Lily saw a big, red ball.\n  It was "high" — 48/2 = 24 (naïve 日本)';
  const ids = tok.encode(text, { addSpecial: false });
  assert.notEqual(ids[0], 1);
  assert.deepEqual([1, ...ids], tok.encode(text));
  assert.equal(tok.decode(ids), text);
  assert.equal(tok.decode([...ids, 2]), `${text}</s>`);
  assert.deepEqual(tok.encode(''), [1]);
  assert.deepEqual(tok.encode('', { addSpecial: false }), []);
});

test('add_bos_token/add_eos_token in the config decide BOS and EOS', () => {
  const base = JSON.parse(fs.readFileSync(path.join(MODEL, 'tokenizer_config.json'), 'utf8')) as Record<string, unknown>;
  const noBos = ModelTokenizer.load(modelCopy({ ...base, add_bos_token: false, add_eos_token: true }));
  assert.equal(noBos.addBos, false);
  assert.equal(noBos.addEos, true);
  const ids = noBos.encode('Once upon a time');
  assert.deepEqual(ids, [...(golden.prompt_once_upon_a_time?.ids_with_bos ?? []).slice(1), 2]);
});

test('without the flags, BOS/EOS are inferred from the post-processor; special tokens may be AddedToken objects', () => {
  // The post-processor of stories260K puts <s> before the sequence and nothing after it.
  const dir = modelCopy({ bos_token: { content: '<s>', __type: 'AddedToken' }, eos_token: '</s>' });
  const tok = ModelTokenizer.load(dir);
  assert.equal(tok.bosId, 1);
  assert.equal(tok.addBos, true);
  assert.equal(tok.addEos, false);

  // No tokenizer_config.json at all: special_tokens_map.json names the tokens.
  const bare = modelCopy(undefined, { 'special_tokens_map.json': JSON.stringify({ bos_token: '<s>', eos_token: '</s>' }) });
  const tok2 = ModelTokenizer.load(bare);
  assert.equal(tok2.eosId, 2);
  assert.equal(tok2.addBos, true);

  // A post-processor that adds nothing (Qwen-style ByteLevel) means no BOS.
  const tokenizerJson = JSON.parse(fs.readFileSync(path.join(MODEL, 'tokenizer.json'), 'utf8')) as Record<string, unknown>;
  const plain = modelCopy({ bos_token: '<s>', eos_token: '</s>' },
    { 'tokenizer.json': JSON.stringify({ ...tokenizerJson, post_processor: null }) });
  const tok3 = ModelTokenizer.load(plain);
  assert.equal(tok3.addBos, false);
  assert.deepEqual(tok3.encode('Once upon a time'), golden.prompt_once_upon_a_time?.ids_with_bos.slice(1));
});

test('chat templates: string, list form with a default, chat_template.jinja; rendering passes the special tokens', () => {
  const messages = [{ role: 'user', content: 'Hi' }, { role: 'assistant', content: 'Hello' }];
  const withBos = `{{ bos_token }}${CHATML}`;
  const fromString = ModelTokenizer.load(modelCopy({ bos_token: '<s>', eos_token: '</s>', chat_template: withBos }));
  assert.equal(fromString.applyChatTemplate(messages),
    '<s><|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello<|im_end|>\n');
  assert.equal(fromString.applyChatTemplate(messages.slice(0, 1), { addGenerationPrompt: true }),
    '<s><|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n');

  const fromList = ModelTokenizer.load(modelCopy({
    bos_token: '<s>', chat_template: [{ name: 'tool_use', template: 'TOOLS' }, { name: 'default', template: CHATML }],
  }));
  assert.equal(fromList.chatTemplate, CHATML);

  const fromFile = ModelTokenizer.load(modelCopy({ bos_token: '<s>' }, { 'chat_template.jinja': CHATML }));
  assert.equal(fromFile.chatTemplate, CHATML);

  const failing = ModelTokenizer.load(modelCopy({ chat_template: "{{ raise_exception('roles must alternate') }}" }));
  assert.throws(() => failing.applyChatTemplate(messages), /roles must alternate/);
});

test('missing or invalid tokenizer files are bad input naming the file', () => {
  const empty = tempDir();
  assert.throws(() => ModelTokenizer.load(empty), isBadInput(path.join(empty, 'tokenizer.json'), /no tokenizer\.json/));

  const broken = modelCopy(undefined, { 'tokenizer_config.json': '{"bos_token": "<s>",' });
  assert.throws(() => ModelTokenizer.load(broken), isBadInput(path.join(broken, 'tokenizer_config.json'), /invalid JSON/));

  const notObject = modelCopy(undefined, { 'tokenizer.json': '[1, 2]' });
  assert.throws(() => ModelTokenizer.load(notObject), isBadInput(path.join(notObject, 'tokenizer.json'), /JSON object/));
});
