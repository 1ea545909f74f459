// Hostile and mangled inputs: what a cloned repository's model folder or dataset can hold. Every one must end in a
// bad-input error that names the file (or in a normal result), quickly: never a hang, a crash of another kind, or
// memory exhausted. Seeded mutations of real files (the stories tokenizer, the fixture datasets, a safetensors
// header), then the limits one by one (sizes, vocabularies, chat templates that loop, recurse or grow, gzip bombs,
// giant records).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import { Template } from '@huggingface/jinja';
import { readDataset } from '../../src/engine/data/read';
import { readHeader, encodeSafetensors } from '../../src/engine/hf/safetensors';
import { BoundedTemplate } from '../../src/engine/hf/template';
import { ModelTokenizer } from '../../src/engine/hf/tokenizer';
import { DomLoraError } from '../../src/engine/runtime/errors';
import { INPUT_LIMITS } from '../../src/engine/runtime/inputs';
import { FIXTURES, STORIES, tmpDir } from '../helpers/reference';

/** mulberry32: a small seeded generator, so a failing case can be replayed by its seed. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** One random change to some bytes: a flipped byte, a cut, a doubled span, a deleted span, a hostile token inserted. */
function mutate(bytes: Buffer, r: () => number): Buffer {
  const at = Math.floor(r() * bytes.length);
  const pick = Math.floor(r() * 6);
  const INSERTS = ['{', '[', '"', '\\', '\u0000', '1e999', '-1', '99999999999', 'null', '{"$ref":', ']]]]', '\ud800', '"type":"Sequence"'];
  switch (pick) {
    case 0: { const b = Buffer.from(bytes); b[at] = Math.floor(r() * 256); return b; }
    case 1: return bytes.subarray(0, at);
    case 2: { const len = Math.floor(r() * 64); return Buffer.concat([bytes.subarray(0, at + len), bytes.subarray(at)]); }
    case 3: { const len = Math.floor(r() * 64); return Buffer.concat([bytes.subarray(0, at), bytes.subarray(at + len)]); }
    default: return Buffer.concat([bytes.subarray(0, at), Buffer.from(INSERTS[Math.floor(r() * INSERTS.length)]!), bytes.subarray(at)]);
  }
}

/** Runs `fn`; it must return, or throw a bad-input DomLoraError whose file lies in `dir` (or is one of `files`). */
function cleanOutcome(fn: () => unknown, where: string, label: string): 'ok' | 'refused' {
  const t0 = Date.now();
  try {
    fn();
    return 'ok';
  } catch (e) {
    assert.ok(e instanceof DomLoraError, `${label}: not a DomLoraError: ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`);
    assert.equal(e.code, 'bad-input', `${label}: ${e.message}`);
    assert.ok(e.file && (e.file === where || e.file.startsWith(where + path.sep)), `${label}: the error names no file of ${where}: ${e.message}`);
    return 'refused';
  } finally {
    assert.ok(Date.now() - t0 < 10_000, `${label}: took ${Date.now() - t0} ms`);
  }
}

test('fuzz: mutated tokenizer.json and tokenizer_config.json load or are refused naming the file', () => {
  const dir = tmpDir();
  const tok = fs.readFileSync(path.join(STORIES, 'tokenizer.json'));
  const cfgFile = path.join(STORIES, 'tokenizer_config.json');
  const cfg = fs.existsSync(cfgFile) ? fs.readFileSync(cfgFile) : Buffer.from('{"bos_token": "<s>", "eos_token": "</s>"}');
  const counts = { ok: 0, refused: 0 };
  for (let seed = 1; seed <= 150; seed++) {
    const r = rng(seed);
    const folder = path.join(dir, `m${seed}`);
    fs.mkdirSync(folder);
    let t = tok, c = cfg;
    for (let k = 1 + Math.floor(r() * 3); k > 0; k--) { if (r() < 0.5) t = mutate(t, r); else c = mutate(c, r); }
    fs.writeFileSync(path.join(folder, 'tokenizer.json'), t);
    fs.writeFileSync(path.join(folder, 'tokenizer_config.json'), c);
    counts[cleanOutcome(() => {
      const m = ModelTokenizer.load(folder);
      m.decode(m.encode('Once upon a time'));
    }, folder, `seed ${seed}`)]++;
  }
  assert.ok(counts.refused > 20 && counts.ok > 0, JSON.stringify(counts));
});

test('fuzz: mutated datasets read or are refused naming the file', () => {
  const dir = tmpDir();
  const sources = ['data/math/gsm8k_train.jsonl', 'data/instruction/alpaca_en_demo.json', 'data/conversation/capybara_16.jsonl']
    .map((f) => path.join(FIXTURES, f)).filter((f) => fs.existsSync(f));
  assert.ok(sources.length >= 2, 'fixture datasets');
  let refused = 0;
  for (let seed = 1; seed <= 120; seed++) {
    const r = rng(seed);
    const src = sources[seed % sources.length]!;
    let bytes = fs.readFileSync(src).subarray(0, 20_000);
    for (let k = 1 + Math.floor(r() * 3); k > 0; k--) bytes = mutate(bytes, r);
    if (seed % 7 === 0) bytes = zlib.gzipSync(bytes);
    const file = path.join(dir, `d${seed}${path.extname(src)}`);
    fs.writeFileSync(file, bytes);
    if (cleanOutcome(() => readDataset(file), file, `seed ${seed}`) === 'refused') refused++;
  }
  assert.ok(refused > 20, `refused ${refused}`);
});

test('fuzz: mutated safetensors headers are refused naming the file', () => {
  const dir = tmpDir();
  const good = Buffer.from(encodeSafetensors([{ name: 'a.weight', shape: [4, 8], data: new Float32Array(32) }, { name: 'b', shape: [3], data: new Float32Array(3) }], { format: 'pt' }));
  const headerEnd = 8 + Number(good.readBigUInt64LE(0));
  for (let seed = 1; seed <= 150; seed++) {
    const r = rng(seed);
    // Mutations inside the 8-byte length and the JSON header, where the parsing is.
    let head = good.subarray(0, headerEnd);
    for (let k = 1 + Math.floor(r() * 3); k > 0; k--) head = mutate(head, r);
    const file = path.join(dir, `w${seed}.safetensors`);
    fs.writeFileSync(file, Buffer.concat([head, good.subarray(headerEnd)]));
    cleanOutcome(() => readHeader(file), file, `seed ${seed}`);
  }
});

/** A model folder whose tokenizer is the stories one, with `config` merged into its tokenizer_config.json. */
function tokenizerFolder(dir: string, name: string, config: Record<string, unknown>, files: Record<string, string> = {}): string {
  const folder = path.join(dir, name);
  fs.mkdirSync(folder);
  fs.copyFileSync(path.join(STORIES, 'tokenizer.json'), path.join(folder, 'tokenizer.json'));
  fs.writeFileSync(path.join(folder, 'tokenizer_config.json'), JSON.stringify({ bos_token: '<s>', eos_token: '</s>', ...config }));
  for (const [f, text] of Object.entries(files)) fs.writeFileSync(path.join(folder, f), text);
  return folder;
}

/** Asserts `fn` throws a bad-input error naming `file` and matching `re`, within `ms`. */
function refused(fn: () => unknown, file: string, re: RegExp, ms = 5000): void {
  const t0 = Date.now();
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof DomLoraError && e.code === 'bad-input', String(e));
    assert.equal(e.file, file, e.message);
    assert.match(e.message, re);
    return true;
  });
  assert.ok(Date.now() - t0 < ms, `refused after ${Date.now() - t0} ms`);
}

const HI = [{ role: 'user', content: 'hi' }, { role: 'assistant', content: 'hello' }];

test('chat templates that loop, recurse or grow are stopped by the time and size limits, naming the file', () => {
  const dir = tmpDir();
  const cases: [string, string, RegExp][] = [
    ['nested ranges', '{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}', /ran longer than 2 s on one record/],
    ['a range bomb', '{% for i in range(10 ** 12) %}x{% endfor %}', /range\(\) of 1,000,000,000,000 numbers, over the 100,000/],
    ['doubling a string', '{% set ns = namespace(s="xxxxxxxxxxxxxxxx") %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s }}',
      /built a text of [\d,]+ characters, over the 33,554,432/],
    ['a wide indent', "{{ 'a\\nb' | indent(400000000) }}", /built a text|longer than JavaScript allows/],
    ['endless recursion', '{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}', /recursed without end/],
    ['recursion through two macros', '{% macro f(n) %}{{ g(n) }}{% endmacro %}{% macro g(n) %}{% if true %}{{ f(n + 1) }}{% endif %}{% endmacro %}{{ f(0) }}', /recursed without end/],
    ['a list from split', '{% set ns = namespace(s="x ") %}{% for i in range(18) %}{% set ns.s = ns.s + ns.s %}{% endfor %}{% for w in ns.s.split() %}{% endfor %}',
      /built a list of 262,144 items, over the 100,000/],
  ];
  for (const [name, template, re] of cases) {
    const folder = tokenizerFolder(dir, name.replace(/ /g, '-'), { chat_template: template });
    const tok = ModelTokenizer.load(folder);
    refused(() => tok.applyChatTemplate(HI), path.join(folder, 'tokenizer_config.json'), re);
  }
  // A template from chat_template.jinja is named as that file.
  const jinja = tokenizerFolder(dir, 'jinja-file', {}, { 'chat_template.jinja': '{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}' });
  refused(() => ModelTokenizer.load(jinja).applyChatTemplate(HI), path.join(jinja, 'chat_template.jinja'), /ran longer than/);
});

test('the bounded renderer renders real templates exactly as @huggingface/jinja does', () => {
  const templates = [
    // ChatML (Qwen 2.5), with a default system message.
    "{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}{%- else %}{{- '<|im_start|>system\\nYou are helpful.<|im_end|>\\n' }}{%- endif %}"
      + "{%- for message in messages %}{%- if not (message.role == 'system' and loop.first) %}{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}{%- endif %}{%- endfor %}"
      + "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}",
    // Llama 3 style: a namespace, strftime_now, tojson, trim.
    "{{- bos_token }}{%- set ns = namespace(n=0) %}{%- set date = strftime_now('%d %b %Y') %}{%- for m in messages %}{%- set ns.n = ns.n + 1 %}"
      + "{{- '<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n' + m['content'] | trim + '<|eot_id|>' }}{%- endfor %}{{- ns.n | tojson }}{{- date | length > 5 }}",
    // Gemma / Mistral style: raise_exception on a bad order, loop.index0, range.
    "{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('roles must alternate') }}{% endif %}"
      + "{% for i in range(2) %}{{ i }}{% endfor %}{{ '<start_of_turn>' + message['role'] + '\\n' + message['content'] + '<end_of_turn>\\n' }}{% endfor %}",
  ];
  for (const t of templates) {
    const items = { messages: HI, add_generation_prompt: true, bos_token: '<s>', eos_token: '</s>' };
    assert.equal(new BoundedTemplate(t).render(items), new Template(t).render(items));
  }
  assert.throws(() => new BoundedTemplate(templates[2]!).render({ messages: [HI[1], HI[0]] }), /roles must alternate/);
});

test('tokenizer files past their limits are refused by size before they are parsed, naming the file', () => {
  const dir = tmpDir();
  // Sparse files: their size is what counts, and they cost no disk.
  const big = tokenizerFolder(dir, 'big', {});
  fs.truncateSync(path.join(big, 'tokenizer.json'), INPUT_LIMITS.tokenizerJsonBytes + 1);
  refused(() => ModelTokenizer.load(big), path.join(big, 'tokenizer.json'), /is 128 MiB, over the 128 MiB DomLoRA reads for a tokenizer\.json/, 1000);
  const bigCfg = tokenizerFolder(dir, 'big-config', {});
  fs.truncateSync(path.join(bigCfg, 'tokenizer_config.json'), INPUT_LIMITS.tokenizerConfigBytes + 4096);
  refused(() => ModelTokenizer.load(bigCfg), path.join(bigCfg, 'tokenizer_config.json'), /over the 64 MiB DomLoRA reads for a tokenizer_config\.json/, 1000);
  const bigJinja = tokenizerFolder(dir, 'big-jinja', {}, { 'chat_template.jinja': '' });
  fs.truncateSync(path.join(bigJinja, 'chat_template.jinja'), INPUT_LIMITS.smallFileBytes + 1);
  refused(() => ModelTokenizer.load(bigJinja), path.join(bigJinja, 'chat_template.jinja'), /DomLoRA reads for a chat template/, 1000);
  // `{{ '` and `' }}` add 8 characters to the million.
  const longTemplate = tokenizerFolder(dir, 'long-template', { chat_template: `{{ '${'x'.repeat(INPUT_LIMITS.chatTemplateChars)}' }}` });
  refused(() => ModelTokenizer.load(longTemplate), path.join(longTemplate, 'tokenizer_config.json'), /the chat template is 1,048,584 characters long, over the 1,048,576/);
});

test('vocabularies past their limits are refused before tokenizers.js builds its tables', () => {
  const dir = tmpDir();
  const base = JSON.parse(fs.readFileSync(path.join(STORIES, 'tokenizer.json'), 'utf8'));
  const write = (name: string, json: unknown) => {
    const folder = tokenizerFolder(dir, name, {});
    fs.writeFileSync(path.join(folder, 'tokenizer.json'), JSON.stringify(json));
    return path.join(folder, 'tokenizer.json');
  };
  const huge = write('huge-vocab', { ...base, model: { ...base.model, vocab: new Array(INPUT_LIMITS.vocabEntries + 1).fill(0) } });
  refused(() => ModelTokenizer.load(path.dirname(huge)), huge, /model\.vocab has 4,194,305 entries, over the 4,194,304 DomLoRA reads/);
  const farId = write('far-id', { ...base, model: { ...base.model, vocab: { ...base.model.vocab, far: 2 ** 31 } } });
  refused(() => ModelTokenizer.load(path.dirname(farId)), farId, /model\.vocab holds the id 2147483648/);
  const addedId = write('added-id', { ...base, added_tokens: [{ id: 1e12, content: 'x', special: true }] });
  refused(() => ModelTokenizer.load(path.dirname(addedId)), addedId, /added_tokens holds the id 1000000000000/);
  const merges = write('merges', { ...base, model: { ...base.model, merges: new Array(INPUT_LIMITS.vocabEntries + 1).fill('') } });
  refused(() => ModelTokenizer.load(path.dirname(merges)), merges, /model\.merges has 4,194,305 entries/);
});

test('datasets past their limits: a file too large, a gzip bomb, a giant record in JSON Lines and in an array', () => {
  const dir = tmpDir();
  const sparse = path.join(dir, 'huge.jsonl');
  fs.writeFileSync(sparse, '');
  fs.truncateSync(sparse, INPUT_LIMITS.datasetBytes + 1);
  refused(() => readDataset(sparse), sparse, /is 512 MiB, over the 512 MiB DomLoRA reads for a dataset/, 1000);

  // Concatenated gzip members inflate one after the other: 9 x 64 MiB of zeros from about 600 kB.
  const member = zlib.gzipSync(Buffer.alloc(64 * 1024 * 1024), { level: 9 });
  const bomb = path.join(dir, 'bomb.jsonl.gz');
  fs.writeFileSync(bomb, Buffer.concat(Array.from({ length: 9 }, () => member)));
  assert.ok(fs.statSync(bomb).size < 2 * 1024 * 1024);
  refused(() => readDataset(bomb), bomb, /inflates to more than 512 MiB/, 20_000);

  const record = JSON.stringify({ text: 'x'.repeat(INPUT_LIMITS.recordBytes) });
  const lines = path.join(dir, 'giant.jsonl');
  fs.writeFileSync(lines, `{"text": "small"}\n${record}\n`);
  refused(() => readDataset(lines), lines, /line 2: the record is larger than 16 MiB/);
  const array = path.join(dir, 'giant.json');
  fs.writeFileSync(array, `[\n  {"text": "small"},\n  ${record}\n]\n`);
  refused(() => readDataset(array), array, /line 3: the record is larger than 16 MiB/);
  // Multi-byte text counts in bytes: 6 M characters of three bytes each.
  const wide = path.join(dir, 'wide.jsonl');
  fs.writeFileSync(wide, `${JSON.stringify({ text: '\u2713'.repeat(6 * 1024 * 1024) })}\n`);
  refused(() => readDataset(wide), wide, /line 1: the record is larger than 16 MiB/);
  // Just under the limit is read.
  const fits = path.join(dir, 'fits.jsonl');
  fs.writeFileSync(fits, `${JSON.stringify({ text: 'x'.repeat(INPUT_LIMITS.recordBytes - 100) })}\n`);
  assert.equal(readDataset(fits).count, 1);
});
