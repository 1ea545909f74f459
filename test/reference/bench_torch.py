#!/usr/bin/python3
"""PyTorch side of `npm run bench` (scripts/bench.ts): the same jobs as ours, written the way a good PyTorch engineer
would write them on a CPU, so the ratio ours/PyTorch means something.

Usage: /usr/bin/python3 test/reference/bench_torch.py MODE MODEL_DIR RECORDS.jsonl [OPTIONS.json] [--device cpu|cuda]
  MODE  page         sampled PAGE ||dL/dB||^2 for all candidate modules, one forward+backward per record
        train-dom    one AdamW step of one adapter (A and B trainable) on OPTIONS["target"], batch of the records
        train-vanilla one AdamW step of adapters on every candidate module, batch of the records
Prints one JSON object: seconds (the timed phase, model load excluded), loadSeconds, peakRssMB (ru_maxrss of this
process, load included), perRecordSeconds (page), loss.

--device cuda (or OPTIONS["device"]) runs the same float32 code on the GPU (TF32 off, as torch's default for matmuls):
the weights are moved there after loading, every timed phase ends with torch.cuda.synchronize(), and the output adds
device, gpu, peakCudaMB (torch.cuda.max_memory_allocated) and, for the training modes, secondStepSeconds (a second,
warm step: the first pays CUDA's lazy start-up). Where torch.cuda.is_available() is false it runs on the CPU and says
so in deviceNote.

Choices (the fast, idiomatic ones): float32; torch.set_num_threads(1) with OpenBLAS's own 2 threads (the best setting
on two cores, shared/docs/engine-bench.md section 2); base weights never require grad, so autograd stores nothing
below the lowest adapter and computes no weight gradients; LoRA B zero-initialised; in PAGE only B requires grad;
logits and the loss only at supervised positions; grouped-query attention by reshape (no repeat of K/V); training runs
the batch as one [B, T] tensor (all records have the same length).
"""

import json
import math
import os
import resource
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from llama_ref import load_model, candidate_modules, rope_cos_sin, rotate_half  # noqa: E402

torch.set_num_threads(1)


def rms(x, w, eps):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def lin(x, W, lora, bias=None):
    h = x @ W.T
    if bias is not None:
        h = h + bias
    if lora is not None:
        A, B, s = lora
        h = h + s * ((x @ A.T) @ B.T)
    return h


def forward_hidden(cfg, P, ids, loras, Wt=None):
    """ids: LongTensor [Bt, T]. Returns the final normed hidden [Bt, T, C]."""
    Bt, T = ids.shape
    nh, nkv, hd = cfg.n_head, cfg.n_kv_head, cfg.head_dim
    rep = nh // nkv
    dev = ids.device
    cos, sin = (t.to(dev) for t in rope_cos_sin(cfg, T, torch.float32))  # (T, hd)
    causal = torch.ones(T, T, dtype=torch.bool, device=dev).tril()
    x = P["model.embed_tokens.weight"][ids]  # (Bt, T, C)
    for i in range(cfg.n_layer):
        p = f"model.layers.{i}."
        g = lambda k: loras.get(p + ("mlp." if k in ("gate_proj", "up_proj", "down_proj") else "self_attn.") + k)  # noqa: E731
        W = lambda k: P[p + ("mlp." if k in ("gate_proj", "up_proj", "down_proj") else "self_attn.") + k + ".weight"]  # noqa: E731
        bias = lambda k: P.get(p + "self_attn." + k + ".bias")  # noqa: E731  (Qwen2's q/k/v biases; None for Llama)
        h = rms(x, P[p + "input_layernorm.weight"], cfg.eps)
        q = lin(h, W("q_proj"), g("q_proj"), bias("q_proj")).view(Bt, T, nkv, rep, hd).permute(0, 2, 3, 1, 4)  # (Bt, nkv, rep, T, hd)
        k = lin(h, W("k_proj"), g("k_proj"), bias("k_proj")).view(Bt, T, nkv, 1, hd).permute(0, 2, 3, 1, 4)  # (Bt, nkv, 1, T, hd)
        v = lin(h, W("v_proj"), g("v_proj"), bias("v_proj")).view(Bt, T, nkv, 1, hd).permute(0, 2, 3, 1, 4)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hd))  # (Bt, nkv, rep, T, T)
        att = att.masked_fill(~causal, float("-inf")).softmax(dim=-1)
        y = (att @ v).permute(0, 3, 1, 2, 4).reshape(Bt, T, nh * hd)
        x = x + lin(y, W("o_proj"), g("o_proj"))
        h = rms(x, P[p + "post_attention_layernorm.weight"], cfg.eps)
        a = F.silu(lin(h, W("gate_proj"), g("gate_proj"))) * lin(h, W("up_proj"), g("up_proj"))
        x = x + lin(a, W("down_proj"), g("down_proj"))
    return x


def batch_loss(cfg, P, records, loras):
    """Mean over records of each record's mean CE at its supervised targets; logits only where supervised."""
    dev = P["model.norm.weight"].device
    ids = torch.tensor([r[0] for r in records], dtype=torch.long, device=dev)
    x = forward_hidden(cfg, P, ids, loras)
    total = 0.0
    for b, (rid, mask) in enumerate(records):
        pos = [t - 1 for t in range(1, len(rid)) if mask[t]]
        tgt = torch.tensor([rid[t + 1] for t in pos], dtype=torch.long, device=dev)
        hs = rms(x[b, pos], P["model.norm.weight"], cfg.eps)
        logits = hs @ P["lm_head.weight"].T  # (S, V)
        total = total + F.cross_entropy(logits, tgt)
    return total / len(records)


def make_loras(cfg, P, modules, rank, scale, train_a, seed=0):
    gen = torch.Generator().manual_seed(seed)  # drawn on the CPU, so A is the same on every device
    loras = {}
    for m in modules:
        d_out, d_in = P[m + ".weight"].shape
        dev = P[m + ".weight"].device
        bound = 1.0 / math.sqrt(d_in)
        A = ((torch.rand(rank, d_in, generator=gen) * 2 - 1) * bound).to(dev).requires_grad_(train_a)
        B = torch.zeros(d_out, rank, device=dev, requires_grad=True)
        loras[m] = (A, B, scale)
    return loras


def pick_device(want):
    """(device, note): cuda only where torch sees a GPU; otherwise the CPU, with a note saying why."""
    if want == "cuda" and not torch.cuda.is_available():
        return torch.device("cpu"), "cuda requested but torch.cuda.is_available() is false: ran on the CPU"
    if want not in ("cpu", "cuda"):
        raise SystemExit(f"unknown device {want!r} (cpu or cuda)")
    return torch.device(want), None


def main():
    argv = sys.argv[1:]
    want = None
    if "--device" in argv:
        i = argv.index("--device")
        want = argv[i + 1]
        del argv[i:i + 2]
    mode, model_dir, data = argv[0], argv[1], argv[2]
    opts = json.loads(argv[3]) if len(argv) > 3 else {}
    rank, alpha = int(opts.get("rank", 8)), float(opts.get("alpha", 16))
    scale = alpha / rank
    dev, dev_note = pick_device(want or opts.get("device", "cpu"))
    cuda = dev.type == "cuda"
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = False  # float32 like ours (already torch's default)
        torch.backends.cudnn.allow_tf32 = False

    def sync():
        if cuda:
            torch.cuda.synchronize()

    t0 = time.perf_counter()
    cfg, P = load_model(model_dir, torch.float32)
    if cuda:
        moved = {}
        P = {n: moved.setdefault(id(t), t.to(dev)) for n, t in P.items()}  # tied weights stay one tensor
        sync()
    load_s = time.perf_counter() - t0
    with open(data) as f:
        records = [(r["input_ids"], r["loss_mask"]) for r in map(json.loads, f) if r]
    limit = opts.get("records")
    if limit:
        records = records[: int(limit)]
    out = {"mode": mode, "records": len(records), "loadSeconds": load_s, "torch": torch.__version__,
           "threads": torch.get_num_threads(), "device": dev.type}
    if dev_note:
        out["deviceNote"] = dev_note
    if cuda:
        out["gpu"] = torch.cuda.get_device_name(dev)
    if mode == "page":
        modules = candidate_modules(cfg)
        loras = make_loras(cfg, P, modules, rank, scale, train_a=False)
        Bs = [loras[m][1] for m in modules]
        per, energies, losses = [], [], []
        t0 = time.perf_counter()
        for rec in records:
            t1 = time.perf_counter()
            loss = batch_loss(cfg, P, [rec], loras)
            gB = torch.autograd.grad(loss, Bs)
            energies.append(torch.stack([g.pow(2).sum() for g in gB]).tolist())  # one transfer, a sync on cuda
            losses.append(float(loss))
            sync()
            per.append(time.perf_counter() - t1)
        out.update(seconds=time.perf_counter() - t0, perRecordSeconds=per, loss=sum(losses) / len(losses),
                   top=max(range(len(modules)), key=lambda j: sum(e[j] for e in energies)))
    elif mode in ("train-dom", "train-vanilla"):
        modules = [opts["target"]] if mode == "train-dom" else candidate_modules(cfg)
        loras = make_loras(cfg, P, modules, rank, scale, train_a=True)
        leaves = [t for (A, B, _) in loras.values() for t in (A, B)]
        opt = torch.optim.AdamW(leaves, lr=1e-3)
        steps = []
        for _ in range(2 if cuda else 1):
            t0 = time.perf_counter()
            opt.zero_grad()
            loss = batch_loss(cfg, P, records, loras)
            loss.backward()
            opt.step()
            sync()
            steps.append(time.perf_counter() - t0)
            if not steps[1:]:
                first_loss = float(loss)
        out.update(seconds=steps[0], loss=first_loss, modules=len(modules))
        if len(steps) > 1:
            out["secondStepSeconds"] = steps[1]
    else:
        raise SystemExit(f"unknown mode {mode}")
    out["peakRssMB"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if cuda:
        out["peakCudaMB"] = torch.cuda.max_memory_allocated(dev) / 2**20
    print(json.dumps(out))


if __name__ == "__main__":
    main()
