#!/usr/bin/python3
"""An independent PyTorch reference for DomLoRA's tests: Hugging Face decoders, LoRA, PAGE, gradients and AdamW.

Architectures (config.json's model_type): llama, mistral, qwen2, qwen3, gemma, gemma2, gemma3_text, phi3, gpt2, gpt_neox,
smollm3, olmo2, granite, each written from its transformers modeling file (see ARCHS and forward below).

Usage:  /usr/bin/python3 test/reference/llama_ref.py REQUEST.json      (or "-" to read the request from stdin)
Prints one JSON object on stdout. On a bad request it prints {"error": "..."} on stdout, the message on stderr, and
exits with status 2.

Everything here is written from the definitions (HF LlamaForCausalLM, PEFT LoRA, DESIGN.md section 1), not from the
TypeScript engine, so that agreement between the two means something. It deliberately takes the slow and obvious
route where the engine takes a fast one: the full weight gradient dL/dW comes from autograd on W itself, never from
the Gram-matrix identity the engine uses. Every record runs alone (batch 1, no padding), so no mask or padding
convention can hide a bug.

Request fields (all modes): model_dir, records [{input_ids, loss_mask?}], mode, dtype ("float64" default, or
"float32"), time (bool). Mode-specific fields are described at each mode's handler below and in README.md.
"""

import json
import math
import os
import sys
import time

sys.dont_write_bytecode = True  # keep test/reference free of __pycache__ (this tree is shared and committed)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from safetensors_np import read_safetensors, write_safetensors  # noqa: E402,F401  (writer re-exported for tests)

# One thread: the tiny test models gain nothing from threads, and torch threads on top of OpenBLAS's own threads
# oversubscribe the two cores here (engine-bench.md section 2 measured 2.9x slower).
torch.set_num_threads(1)

# The candidate modules of PAGE, in the order the engine reports them: layer-major, then this kind order.
KINDS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
PEFT_PREFIX = "base_model.model."
# The Gemma family: RMSNorm times (1 + w), embeddings times sqrt(hidden); from Gemma 2 on, sandwich norms around
# attention and MLP and query_pre_attn_scalar in the attention scale.
GEMMA = ("gemma", "gemma2", "gemma3_text")
SANDWICH = ("gemma2", "gemma3_text")

_LLAMA = {"prefix": "model.layers", "kinds": KINDS,
          "paths": {k: ("mlp." if k in ("gate_proj", "up_proj", "down_proj") else "self_attn.") + k for k in KINDS}}
# Per model_type: where layer N lives, the candidate kinds (heatmap columns) and each kind's path under the layer.
ARCHS = {
    "llama": _LLAMA, "mistral": _LLAMA, "qwen2": _LLAMA, "qwen3": _LLAMA, "gemma": _LLAMA, "gemma2": _LLAMA, "gemma3_text": _LLAMA,
    "smollm3": _LLAMA, "olmo2": _LLAMA, "granite": _LLAMA,
    # Phi-3 fuses q/k/v and gate/up; PEFT adapts the fused modules.
    "phi3": {"prefix": "model.layers", "kinds": ("qkv_proj", "o_proj", "gate_up_proj", "down_proj"),
             "paths": {"qkv_proj": "self_attn.qkv_proj", "o_proj": "self_attn.o_proj",
                       "gate_up_proj": "mlp.gate_up_proj", "down_proj": "mlp.down_proj"}},
    # GPT-2: transformers' Conv1D stores W as (in, out) and computes x @ W + b.
    "gpt2": {"prefix": "transformer.h", "kinds": ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"),
             "paths": {k: k for k in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")}, "conv1d": True},
    # GPT-NeoX / Pythia (GPTNeoXForCausalLM): one query_key_value per layer, [q, k, v] interleaved per head. The bare
    # kind names are unambiguous PEFT targets (".dense" never matches ".dense_h_to_4h").
    "gpt_neox": {"prefix": "gpt_neox.layers", "kinds": ("query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"),
                 "paths": {"query_key_value": "attention.query_key_value", "dense": "attention.dense",
                           "dense_h_to_4h": "mlp.dense_h_to_4h", "dense_4h_to_h": "mlp.dense_4h_to_h"}},
}


class RefError(Exception):
    """A bad request or a bad input file: reported as {"error": ...} with exit status 2."""


# ----------------------------------------------------------------------------------------------------------------
# Config and weights


class ArchConfig:
    """The keys of config.json that the forward pass reads, with transformers' defaults per model_type."""

    def __init__(self, d):
        def need(key):
            if key not in d:
                raise RefError(f"config.json lacks {key!r}")
            return d[key]

        mt = d.get("model_type", "llama")
        if mt not in ARCHS:
            raise RefError(f"model_type {mt!r} is not supported (supported: {', '.join(ARCHS)})")
        self.model_type = mt
        arch = ARCHS[mt]
        self.layer_prefix, self.kinds, self.paths = arch["prefix"], tuple(arch["kinds"]), arch["paths"]
        self.conv1d = bool(arch.get("conv1d"))
        self.gemma = mt in GEMMA
        self.sandwich = mt in SANDWICH
        gpt2, neox, gemma3 = mt == "gpt2", mt == "gpt_neox", mt == "gemma3_text"
        if gpt2:  # GPT2Config's own key names
            self.n_embd = int(need("n_embd"))
            self.n_layer = int(need("n_layer"))
            self.n_head = self.n_kv_head = int(need("n_head"))
            self.n_inter = int(d.get("n_inner") or 4 * self.n_embd)
            self.head_dim = self.n_embd // self.n_head
            self.eps = float(d.get("layer_norm_epsilon", 1e-5))
            self.max_pos = int(d.get("n_positions", 1024))
        elif neox:  # GPTNeoXConfig: no num_key_value_heads, no head_dim, LayerNorm with layer_norm_eps
            self.n_embd = int(need("hidden_size"))
            self.n_inter = int(need("intermediate_size"))
            self.n_layer = int(need("num_hidden_layers"))
            self.n_head = self.n_kv_head = int(need("num_attention_heads"))
            if self.n_embd % self.n_head:
                raise RefError("hidden_size must be a multiple of num_attention_heads")
            self.head_dim = self.n_embd // self.n_head  # GPTNeoXAttention: head_size = hidden_size // num_heads
            self.eps = float(d.get("layer_norm_eps", 1e-5))
            self.max_pos = int(d.get("max_position_embeddings") or 2048)
        else:
            self.n_embd = int(need("hidden_size"))
            self.n_inter = int(need("intermediate_size"))
            self.n_layer = int(need("num_hidden_layers"))
            self.n_head = int(need("num_attention_heads"))
            self.n_kv_head = int(d.get("num_key_value_heads") or self.n_head)
            default_hd = {"gemma": 256, "gemma2": 256, "gemma3_text": 256, "qwen3": 128}.get(mt, self.n_embd // self.n_head)
            self.head_dim = int(d.get("head_dim") or default_hd)
            self.eps = float(d.get("rms_norm_eps", 1e-5 if mt in ("phi3", "olmo2") else 1e-6))
            self.max_pos = int(d.get("max_position_embeddings") or (131072 if gemma3 else 2048))
        self.vocab_size = int(need("vocab_size"))
        # transformers' defaults: Gemma 2, Gemma 3 and GPT-2 tie the output projection to the embeddings, the others
        # do not.
        self.tied = bool(d.get("tie_word_embeddings", mt in ("gemma", "gemma2", "gemma3_text", "gpt2", "smollm3")))
        # transformers v5 moves rope_theta and the scaling parameters into rope_parameters (for Gemma 3: one dict per
        # layer type, {"full_attention": {...}, "sliding_attention": {...}}).
        rope_params = d.get("rope_parameters") or {}
        per_type = gemma3 and isinstance(rope_params.get("full_attention"), dict)
        local_params = (rope_params.get("sliding_attention") or {}) if per_type else {}
        if per_type:
            rope_params = rope_params["full_attention"]
        # SmolLM3Config's default base is 2,000,000 (transformers 4.53).
        self.rope_theta = float(d.get("rope_theta") or rope_params.get("rope_theta")
                                or {"gemma3_text": 1_000_000.0, "smollm3": 2_000_000.0}.get(mt, 10000.0))
        scaling = d.get("rope_scaling") or (rope_params if rope_params.get("rope_type", "default") != "default" else None)
        self.rope_scaling = scaling
        # Gemma 3: the sliding layers rotate with a second RoPE, base rope_local_base_freq (default 10000) and no
        # scaling (Gemma3TextModel deep-copies the config, sets rope_theta = rope_local_base_freq and rope_scaling =
        # {"rope_type": "default"}); the full-attention layers use rope_theta with rope_scaling.
        self.local_rope_theta, self.local_rope_scaling = None, None
        if gemma3:
            self.local_rope_theta = float(d.get("rope_local_base_freq") or local_params.get("rope_theta") or 10000.0)
            if local_params.get("rope_type", "default") != "default":
                self.local_rope_scaling = local_params  # only a v5 config can ask for it
        # Phi-4-mini (Phi3Attention): RoPE over the first int(head_dim * partial_rotary_factor) dims of each head.
        partial = d.get("partial_rotary_factor") or rope_params.get("partial_rotary_factor") or 1.0
        if neox:
            # GPTNeoXConfig (transformers 4.4x): rotary_pct (default 0.25) and rotary_emb_base win, its __init__ copies
            # them over partial_rotary_factor / rope_theta; configs written by v5 carry only the latter.
            def first(*vals):
                return next((v for v in vals if v is not None), None)

            partial = first(d.get("rotary_pct"), d.get("partial_rotary_factor"),
                            rope_params.get("partial_rotary_factor"), 0.25)
            self.rope_theta = float(first(d.get("rotary_emb_base"), d.get("rope_theta"),
                                          rope_params.get("rope_theta"), 10000.0))
        self.rotary_dim = int(self.head_dim * partial)
        # GPTNeoXLayer: attention and MLP both read the layer input (true, the default), or the MLP reads x + attn.
        self.parallel_residual = bool(d.get("use_parallel_residual", True)) if neox else False
        self.original_max_pos = d.get("original_max_position_embeddings")  # Phi-3's LongRoPE reads it at top level
        if gpt2:
            act = d.get("activation_function", "gelu_new")
        elif mt == "gemma":
            # GemmaMLP (transformers 4.4x): hidden_activation, else gelu_pytorch_tanh whatever hidden_act says.
            act = d.get("hidden_activation") or "gelu_pytorch_tanh"
        elif self.gemma:
            act = d.get("hidden_activation") or d.get("hidden_act") or "gelu_pytorch_tanh"
        else:
            act = d.get("hidden_act", "gelu" if neox else "silu")
        if act not in ACTS:
            raise RefError(f"hidden_act {act!r} is not supported ({', '.join(ACTS)})")
        self.act = act
        if self.n_head % self.n_kv_head:
            raise RefError("num_attention_heads must be a multiple of num_key_value_heads")
        # Gemma 2: scores scale by query_pre_attn_scalar^-1/2 and are soft-capped, as are the final logits.
        # Gemma 3: the same scale; final logits soft-capped only when final_logit_softcapping is a number (default
        # null). Its attention is never soft-capped: Gemma3Attention keeps config.attn_logit_softcapping but does not
        # pass it to the attention function (eager, sdpa, flash alike), so transformers ignores that key.
        self.attn_scale = (float(d.get("query_pre_attn_scalar") or 256) ** -0.5 if self.sandwich
                           else 1.0 / math.sqrt(self.head_dim))
        # Granite: attention_multiplier replaces the scale; embedding_multiplier, residual_multiplier and
        # logits_scaling (GraniteConfig: all four default to 1.0).
        self.embedding_multiplier = self.residual_multiplier = self.logits_scaling = 1.0
        if mt == "granite":
            self.attn_scale = float(d.get("attention_multiplier", 1.0))
            self.embedding_multiplier = float(d.get("embedding_multiplier", 1.0))
            self.residual_multiplier = float(d.get("residual_multiplier", 1.0))
            self.logits_scaling = float(d.get("logits_scaling", 1.0))
        self.attn_softcap = d.get("attn_logit_softcapping", 50.0) if mt == "gemma2" else None
        self.final_softcap = {"gemma2": d.get("final_logit_softcapping", 30.0),
                              "gemma3_text": d.get("final_logit_softcapping")}.get(mt)
        # q_norm / k_norm on each query and key head before RoPE (Qwen3: RMSNorm; Gemma 3: RMSNorm times 1 + w);
        # OLMo 2's over the whole q and k projections.
        self.qk_norm = {"qwen3": "head", "gemma3_text": "head", "olmo2": "projection"}.get(mt)
        # OLMo 2: no norm before the blocks, post_attention_layernorm / post_feedforward_layernorm on their outputs.
        self.post_norms = mt == "olmo2"
        # SmolLM3: per layer, whether RoPE applies (no_rope_layers, 1 = RoPE; default: every 4th layer without).
        self.rope_layers = self._rope_layers(d) if mt == "smollm3" else [True] * self.n_layer
        self.windows = self._windows(d)
        # Per layer: rotate with the local RoPE (Gemma 3's sliding layers, even when sliding_window is null).
        self.local_rope = self._sliding_layers(d) if gemma3 else [False] * self.n_layer

    def _rope_layers(self, d):
        """SmolLM3Config: no_rope_layers, else [int((i + 1) % no_rope_layer_interval != 0) for i in layers]."""
        flags = d.get("no_rope_layers")
        if flags is None:
            interval = int(d.get("no_rope_layer_interval", 4))
            flags = [int((i + 1) % interval != 0) for i in range(self.n_layer)]
        if len(flags) < self.n_layer:
            raise RefError(f"no_rope_layers has {len(flags)} entries for {self.n_layer} layers")
        return [bool(flags[i]) for i in range(self.n_layer)]

    def _sliding_layers(self, d):
        """Gemma3TextConfig: layer_types when given, else sliding_window_pattern (default 6): layer i slides iff
        (i + 1) % pattern != 0, so every pattern-th layer is full attention."""
        types = d.get("layer_types")
        if types:
            if len(types) != self.n_layer:
                raise RefError(f"layer_types has {len(types)} entries for {self.n_layer} layers")
            return [t == "sliding_attention" for t in types]
        pattern = int(d.get("sliding_window_pattern") or 6)
        return [(i + 1) % pattern != 0 for i in range(self.n_layer)]

    def _windows(self, d):
        """Per layer, the sliding window (a query sees keys i - W < j <= i) or None, as transformers decides it."""
        sw, mt = d.get("sliding_window"), self.model_type
        if mt == "gemma3_text":
            # Gemma3TextConfig's sliding_window defaults to 4096; an explicit null leaves the sliding layers unmasked
            # (transformers would refuse to build their mask) but still on the local RoPE.
            sw = d.get("sliding_window", 4096)
            if sw is None:
                return [None] * self.n_layer
            return [int(sw) if s else None for s in self._sliding_layers(d)]
        if mt == "gemma2":
            sw = d.get("sliding_window", 4096)  # Gemma2Config's default
        if mt == "smollm3" and sw is not None:
            # SmolLM3Config: layer_types, else sliding on the NoPE layers when use_sliding_window; the model masks
            # every sliding_attention layer with sliding_window.
            types = d.get("layer_types") or [
                "sliding_attention" if d.get("use_sliding_window", False) and not r else "full_attention" for r in self.rope_layers]
            return [sw if t == "sliding_attention" else None for t in types]
        if sw is None or mt in ("llama", "gemma", "gpt2", "gpt_neox", "smollm3", "olmo2", "granite"):
            return [None] * self.n_layer
        if mt in ("qwen2", "qwen3") and not d.get("use_sliding_window", False):
            return [None] * self.n_layer  # Qwen2Config sets sliding_window = None unless use_sliding_window
        if d.get("layer_types"):
            return [sw if t == "sliding_attention" else None for t in d["layer_types"]]
        if mt in ("mistral", "phi3"):
            return [sw] * self.n_layer
        if mt in ("qwen2", "qwen3"):
            use = d.get("use_sliding_window", False)
            return [sw if use and i >= int(d.get("max_window_layers", 0)) else None for i in range(self.n_layer)]
        return [sw if i % 2 == 0 else None for i in range(self.n_layer)]  # gemma2: sliding on even layers


LlamaConfig = ArchConfig  # the name older callers use


def load_model(model_dir, dtype):
    """Returns (config, params): params maps HF tensor names to torch tensors of `dtype`."""
    cfg_path = os.path.join(model_dir, "config.json")
    if not os.path.isfile(cfg_path):
        raise RefError(f"model_dir {model_dir!r}: no config.json")
    with open(cfg_path) as f:
        cfg = LlamaConfig(json.load(f))
    single = os.path.join(model_dir, "model.safetensors")
    index = os.path.join(model_dir, "model.safetensors.index.json")
    if os.path.isfile(single):
        files = [single]
    elif os.path.isfile(index):
        with open(index) as f:
            weight_map = json.load(f)["weight_map"]
        files = [os.path.join(model_dir, name) for name in sorted(set(weight_map.values()))]
    else:
        raise RefError(f"model_dir {model_dir!r}: neither model.safetensors nor model.safetensors.index.json")
    params = {}
    for path in files:
        if not os.path.isfile(path):
            raise RefError(f"missing weight shard {path}")
        tensors, _ = read_safetensors(path)
        for name, arr in tensors.items():
            if cfg.model_type == "gpt2" and not name.startswith(("transformer.", "lm_head.")):
                name = "transformer." + name  # the original GPT-2 checkpoints store the base model unprefixed
            params[name] = torch.from_numpy(arr).to(dtype)
    names = norm_names(cfg)
    required = [names["embed"] + ".weight", names["final"] + ".weight"]
    for i in range(cfg.n_layer):
        required += [f"{cfg.layer_prefix}.{i}.{n}.weight" for n in names["layer"]]
        required += [module_of(i, k, cfg) + ".weight" for k in cfg.kinds]
    missing = [n for n in required if n not in params]
    if missing:
        raise RefError(f"weights lack {len(missing)} tensors, e.g. {missing[:3]}")
    head = head_name(cfg)
    if head != "lm_head.weight" and head in params:
        params["lm_head.weight"] = params[head]  # GPT-NeoX's embed_out: forward reads the head as lm_head
    if "lm_head.weight" not in params:
        if not cfg.tied:
            raise RefError(f"no {head} and tie_word_embeddings is false")
        # Tied: the output projection is the embedding matrix itself (same tensor, as in HF).
        params["lm_head.weight"] = params[names["embed"] + ".weight"]
    return cfg, params


def head_name(cfg):
    """The output projection's tensor name in the checkpoint (GPT-NeoX calls it embed_out)."""
    return "embed_out.weight" if cfg.model_type == "gpt_neox" else "lm_head.weight"


def norm_names(cfg):
    """The embedding, final norm and per-layer norm names of each architecture."""
    if cfg.model_type == "gpt2":
        return {"embed": "transformer.wte", "final": "transformer.ln_f", "layer": ["ln_1", "ln_2"]}
    if cfg.model_type == "gpt_neox":
        return {"embed": "gpt_neox.embed_in", "final": "gpt_neox.final_layer_norm",
                "layer": ["input_layernorm", "post_attention_layernorm"]}
    if cfg.post_norms:
        return {"embed": "model.embed_tokens", "final": "model.norm",
                "layer": ["post_attention_layernorm", "post_feedforward_layernorm", "self_attn.q_norm", "self_attn.k_norm"]}
    layer = ["input_layernorm", "post_attention_layernorm"]
    if cfg.sandwich:
        layer += ["pre_feedforward_layernorm", "post_feedforward_layernorm"]
    if cfg.qk_norm:
        layer += ["self_attn.q_norm", "self_attn.k_norm"]
    return {"embed": "model.embed_tokens", "final": "model.norm", "layer": layer}


def module_of(layer, kind, cfg=None):
    """HF name of a module kind at a layer (Llama's naming when no config is given)."""
    arch = ARCHS[cfg.model_type] if cfg is not None else _LLAMA
    return f"{arch['prefix']}.{layer}.{arch['paths'][kind]}"


def candidate_modules(cfg):
    return [module_of(i, k, cfg) for i in range(cfg.n_layer) for k in cfg.kinds]


def w_dims(cfg, params, module):
    """(d_out, d_in) of a module's weight: nn.Linear stores (out, in), GPT-2's Conv1D (in, out)."""
    shape = tuple(params[module + ".weight"].shape)
    return (shape[1], shape[0]) if cfg.conv1d else shape


# ----------------------------------------------------------------------------------------------------------------
# The model: HF LlamaForCausalLM, batch 1, functional over a dict of tensors so callers can swap in leaves that
# require grad (W for dL/dW, B for the LoRA gradient) without any module plumbing.


def rms_norm(x, weight, eps):
    # HF: hidden.to(float32) * rsqrt(mean(hidden^2) + eps), then weight * hidden.to(input dtype). In float64 mode we
    # simply stay in float64; in float32 mode this is HF's arithmetic exactly.
    var = x.pow(2).mean(-1, keepdim=True)  # (T, 1)
    return weight * (x * torch.rsqrt(var + eps))  # (T, C)


def norm(cfg, x, params, name):
    """The architecture's norm at `name`: RMSNorm (Gemma: times 1 + w), or GPT-2's / GPT-NeoX's LayerNorm with a bias."""
    if cfg.model_type in ("gpt2", "gpt_neox"):
        return F.layer_norm(x, (x.shape[-1],), params[name + ".weight"], params[name + ".bias"], cfg.eps)
    if cfg.gemma:
        # GemmaRMSNorm (1, 2 and 3): x * rsqrt(mean(x^2) + eps) * (1 + weight)
        return (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + cfg.eps)) * (1.0 + params[name + ".weight"])
    return rms_norm(x, params[name + ".weight"], cfg.eps)


def rope_inv_freq(cfg, dtype, T=None, local=False):
    """Inverse frequencies and the cos/sin factor, transcribing transformers' _compute_*_parameters.
    local: Gemma 3's second RoPE for its sliding layers (rope_local_base_freq, no scaling)."""
    d = cfg.rotary_dim
    base = cfg.local_rope_theta if local else cfg.rope_theta
    exponents = torch.arange(0, d, 2, dtype=torch.int64).to(dtype) / d  # (d/2,)
    inv_freq = 1.0 / (base ** exponents)  # (d/2,)
    sc = cfg.local_rope_scaling if local else cfg.rope_scaling
    if not sc:
        return inv_freq, 1.0
    kind = sc.get("rope_type") or sc.get("type") or "default"
    if kind == "default":
        return inv_freq, 1.0
    if kind == "linear":
        return inv_freq / float(sc["factor"]), 1.0
    if kind == "dynamic":
        # _compute_dynamic_ntk_parameters with seq_len = the longest position + 1; the base only grows beyond
        # max_position_embeddings (_dynamic_frequency_update never changes it below).
        factor, max_pos = float(sc["factor"]), cfg.max_pos
        if T is None or T <= max_pos:
            return inv_freq, 1.0
        base = base * ((factor * T / max_pos) - (factor - 1)) ** (d / (d - 2))
        return 1.0 / (base ** exponents), 1.0
    if kind == "llama3":
        # transformers' _compute_llama3_parameters, transcribed.
        factor = float(sc["factor"])
        low, high = float(sc["low_freq_factor"]), float(sc["high_freq_factor"])
        old_len = float(sc["original_max_position_embeddings"])
        low_wavelen, high_wavelen = old_len / low, old_len / high
        wavelen = 2 * math.pi / inv_freq
        scaled = torch.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
        smooth = (old_len / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
        return torch.where(medium, smoothed, scaled), 1.0
    if kind == "yarn":
        # _compute_yarn_parameters (current transformers: factor as given, original_max_position_embeddings from
        # rope_scaling when present, mscale / mscale_all_dim, truncate).
        factor = float(sc["factor"])
        orig = sc.get("original_max_position_embeddings") or cfg.max_pos

        def get_mscale(scale, m=1.0):
            return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

        att = sc.get("attention_factor")
        if att is None:
            ms, ms_all = sc.get("mscale"), sc.get("mscale_all_dim")
            att = get_mscale(factor, ms) / get_mscale(factor, ms_all) if ms and ms_all else get_mscale(factor)
        beta_fast, beta_slow = sc.get("beta_fast") or 32, sc.get("beta_slow") or 1

        def corr_dim(rot):
            return (d * math.log(orig / (rot * 2 * math.pi))) / (2 * math.log(base))

        low, high = corr_dim(beta_fast), corr_dim(beta_slow)
        if sc.get("truncate", True):
            low, high = math.floor(low), math.ceil(high)
        low, high = max(low, 0), min(high, d - 1)
        if low == high:
            high += 0.001
        ramp = ((torch.arange(d // 2, dtype=dtype) - low) / (high - low)).clamp(0, 1)
        extrapolation_factor = 1 - ramp
        pos_freqs = base ** exponents
        inv = (1.0 / (factor * pos_freqs)) * (1 - extrapolation_factor) + (1.0 / pos_freqs) * extrapolation_factor
        return inv, float(att)
    if kind in ("longrope", "su"):
        # _compute_longrope_parameters: Phi-3 keeps original_max_position_embeddings at the top of its config.
        if cfg.original_max_pos is not None:
            orig = int(cfg.original_max_pos)
            factor = cfg.max_pos / orig
        else:
            orig, factor = cfg.max_pos, float(sc.get("factor") or 1.0)
        att = sc.get("attention_factor")
        if att is None:
            att = 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(orig))
        ext = torch.tensor(sc["long_factor"] if T is not None and T > orig else sc["short_factor"], dtype=dtype)
        return 1.0 / (ext * base ** exponents), float(att)
    raise RefError(f"rope_scaling type {kind!r} is not supported (default, linear, dynamic, llama3, yarn, longrope)")


def rope_cos_sin(cfg, T, dtype, local=False):
    inv_freq, factor = rope_inv_freq(cfg, dtype, T, local)  # (d/2,)
    pos = torch.arange(T, dtype=dtype)  # (T,)
    freqs = torch.outer(pos, inv_freq)  # (T, d/2)
    emb = torch.cat([freqs, freqs], dim=-1)  # (T, d): HF duplicates, it does not interleave
    return emb.cos() * factor, emb.sin() * factor  # (T, d) each; YaRN/LongRoPE scale both (attention_scaling)


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def linear(x, params, name, loras, conv1d=False):
    """h = x W^T (+ b) + s * (x A^T) B^T: PEFT's LoRA wraps an unchanged base linear. Conv1D: h = x W + b."""
    W = params[name + ".weight"]
    h = x @ W if conv1d else x @ W.T  # (T, d_out)
    bias = params.get(name + ".bias")
    if bias is not None:
        h = h + bias
    lora = loras.get(name) if loras else None
    if lora is not None:
        A, B, s = lora  # A (r, d_in), B (d_out, r): the same layout for Conv1D (PEFT's fan_in_fan_out only
        h = h + s * ((x @ A.T) @ B.T)  # transposes the merged delta)  (T, d_out)
    return h


ACTS = ("silu", "gelu", "gelu_new", "gelu_fast", "gelu_pytorch_tanh")


def act_fn(cfg, x):
    """transformers' ACT2FN[cfg.act]."""
    if cfg.act == "silu":
        return F.silu(x)
    if cfg.act == "gelu":  # GELUActivation: the exact erf GELU
        return F.gelu(x)
    if cfg.act == "gelu_new":  # transformers' NewGELUActivation
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))
    if cfg.act == "gelu_fast":  # FastGELUActivation: the same tanh curve with its constant rounded to 10 digits
        return 0.5 * x * (1.0 + torch.tanh(x * 0.7978845608 * (1.0 + 0.044715 * x * x)))
    return F.gelu(x, approximate="tanh")  # gelu_pytorch_tanh


def attention(cfg, x, params, layer, loras, cos, sin):
    T = x.shape[0]
    nh, nkv, hd = cfg.n_head, cfg.n_kv_head, cfg.head_dim
    mod = lambda kind: module_of(layer, kind, cfg)  # noqa: E731
    lin = lambda y, kind: linear(y, params, mod(kind), loras, cfg.conv1d)  # noqa: E731
    if cfg.model_type == "phi3":
        qkv = lin(x, "qkv_proj")  # (T, (nh + 2 nkv) hd)
        q, k, v = qkv.split([nh * hd, nkv * hd, nkv * hd], dim=-1)
    elif cfg.model_type == "gpt2":
        q, k, v = lin(x, "attn.c_attn").split(cfg.n_embd, dim=-1)  # GPT2Attention: split_size = embed_dim
    elif cfg.model_type == "gpt_neox":
        # GPTNeoXAttention: the output viewed as (T, heads, 3 * head_size), each head's slice holding its q, k, v
        # in turn (not three [H] blocks as Phi-3 and GPT-2 store them).
        qkv = lin(x, "query_key_value").view(T, nh, 3 * hd)  # (T, nh, 3 hd)
        q, k, v = qkv[..., :hd], qkv[..., hd:2 * hd], qkv[..., 2 * hd:]  # (T, nh, hd) each
    else:
        q, k, v = lin(x, "q_proj"), lin(x, "k_proj"), lin(x, "v_proj")
    if cfg.qk_norm == "projection":
        # Olmo2Attention: q_norm(q_proj(x)), k_norm(k_proj(x)), RMSNorm over the whole projection, then the heads.
        p = f"{cfg.layer_prefix}.{layer}.self_attn."
        q = norm(cfg, q, params, p + "q_norm")  # (T, nh * hd)
        k = norm(cfg, k, params, p + "k_norm")  # (T, nkv * hd)
    q = q.reshape(T, nh, hd)
    k = k.reshape(T, nkv, hd)
    if cfg.qk_norm == "head":
        # Qwen3Attention / Gemma3Attention: q_norm / k_norm (the architecture's RMSNorm over head_dim, Gemma's times
        # 1 + w) on each head, before RoPE.
        p = f"{cfg.layer_prefix}.{layer}.self_attn."
        q = norm(cfg, q, params, p + "q_norm")  # (T, nh, hd)
        k = norm(cfg, k, params, p + "k_norm")  # (T, nkv, hd)
    q, k = q.transpose(0, 1), k.transpose(0, 1)  # (nh, T, hd), (nkv, T, hd)
    v = v.reshape(T, nkv, hd).transpose(0, 1)  # (nkv, T, hd)
    if cfg.model_type != "gpt2" and cfg.rope_layers[layer]:  # SmolLM3Attention: if self.use_rope
        rd = cfg.rotary_dim  # cos, sin: (T, rd); the rest of each head passes through
        q = torch.cat([q[..., :rd] * cos + rotate_half(q[..., :rd]) * sin, q[..., rd:]], dim=-1)  # (nh, T, hd)
        k = torch.cat([k[..., :rd] * cos + rotate_half(k[..., :rd]) * sin, k[..., rd:]], dim=-1)  # (nkv, T, hd)
    # GQA, HF repeat_kv: query head j reads key/value head j // (nh / nkv).
    k = k.repeat_interleave(nh // nkv, dim=0)  # (nh, T, hd)
    v = v.repeat_interleave(nh // nkv, dim=0)  # (nh, T, hd)
    att = (q @ k.transpose(-2, -1)) * cfg.attn_scale  # (nh, T, T)
    if cfg.attn_softcap:
        att = torch.tanh(att / cfg.attn_softcap) * cfg.attn_softcap  # Gemma 2, before the mask
    i = torch.arange(T).view(T, 1)
    j = torch.arange(T).view(1, T)
    visible = j <= i  # (T, T): row t sees columns 0..t
    window = cfg.windows[layer]
    if window is not None:
        visible = visible & (j > i - window)  # masking_utils.sliding_window_overlay: kv_idx > q_idx - window
    att = att.masked_fill(~visible, float("-inf")).softmax(dim=-1)  # (nh, T, T)
    y = att @ v  # (nh, T, hd)
    y = y.transpose(0, 1).reshape(T, nh * hd)  # (T, nh*hd)
    out = {"gpt2": "attn.c_proj", "gpt_neox": "dense"}.get(cfg.model_type, "o_proj")
    return lin(y, out)  # (T, C)


def mlp(cfg, x, params, layer, loras):
    lin = lambda y, kind: linear(y, params, module_of(layer, kind, cfg), loras, cfg.conv1d)  # noqa: E731
    if cfg.model_type == "gpt2":
        return lin(act_fn(cfg, lin(x, "mlp.c_fc")), "mlp.c_proj")  # (T, C)
    if cfg.model_type == "gpt_neox":  # GPTNeoXMLP
        return lin(act_fn(cfg, lin(x, "dense_h_to_4h")), "dense_4h_to_h")  # (T, C)
    if cfg.model_type == "phi3":
        gate, up = lin(x, "gate_up_proj").chunk(2, dim=-1)  # Phi3MLP: gate first, then up
    else:
        gate, up = lin(x, "gate_proj"), lin(x, "up_proj")  # (T, I)
    return lin(act_fn(cfg, gate) * up, "down_proj")  # (T, C)


def forward(cfg, params, ids, loras=None):
    """ids: list of token ids. loras: {module name: (A, B, scale)}. Returns logits (T, V)."""
    names = norm_names(cfg)
    dtype = params[names["final"] + ".weight"].dtype
    idx = torch.tensor(ids, dtype=torch.long)  # (T,)
    T = idx.shape[0]
    cos, sin = rope_cos_sin(cfg, T, dtype)  # (T, rotary_dim)
    # Gemma 3's sliding layers: the local RoPE.
    cos_l, sin_l = rope_cos_sin(cfg, T, dtype, local=True) if any(cfg.local_rope) else (None, None)
    x = params[names["embed"] + ".weight"][idx]  # (T, C)
    if cfg.gemma:
        # GemmaModel's and Gemma2Model's normalizer, Gemma3TextScaledWordEmbedding's embed_scale: sqrt(hidden) in the
        # model's dtype.
        x = x * torch.tensor(cfg.n_embd ** 0.5, dtype=x.dtype)
    x = x * cfg.embedding_multiplier  # GraniteModel: inputs_embeds * embedding_multiplier (1 elsewhere)
    if cfg.model_type == "gpt2":
        if T > cfg.max_pos:
            raise RefError(f"a record of {T} tokens exceeds n_positions {cfg.max_pos}")
        x = x + params["transformer.wpe.weight"][:T]  # learned absolute positions
    gemma = cfg.sandwich
    rm = cfg.residual_multiplier  # GraniteDecoderLayer: residual + hidden_states * residual_multiplier
    for i in range(cfg.n_layer):
        p = f"{cfg.layer_prefix}.{i}."
        if cfg.post_norms:
            # Olmo2DecoderLayer: x + post_attention_layernorm(attn(x)), then x + post_feedforward_layernorm(mlp(x)).
            x = x + norm(cfg, attention(cfg, x, params, i, loras, cos, sin), params, p + "post_attention_layernorm")
            x = x + norm(cfg, mlp(cfg, x, params, i, loras), params, p + "post_feedforward_layernorm")
            continue
        pre_attn, pre_mlp = ("ln_1", "ln_2") if cfg.model_type == "gpt2" else (
            "input_layernorm", "pre_feedforward_layernorm" if gemma else "post_attention_layernorm")
        rope = (cos_l, sin_l) if cfg.local_rope[i] else (cos, sin)
        a = attention(cfg, norm(cfg, x, params, p + pre_attn), params, i, loras, *rope)
        if cfg.parallel_residual:
            # GPTNeoXLayer, use_parallel_residual: both blocks read the layer input, x + attn(ln1(x)) + mlp(ln2(x)).
            x = mlp(cfg, norm(cfg, x, params, p + pre_mlp), params, i, loras) + a + x  # (T, C), HF's order
            continue
        if gemma:
            a = norm(cfg, a, params, p + "post_attention_layernorm")
        x = x + a * rm
        m = mlp(cfg, norm(cfg, x, params, p + pre_mlp), params, i, loras)
        if gemma:
            m = norm(cfg, m, params, p + "post_feedforward_layernorm")
        x = x + m * rm  # (T, C)
    x = norm(cfg, x, params, names["final"])  # (T, C)
    logits = x @ params["lm_head.weight"].T  # (T, V)
    logits = logits / cfg.logits_scaling  # GraniteForCausalLM: logits / logits_scaling (1 elsewhere)
    if cfg.final_softcap:
        logits = torch.tanh(logits / cfg.final_softcap) * cfg.final_softcap
    return logits


def _dtype(cfg, params):
    return params[norm_names(cfg)["final"] + ".weight"].dtype


def record_loss(logits, ids, mask):
    """l_n: mean CE over the supervised targets. Token t (t >= 1, mask[t] = 1) is predicted from position t - 1."""
    targets = torch.tensor(ids[1:], dtype=torch.long)  # (T-1,)
    m = torch.tensor(mask[1:], dtype=logits.dtype)  # (T-1,)
    ce = F.cross_entropy(logits[:-1], targets, reduction="none")  # (T-1,)
    return (ce * m).sum() / m.sum()


# ----------------------------------------------------------------------------------------------------------------
# Requests


def check_records(records, cfg):
    if not isinstance(records, list) or not records:
        raise RefError("records must be a non-empty list")
    out = []
    for n, rec in enumerate(records):
        ids = rec.get("input_ids") if isinstance(rec, dict) else None
        if not isinstance(ids, list) or len(ids) < 2:
            raise RefError(f"records[{n}].input_ids must be a list of at least 2 token ids")
        if any((not isinstance(t, int)) or t < 0 or t >= cfg.vocab_size for t in ids):
            raise RefError(f"records[{n}].input_ids holds an id outside 0..{cfg.vocab_size - 1}")
        mask = rec.get("loss_mask")
        if mask is None:
            mask = [1] * len(ids)  # plain text: every token after the first is a target
        if len(mask) != len(ids):
            raise RefError(f"records[{n}].loss_mask has {len(mask)} entries for {len(ids)} ids")
        mask = [1 if v else 0 for v in mask]
        if sum(mask[1:]) == 0:
            raise RefError(f"records[{n}] has no supervised token at t >= 1, so its loss is undefined")
        out.append((ids, mask))
    return out


def load_peft_tensors(path):
    """Reads PEFT-named LoRA tensors -> {module name: {"A": tensor, "B": tensor}} (float64 numpy, caller casts)."""
    if not os.path.isfile(path):
        raise RefError(f"adapter file {path!r} does not exist")
    tensors, _ = read_safetensors(path)
    mods = {}
    for key, arr in tensors.items():
        name = key
        if name.startswith(PEFT_PREFIX):
            name = name[len(PEFT_PREFIX):]
        for part, tag in ((".lora_A.weight", "A"), (".lora_B.weight", "B"),
                          (".lora_A.default.weight", "A"), (".lora_B.default.weight", "B")):
            if name.endswith(part):
                mods.setdefault(name[: -len(part)], {})[tag] = arr
                break
        else:
            raise RefError(f"adapter key {key!r} is not a LoRA A/B weight (DoRA, modules_to_save: unsupported)")
    return mods


def peft_key(module, tag):
    return f"{PEFT_PREFIX}{module}.lora_{tag}.weight"


def build_loras(cfg, params, mods, scale_of, dtype, requires_grad=False):
    """mods: {module: {"A","B"}} -> {module: (A, B, scale)} with shapes checked against the base weight."""
    loras = {}
    for module, ab in mods.items():
        if module + ".weight" not in params or module not in set(candidate_modules(cfg)):
            raise RefError(f"adapter targets {module!r}, which is not a linear projection of this model")
        if "A" not in ab or "B" not in ab:
            raise RefError(f"adapter for {module!r} lacks its lora_A or lora_B")
        d_out, d_in = w_dims(cfg, params, module)
        A = torch.as_tensor(ab["A"]).to(dtype).clone()  # clone: a fresh leaf, never an alias of the caller's data
        B = torch.as_tensor(ab["B"]).to(dtype).clone()
        r = A.shape[0]
        if tuple(A.shape) != (r, d_in) or tuple(B.shape) != (d_out, r):
            raise RefError(f"{module}: lora_A {tuple(A.shape)} / lora_B {tuple(B.shape)} do not fit W ({d_out}, {d_in})")
        A.requires_grad_(requires_grad)
        B.requires_grad_(requires_grad)
        loras[module] = (A, B, scale_of(module, r))
    return loras


def fixed_scale(req):
    rank, alpha = req.get("rank"), req.get("alpha")
    if rank is None or alpha is None:
        raise RefError("this mode needs rank and alpha")
    rank, alpha = int(rank), float(alpha)
    scale = alpha / math.sqrt(rank) if req.get("use_rslora") else alpha / rank

    def scale_of(module, r):
        if r != rank:
            raise RefError(f"{module}: lora_A has rank {r}, the request says rank {rank}")
        return scale

    return rank, scale, scale_of


def mode_loss(req, cfg, params, records, loras=None):
    """losses, meanLoss, tokens, lastLogits (full vocab, per record); greedy {prompt, steps} -> greedy ids."""
    losses, last = [], []
    tokens = 0
    with torch.no_grad():
        for ids, mask in records:
            logits = forward(cfg, params, ids, loras)  # (T, V)
            losses.append(record_loss(logits, ids, mask).item())
            last.append(logits[-1].tolist())
            tokens += sum(mask[1:])
        out = {"losses": losses, "meanLoss": float(np.mean(losses)), "tokens": tokens, "lastLogits": last}
        g = req.get("greedy")
        if g:
            seq = list(g["prompt"])
            for _ in range(int(g["steps"])):
                # No KV cache: re-running the whole prefix is slow but leaves nothing to get wrong.
                seq.append(int(forward(cfg, params, seq, loras)[-1].argmax().item()))
            out["greedy"] = seq[len(g["prompt"]):]
            out["greedySequence"] = seq
    return out


def mode_page(req, cfg, params, records):
    """Sampled and expected PAGE at every candidate module.

    lora_init: safetensors with "<module>.lora_A.weight" (r, d_in) per candidate (the PEFT prefix is accepted too).
    Without it, A is drawn here from PEFT's init with torch.Generator(seed) (request "seed", default 0).
    """
    dtype = _dtype(cfg, params)
    rank, scale, scale_of = fixed_scale(req)
    modules = candidate_modules(cfg)
    if req.get("lora_init"):
        mods = load_peft_tensors(req["lora_init"])
        missing = [m for m in modules if m not in mods]
        if missing:
            raise RefError(f"lora_init lacks lora_A for {len(missing)} candidates, e.g. {missing[:2]}")
    else:
        gen = torch.Generator().manual_seed(int(req.get("seed", 0)))
        mods = {}
        for m in modules:
            d_in = w_dims(cfg, params, m)[1]
            bound = 1.0 / math.sqrt(d_in)  # kaiming_uniform_(a=sqrt(5)) on fan_in d_in
            mods[m] = {"A": (torch.rand(rank, d_in, generator=gen, dtype=torch.float64) * 2 - 1) * bound}
    for m in modules:
        mods[m]["B"] = np.zeros((w_dims(cfg, params, m)[0], rank))  # PEFT init: B = 0
    loras = build_loras(cfg, params, {m: mods[m] for m in modules}, scale_of, dtype, requires_grad=True)
    for m in modules:
        loras[m][0].requires_grad_(False)  # only B is trained at init; A's gradient is s B^T G = 0 anyway

    # The weights of the candidates become leaves that require grad, so autograd hands us dl/dW directly.
    p = dict(params)
    for m in modules:
        p[m + ".weight"] = params[m + ".weight"].clone().requires_grad_(True)
    Bs = [loras[m][1] for m in modules]
    Ws = [p[m + ".weight"] for m in modules]
    d_ins = [w_dims(cfg, params, m)[1] for m in modules]

    losses, per_sampled, per_expected = [], [], []
    for ids, mask in records:
        loss = record_loss(forward(cfg, p, ids, loras), ids, mask)
        grads = torch.autograd.grad(loss, Bs + Ws)
        gB, gW = grads[: len(Bs)], grads[len(Bs):]
        losses.append(loss.item())
        per_sampled.append([g.pow(2).sum().item() for g in gB])
        per_expected.append([scale * scale * rank / (3.0 * d) * g.pow(2).sum().item() for g, d in zip(gW, d_ins)])

    page_s = np.mean(np.array(per_sampled), axis=0)
    page_e = np.mean(np.array(per_expected), axis=0)
    order = sorted(range(len(modules)), key=lambda j: -page_e[j])
    return {
        "modules": modules,
        "losses": losses,
        "perRecordSampled": per_sampled,
        "perRecordExpected": per_expected,
        "pageSampled": page_s.tolist(),
        "pageExpected": page_e.tolist(),
        "share": (page_e / page_e.sum()).tolist(),
        "ranking": [modules[j] for j in order],
    }


def flat_adapter(loras, which):
    return {peft_key(m, tag): t.detach().reshape(-1).tolist()
            for m, (A, B, _) in loras.items() for tag, t in (("A", A), ("B", B)) if which(tag)}


def adapter_shapes(loras):
    return {peft_key(m, tag): list(t.shape) for m, (A, B, _) in loras.items() for tag, t in (("A", A), ("B", B))}


def batch_loss(cfg, params, records, loras):
    # Mean of the per-record means: every record weighs the same, however many tokens it supervises.
    return sum(record_loss(forward(cfg, params, ids, loras), ids, mask) for ids, mask in records) / len(records)


def mode_grad(req, cfg, params, records):
    """adapter (PEFT safetensors), rank, alpha -> loss = mean_n l_n and d loss / d A, d loss / d B for every module."""
    if not req.get("adapter"):
        raise RefError("mode grad needs adapter (a safetensors file with PEFT lora_A/lora_B keys)")
    dtype = _dtype(cfg, params)
    _, _, scale_of = fixed_scale(req)
    loras = build_loras(cfg, params, load_peft_tensors(req["adapter"]), scale_of, dtype, requires_grad=True)
    loss = batch_loss(cfg, params, records, loras)
    leaves = [(peft_key(m, tag), t) for m, (A, B, _) in loras.items() for tag, t in (("A", A), ("B", B))]
    grads = torch.autograd.grad(loss, [t for _, t in leaves])
    return {
        "loss": loss.item(),
        "grads": {k: g.reshape(-1).tolist() for (k, _), g in zip(leaves, grads)},
        "shapes": adapter_shapes(loras),
    }


def mode_train(req, cfg, params, records):
    """AdamW (torch.optim.AdamW) on A and B only.

    Fields: adapter, rank, alpha, steps, batches (one list of record indices per step), lrs (one lr per step; "lr" is
    accepted as a constant when lrs is absent), betas [0.9, 0.999], eps 1e-8, weight_decay (torch's default 0.01).
    Returns losses (the batch loss of each step, before that step's update) and the final adapter.
    """
    if not req.get("adapter"):
        raise RefError("mode train needs adapter (the initial A and B)")
    dtype = _dtype(cfg, params)
    _, _, scale_of = fixed_scale(req)
    loras = build_loras(cfg, params, load_peft_tensors(req["adapter"]), scale_of, dtype, requires_grad=True)
    steps = int(req.get("steps", len(req.get("batches") or [])))
    batches = req.get("batches")
    if not isinstance(batches, list) or len(batches) != steps:
        raise RefError(f"batches must be a list of {steps} lists of record indices")
    lrs = req.get("lrs")
    if lrs is None:
        if req.get("lr") is None:
            raise RefError("mode train needs lrs (one per step) or lr")
        lrs = [float(req["lr"])] * steps
    if len(lrs) != steps:
        raise RefError(f"lrs has {len(lrs)} entries for {steps} steps")
    for b in batches:
        if not b or any(not (0 <= i < len(records)) for i in b):
            raise RefError(f"batch {b} is empty or names a record outside 0..{len(records) - 1}")
    leaves = [t for (A, B, _) in loras.values() for t in (A, B)]
    opt = torch.optim.AdamW(leaves, lr=float(lrs[0]), betas=tuple(req.get("betas", (0.9, 0.999))),
                            eps=float(req.get("eps", 1e-8)), weight_decay=float(req.get("weight_decay", 0.01)))
    losses = []
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = float(lrs[step])
        opt.zero_grad()
        loss = batch_loss(cfg, params, [records[i] for i in batches[step]], loras)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return {"losses": losses, "adapter": flat_adapter(loras, lambda tag: True), "shapes": adapter_shapes(loras)}


# --- eval-adapter: PEFT's own rules for which modules an adapter_config targets ---------------------------------


def peft_targets(config, module, cfg):
    """PEFT's check_target_module_exists (tuners_utils), for the keys that matter here."""
    import re

    exclude = config.get("exclude_modules")
    if exclude:
        if isinstance(exclude, str):
            if re.fullmatch(exclude, module):
                return False
        elif module in exclude or any(module.endswith("." + e) for e in exclude):
            return False
    target = config.get("target_modules")
    if target is None:
        raise RefError("adapter_config.json has no target_modules")
    if target == "all-linear":
        target = list(cfg.kinds)  # every linear layer but the output head: exactly the candidate kinds
    if isinstance(target, str):
        return re.fullmatch(target, module) is not None
    if module in target:
        return True  # an exact name match ignores layers_to_transform, as in PEFT
    if not any(module.endswith("." + t) for t in target):
        return False
    layers = config.get("layers_to_transform")
    if layers is None or (isinstance(layers, list) and len(layers) == 0):
        return True
    pattern = config.get("layers_pattern")
    if not pattern:
        m = re.match(r".*\.[^.]*\.(\d+)\.", module)
    else:
        m = None
        for pat in [pattern] if isinstance(pattern, str) else pattern:
            m = re.match(rf".*\.{pat}\.(\d+)\.", module)
            if m:
                break
    if m is None:
        return False
    idx = int(m.group(1))
    return idx == layers if isinstance(layers, int) else idx in layers


def peft_pattern(patterns, module, default):
    """PEFT's get_pattern_key: the first key k with re.match((.*\\.)?(k)$, module) wins."""
    import re

    for key, value in (patterns or {}).items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def mode_eval_adapter(req, cfg, params, records):
    """adapter_dir (adapter_config.json + adapter_model.safetensors) applied as PEFT would -> losses like mode loss."""
    adir = req.get("adapter_dir")
    if not adir:
        raise RefError("mode eval-adapter needs adapter_dir")
    cpath, wpath = os.path.join(adir, "adapter_config.json"), os.path.join(adir, "adapter_model.safetensors")
    for path in (cpath, wpath):
        if not os.path.isfile(path):
            raise RefError(f"adapter_dir: {path} does not exist")
    with open(cpath) as f:
        acfg = json.load(f)
    if acfg.get("use_dora"):
        raise RefError("DoRA adapters are not supported by the reference")
    if acfg.get("modules_to_save"):
        raise RefError("modules_to_save is not supported by the reference")
    if bool(acfg.get("fan_in_fan_out")) != cfg.conv1d:
        # PEFT would only warn and flip it; a mismatch here means the exporter wrote the wrong flag.
        raise RefError(f"fan_in_fan_out is {bool(acfg.get('fan_in_fan_out'))}, but this model's weights are "
                       f"{'Conv1D (in, out)' if cfg.conv1d else 'nn.Linear (out, in)'}")
    mods = load_peft_tensors(wpath)
    targeted = [m for m in candidate_modules(cfg) if peft_targets(acfg, m, cfg)]
    # PEFT wraps every targeted module; one that the file holds no weights for keeps B = 0 and changes nothing.
    # A tensor for a module that is not targeted is an "unexpected key" that PEFT ignores; we report it.
    applied = {m: mods[m] for m in targeted if m in mods}
    ignored = sorted(m for m in mods if m not in targeted)
    r0, alpha0, rs = int(acfg["r"]), float(acfg["lora_alpha"]), bool(acfg.get("use_rslora"))

    def scale_of(module, r_file):
        r = int(peft_pattern(acfg.get("rank_pattern"), module, r0))
        alpha = float(peft_pattern(acfg.get("alpha_pattern"), module, alpha0))
        if r != r_file:
            raise RefError(f"{module}: adapter_config says r = {r}, the weights have rank {r_file}")
        return alpha / math.sqrt(r) if rs else alpha / r

    loras = build_loras(cfg, params, applied, scale_of, _dtype(cfg, params))
    out = mode_loss(req, cfg, params, records, loras)
    out["adaptedModules"] = sorted(applied)
    out["scales"] = {m: loras[m][2] for m in sorted(loras)}
    out["ignoredModules"] = ignored
    return out


MODES = {"loss": None, "page": mode_page, "grad": mode_grad, "eval-adapter": mode_eval_adapter, "train": mode_train}


def handle(req):
    """Runs one request (a dict) and returns the response dict. Raises RefError on a bad request."""
    mode = req.get("mode")
    if mode not in MODES:
        raise RefError(f"mode must be one of {sorted(MODES)}, got {mode!r}")
    dtype = {"float64": torch.float64, "float32": torch.float32}.get(req.get("dtype", "float64"))
    if dtype is None:
        raise RefError("dtype must be float64 or float32")
    if not req.get("model_dir"):
        raise RefError("model_dir is required")
    t0 = time.perf_counter()
    cfg, params = load_model(req["model_dir"], dtype)
    records = check_records(req.get("records"), cfg)
    t1 = time.perf_counter()
    out = mode_loss(req, cfg, params, records) if mode == "loss" else MODES[mode](req, cfg, params, records)
    if req.get("time"):
        out["seconds"] = time.perf_counter() - t1  # the compute alone
        out["loadSeconds"] = t1 - t0
    return out


def main(argv):
    if len(argv) != 2:
        print("usage: llama_ref.py REQUEST.json   (or - for stdin)", file=sys.stderr)
        return 2
    try:
        if argv[1] == "-":
            req = json.load(sys.stdin)
        else:
            if not os.path.isfile(argv[1]):
                raise RefError(f"request file {argv[1]!r} does not exist")
            with open(argv[1]) as f:
                req = json.load(f)
        if not isinstance(req, dict):
            raise RefError("the request must be a JSON object")
        out = handle(req)
        # allow_nan=False: a NaN would make JSON.parse on the TS side fail obscurely; fail here, loudly, instead.
        text = json.dumps(out, allow_nan=False)
    except (RefError, json.JSONDecodeError, ValueError, KeyError, TypeError) as e:
        msg = f"{type(e).__name__}: {e}" if not isinstance(e, RefError) else str(e)
        print(json.dumps({"error": msg}))
        print(f"llama_ref: {msg}", file=sys.stderr)
        return 2
    sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
