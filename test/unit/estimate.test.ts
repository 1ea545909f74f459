// Job sizing before any weight is read: what fits the wasm heap, and the refusal when it does not.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { normaliseConfig } from '../../src/engine/config';
import { estimateJob, assertFits } from '../../src/engine/estimate';
import { DomLoraError } from '../../src/engine/errors';

const llama = (h: number, i: number, l: number, heads: number, kv: number, v: number) => normaliseConfig({
  model_type: 'llama', hidden_size: h, intermediate_size: i, num_hidden_layers: l, num_attention_heads: heads, num_key_value_heads: kv,
  vocab_size: v, tie_word_embeddings: true });

test('a SmolLM-135M-shaped probe fits the wasm heap; an 8B model does not, and the refusal names what would fit', () => {
  const small = estimateJob({ cfg: llama(576, 1536, 30, 9, 3, 49152), backend: 'wasm', threads: 2, tokensPerRecord: 512, backwardPasses: 8 });
  assert.ok(small.fits, small.note);
  assert.ok(small.heapBytes > 1e9 && small.heapBytes < 0.9 * 4 * 1024 ** 3, `${small.heapBytes}`);
  assert.ok(small.seconds > 1 && small.seconds < 600);
  const big = estimateJob({ cfg: llama(4096, 14336, 32, 32, 8, 128256), backend: 'wasm', threads: 2, tokensPerRecord: 512, backwardPasses: 32 });
  assert.equal(big.fits, false);
  assert.throws(() => assertFits(big, 'wasm'), (e: unknown) => e instanceof DomLoraError && e.code === 'bad-input' && /4 GiB/.test(e.message) && /--backend tensorflow/.test(e.message));
  // More tokens, more activations; DomLoRA's lowest layer keeps fewer layers' activations (a model that stays resident).
  const mid = llama(256, 768, 12, 4, 2, 32000);
  const base = estimateJob({ cfg: mid, backend: 'wasm', threads: 1, tokensPerRecord: 512, backwardPasses: 8 });
  const longer = estimateJob({ cfg: mid, backend: 'wasm', threads: 1, tokensPerRecord: 1024, backwardPasses: 8 });
  assert.ok(!base.stream && !longer.stream);
  assert.ok(longer.activationBytes > 2 * base.activationBytes);
  const shallow = estimateJob({ cfg: mid, backend: 'wasm', threads: 1, tokensPerRecord: 512, backwardPasses: 8, lowestLayer: 8 });
  assert.ok(shallow.activationBytes < base.activationBytes);
});
