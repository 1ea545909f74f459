// GPT-2: LayerNorm with biases, learned absolute positions (no RoPE), a fused c_attn, a plain MLP
// (c_fc -> gelu -> c_proj), biases everywhere, and Conv1D weights stored [in, out]. Its config.json keeps the original
// key names (n_embd, n_head, ...), and its original checkpoints store tensors without the `transformer.` prefix.
import { extend } from './types';
import { llama, windowsNone } from './llama';

export const gpt2 = extend(llama, {
  modelType: 'gpt2',
  hfClass: 'GPT2LMHeadModel',
  modules: {
    // Both blocks of GPT-2 have a `c_proj`: the kinds carry their block, so a PEFT target never means both.
    kinds: ['attn.c_attn', 'attn.c_proj', 'mlp.c_fc', 'mlp.c_proj'],
    paths: { 'attn.c_attn': 'attn.c_attn', 'attn.c_proj': 'attn.c_proj', 'mlp.c_fc': 'mlp.c_fc', 'mlp.c_proj': 'mlp.c_proj' },
    layerPrefix: 'transformer.h',
    roles: { qkv: 'attn.c_attn', o: 'attn.c_proj', fc: 'mlp.c_fc', down: 'mlp.c_proj' },
    conv1d: true,
  },
  tensors: {
    embed: 'transformer.wte.weight', positions: 'transformer.wpe.weight', finalNorm: 'transformer.ln_f',
    norms: { input: 'ln_1', preMlp: 'ln_2' }, optionalPrefix: 'transformer.',
  },
  config: {
    keys: {
      hidden: 'n_embd', heads: 'n_head', kvHeads: undefined, layers: 'n_layer', intermediate: 'n_inner',
      eps: 'layer_norm_epsilon', maxPos: 'n_positions', act: ['activation_function'],
    },
    defaults: { tied: true, eps: 1e-5, act: 'gelu_new', maxPos: 1024, intermediateTimesHidden: 4 },
    positions: 'learned',
    flags: (c) => ({
      ...llama.config.flags(c), normType: 'layernorm',
      attnScale: c.raw.scale_attn_weights === false ? 1 : 1 / Math.sqrt(c.headDim),
      attnScaleByLayer: c.raw.scale_attn_by_inverse_layer_idx === true,
      attentionBias: true, mlpBias: true,
    }),
    slidingWindows: windowsNone,
  },
  biases: () => ({ attn: true, o: true, mlp: true }),
  synth: {
    config: (s) => ({
      n_embd: s.hiddenSize, n_layer: s.layers, n_head: s.heads, n_inner: s.intermediateSize, n_positions: 256, n_ctx: 256,
      activation_function: 'gelu_new', layer_norm_epsilon: 1e-5,
      vocab_size: s.vocabSize, tie_word_embeddings: s.tied, bos_token_id: 1, eos_token_id: 2, torch_dtype: 'float32',
    }),
    biases: () => ({ attn: true, o: true, mlp: true }),
  },
  ollama: false,
});
