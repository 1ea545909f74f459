// `domlora info` on the real configs of the models issue #16 names, against their published parameter counts: SmolLM3-3B,
// OLMo-2-0425-1B and Granite-3.1-2B-Base. Each folder holds the model's config.json (test/fixtures/configs, transcribed
// from the Hugging Face repository; see the README there) and weight files that are headers only: every tensor the
// architecture stores, at its shape, over a hole (sparse), so a 3B model costs a few KB. The exact count is computed
// here from the shapes, by hand, and checked three ways: `info`'s count, the sum over the tensors in the headers, and
// the published figure it must round to.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { synthLayout } from '../../src/engine/hf/synth';
import { openModelFolder } from '../../src/engine/hf/folder';
import type { SynthShape } from '../../src/engine/arch/types';
import { FIXTURES, tmpDir } from '../helpers/reference';
import { safetensorsHeader } from '../helpers/hfcache';
import { cliJson } from '../helpers/cli';

type Raw = Record<string, unknown>;

const LLAMA_KINDS = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];

function fixture(name: string): Raw {
  return JSON.parse(fs.readFileSync(path.join(FIXTURES, 'configs', `${name}.config.json`), 'utf8')) as Raw;
}

/** A folder with this config.json and a sparse BF16 model.safetensors holding every tensor the architecture stores. */
function headersOnlyFolder(label: string, raw: Raw): string {
  const n = (k: string) => raw[k] as number;
  const shape: SynthShape = {
    arch: raw.model_type as string, hiddenSize: n('hidden_size'), intermediateSize: n('intermediate_size'), layers: n('num_hidden_layers'),
    heads: n('num_attention_heads'), kvHeads: n('num_key_value_heads'), vocabSize: n('vocab_size'), tied: raw.tie_word_embeddings === true,
    seed: 0, dtype: 'BF16', config: raw,
  };
  const { tensors } = synthLayout(shape);
  const dir = path.join(tmpDir(), label);
  fs.mkdirSync(dir);
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(raw, null, 2));
  const { header, size } = safetensorsHeader(tensors, 'BF16');
  const file = path.join(dir, 'model.safetensors');
  fs.writeFileSync(file, header);
  fs.truncateSync(file, size);
  return dir;
}

/** `domlora info --json` on the folder, and the elements of every tensor its headers list. */
function infoAndHeaders(dir: string): { info: { model: { parameters: number; modelType: string; tiedEmbeddings: boolean }; kinds: string[] }; stored: number } {
  const info = cliJson('info', dir, '--json').json;
  const { store } = openModelFolder(dir);
  const stored = store.names.reduce((s, name) => s + store.entry(name).shape.reduce((a, b) => a * b, 1), 0);
  return { info, stored };
}

test('SmolLM3-3B: info counts 3,075,098,624 parameters, the published 3.08B; NoPE on every 4th layer; Llama\'s 7 columns', () => {
  const raw = fixture('SmolLM3-3B');
  const dir = headersOnlyFolder('smollm3-3b', raw);
  // By hand: per layer q and o 2048x2048, k and v 2048x512 (4 kv heads of 128), gate/up/down 2048x11008, two RMSNorms;
  // 36 layers; the 128256 x 2048 embedding, tied to the head; the final norm.
  const H = 2048, I = 11008, KV = 4 * 128, V = 128256, L = 36;
  const exact = L * (2 * H * H + 2 * H * KV + 3 * H * I + 2 * H) + V * H + H;
  assert.equal(exact, 3_075_098_624);
  const { info, stored } = infoAndHeaders(dir);
  assert.equal(info.model.parameters, exact);
  assert.equal(stored, exact, 'the headers hold exactly the counted tensors');
  // Published: "3.08B" parameters (Hugging Face's SmolLM3 release post, huggingface.co/blog/smollm3, training
  // configuration), a rounded figure.
  assert.equal((exact / 1e9).toFixed(2), '3.08');
  assert.equal(info.model.tiedEmbeddings, true);
  assert.deepEqual(info.kinds, LLAMA_KINDS);
  const { cfg } = openModelFolder(dir);
  assert.deepEqual(cfg.ropeLayers.flatMap((r, l) => (r ? [] : [l])), [3, 7, 11, 15, 19, 23, 27, 31, 35]);
  assert.deepEqual([cfg.ropeTheta, cfg.slidingWindows.every((w) => w === null)], [5000000, true]);
});

test('OLMo-2-0425-1B: info counts 1,484,916,736 parameters, as the repository\'s float32 shards weigh; q/k norms over the projection', () => {
  const raw = fixture('OLMo-2-0425-1B');
  const dir = headersOnlyFolder('olmo-2-1b', raw);
  // By hand: per layer q, k, v, o 2048x2048 (16 kv heads of 128), gate/up/down 2048x8192, the two output norms and
  // the q and k norms, each 2048 wide (16 heads x 128); 16 layers; an untied 100352 x 2048 embedding and head; the
  // final norm.
  const H = 2048, I = 8192, V = 100352, L = 16;
  const exact = L * (4 * H * H + 3 * H * I + 4 * H) + 2 * V * H + H;
  assert.equal(exact, 1_484_916_736);
  const { info, stored } = infoAndHeaders(dir);
  assert.equal(info.model.parameters, exact);
  assert.equal(stored, exact);
  assert.equal(info.model.tiedEmbeddings, false);
  assert.deepEqual(info.kinds, LLAMA_KINDS);
  // Published: the repository's Files page (huggingface.co/allenai/OLMo-2-0425-1B/tree/main) lists the float32 weights
  // as model-00001-of-00002.safetensors 4.98 GB and model-00002-of-00002.safetensors 956 MB: 4 bytes a parameter, and
  // each size rounded, so 5.9305e9 to 5.9415e9 bytes (headers a few KB); and "1B" in its name, rounded further.
  assert.ok(4 * exact >= 4.975e9 + 955.5e6 && 4 * exact <= 4.985e9 + 956.5e6, `${4 * exact} bytes`);
  assert.equal((exact / 1e9).toFixed(2), '1.48');
  const { cfg } = openModelFolder(dir);
  assert.deepEqual([cfg.qkNorm, cfg.sandwichNorms, cfg.ropeTheta, cfg.normEps], ['projection', true, 500000, 1e-6]);
});

test('Granite-3.1-2B-Base: info counts 2,533,531,648 parameters, the published 2.5B; its four multipliers', () => {
  const raw = fixture('granite-3.1-2b-base');
  const dir = headersOnlyFolder('granite-3.1-2b', raw);
  // By hand: per layer q and o 2048x2048, k and v 2048x512 (8 kv heads of 64), gate/up/down 2048x8192, two RMSNorms;
  // 40 layers; the 49155 x 2048 embedding, tied to the head; the final norm.
  const H = 2048, I = 8192, KV = 8 * 64, V = 49155, L = 40;
  const exact = L * (2 * H * H + 2 * H * KV + 3 * H * I + 2 * H) + V * H + H;
  assert.equal(exact, 2_533_531_648);
  const { info, stored } = infoAndHeaders(dir);
  assert.equal(info.model.parameters, exact);
  assert.equal(stored, exact);
  // Published: "# Parameters 2.5B" for the 2B dense model, in the architecture table of the Granite 3.x model cards
  // (huggingface.co/ibm-granite/granite-3.1-2b-base), a rounded figure.
  assert.equal((exact / 1e9).toFixed(1), '2.5');
  assert.equal(info.model.tiedEmbeddings, true);
  assert.deepEqual(info.kinds, LLAMA_KINDS);
  const { cfg } = openModelFolder(dir);
  assert.deepEqual([cfg.embedScale, cfg.residualScale, cfg.attnScale, cfg.logitScale], [12, 0.22, 0.015625, 8]);
});
