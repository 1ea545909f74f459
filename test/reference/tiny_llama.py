#!/usr/bin/python3
"""Writes a tiny random Llama folder (config.json + F32 safetensors) for gradient and PAGE checks.

Usage: /usr/bin/python3 test/reference/tiny_llama.py OUT_DIR [--seed 0] [--hidden 16] [--inter 24] [--layers 2]
       [--heads 4] [--kv-heads 2] [--head-dim D] [--vocab 40] [--untied] [--attention-bias] [--mlp-bias] [--shards N]

Weights are drawn so that activations stay of order one (W ~ N(0, 1/d_in)), which keeps the gradients away from
both zero and overflow: the checks then measure the algebra, not the conditioning.
"""

import argparse
import json
import os
import sys

sys.dont_write_bytecode = True

import numpy as np  # noqa: E402

from safetensors_np import write_safetensors  # noqa: E402


def make_tiny_llama(out_dir, seed=0, hidden=16, inter=24, layers=2, heads=4, kv_heads=2, head_dim=None, vocab=40,
                    tied=True, attention_bias=False, mlp_bias=False, shards=1, rope_theta=10000.0):
    rng = np.random.default_rng(seed)
    hd = head_dim or hidden // heads

    def lin(d_out, d_in):
        return rng.standard_normal((d_out, d_in)) / np.sqrt(d_in)

    w = {"model.embed_tokens.weight": rng.standard_normal((vocab, hidden)),
         "model.norm.weight": 1 + 0.1 * rng.standard_normal(hidden)}
    if not tied:
        w["lm_head.weight"] = lin(vocab, hidden)
    shapes = {"q_proj": (heads * hd, hidden), "k_proj": (kv_heads * hd, hidden), "v_proj": (kv_heads * hd, hidden),
              "o_proj": (hidden, heads * hd), "gate_proj": (inter, hidden), "up_proj": (inter, hidden),
              "down_proj": (hidden, inter)}
    for i in range(layers):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = 1 + 0.1 * rng.standard_normal(hidden)
        w[p + "post_attention_layernorm.weight"] = 1 + 0.1 * rng.standard_normal(hidden)
        for kind, (d_out, d_in) in shapes.items():
            group = "mlp." if kind in ("gate_proj", "up_proj", "down_proj") else "self_attn."
            w[p + group + kind + ".weight"] = lin(d_out, d_in)
            if (group == "mlp." and mlp_bias) or (group == "self_attn." and attention_bias):
                w[p + group + kind + ".bias"] = 0.1 * rng.standard_normal(d_out)
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden,
        "intermediate_size": inter, "num_hidden_layers": layers, "num_attention_heads": heads,
        "num_key_value_heads": kv_heads, "head_dim": hd, "vocab_size": vocab, "max_position_embeddings": 256,
        "rms_norm_eps": 1e-5, "rope_theta": rope_theta, "rope_scaling": None, "hidden_act": "silu",
        "tie_word_embeddings": tied, "attention_bias": attention_bias, "mlp_bias": mlp_bias, "torch_dtype": "float32",
    }
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    if shards <= 1:
        write_safetensors(os.path.join(out_dir, "model.safetensors"), w, {"format": "pt"})
    else:
        names = sorted(w)
        weight_map = {}
        for s in range(shards):
            fname = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
            part = {n: w[n] for n in names[s::shards]}
            weight_map.update({n: fname for n in part})
            write_safetensors(os.path.join(out_dir, fname), part, {"format": "pt"})
        with open(os.path.join(out_dir, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {}, "weight_map": weight_map}, f, indent=2)
    return config


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--hidden", type=int, default=16)
    ap.add_argument("--inter", type=int, default=24)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--head-dim", type=int, default=None)
    ap.add_argument("--vocab", type=int, default=40)
    ap.add_argument("--untied", action="store_true")
    ap.add_argument("--attention-bias", action="store_true")
    ap.add_argument("--mlp-bias", action="store_true")
    ap.add_argument("--shards", type=int, default=1)
    a = ap.parse_args()
    make_tiny_llama(a.out_dir, a.seed, a.hidden, a.inter, a.layers, a.heads, a.kv_heads, a.head_dim, a.vocab,
                    not a.untied, a.attention_bias, a.mlp_bias, a.shards)
    print(a.out_dir)


if __name__ == "__main__":
    main()
