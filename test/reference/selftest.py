#!/usr/bin/python3
"""Self-test of the reference: the algebra of LoRA and PAGE, checked on tiny random Llamas in float64.

Usage: /usr/bin/python3 test/reference/selftest.py      (about 10 s; prints one line per check, PASS or FAIL last)

What it establishes, and why each matters:
- the safetensors reader/writer round-trips and widens F16/BF16 exactly;
- the forward pass is causal, dtype-stable and loads sharded folders like single files;
- autograd's weight gradient G = dl/dW agrees with central finite differences of the loss;
- sampled PAGE is exactly || s G A^T ||_F^2 (two different autograd paths: through B, and through W);
- the Monte Carlo mean of that energy over PEFT's random A is expected PAGE (the closed form in DESIGN.md);
- grad mode's dA and dB agree with finite differences, with A and B both nonzero;
- train mode is AdamW with decoupled weight decay, written out by hand here;
- eval-adapter applies PEFT's targeting rules (layers_to_transform) and scales (alpha/r, rsLoRA);
- the command line returns JSON, and a missing file exits 2 with a message.
"""

import json
import math
import os
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True

import numpy as np  # noqa: E402
import torch  # noqa: E402

import llama_ref as ref  # noqa: E402
from safetensors_np import read_safetensors, write_safetensors  # noqa: E402
from tiny_llama import make_tiny_llama  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
FAILED = []


def check(name, good, detail=""):
    if not good:
        FAILED.append(name)
    print(f"{'ok  ' if good else 'FAIL'} {name}{': ' + detail if detail else ''}", flush=True)


def rel(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def random_records(rng, vocab, lengths, masked=False):
    recs = []
    for T in lengths:
        ids = [1] + rng.integers(3, vocab, size=T - 1).tolist()
        # Instruction-style mask: a prompt that is not supervised, then a supervised response.
        mask = [0] * (T // 3) + [1] * (T - T // 3) if masked else [1] * T
        recs.append({"input_ids": ids, "loss_mask": mask})
    return recs


def peft_init_A(gen, r, d_in):
    bound = 1.0 / math.sqrt(d_in)  # PEFT's kaiming_uniform_(a = sqrt(5)) on fan_in d_in
    return (torch.rand(r, d_in, generator=gen, dtype=torch.float64) * 2 - 1) * bound


def test_safetensors(tmp):
    rng = np.random.default_rng(1)
    t = {"a": rng.standard_normal((3, 5)).astype(np.float32), "b.c": np.arange(7, dtype=np.float32)}
    path = os.path.join(tmp, "rt.safetensors")
    write_safetensors(path, t, {"format": "pt", "note": "x"})
    back, meta = read_safetensors(path)
    check("safetensors F32 round trip", all(np.array_equal(back[k], t[k]) for k in t) and meta["note"] == "x")
    # Hand-built F16 and BF16 tensors: values exactly representable in both, so the widening must be exact.
    vals = np.array([1.0, -2.5, 0.15625, 63.5, -0.0, 384.0], dtype=np.float32)
    f16 = vals.astype(np.float16).tobytes()
    bf16 = (vals.view(np.uint32) >> 16).astype(np.uint16).tobytes()
    header = {"h": {"dtype": "F16", "shape": [2, 3], "data_offsets": [0, len(f16)]},
              "bf": {"dtype": "BF16", "shape": [6], "data_offsets": [len(f16), len(f16) + len(bf16)]}}
    hb = json.dumps(header).encode()
    path = os.path.join(tmp, "half.safetensors")
    with open(path, "wb") as f:
        f.write(len(hb).to_bytes(8, "little") + hb + f16 + bf16)
    back, _ = read_safetensors(path)
    check("safetensors F16/BF16 widen exactly",
          np.array_equal(back["h"].reshape(-1), vals) and np.array_equal(back["bf"], vals))


def test_forward(tmp):
    d1, d2 = os.path.join(tmp, "fw1"), os.path.join(tmp, "fw2")
    kw = dict(seed=3, hidden=24, inter=20, layers=2, heads=6, kv_heads=2, head_dim=6, vocab=33, tied=False,
              attention_bias=True, mlp_bias=True)
    make_tiny_llama(d1, **kw)
    make_tiny_llama(d2, shards=3, **kw)
    cfg, p64 = ref.load_model(d1, torch.float64)
    _, p32 = ref.load_model(d1, torch.float32)
    _, psh = ref.load_model(d2, torch.float64)
    ids = [1, 5, 9, 2, 30, 7, 7, 11, 4, 19]
    with torch.no_grad():
        full = ref.forward(cfg, p64, ids)  # (T, V)
        prefix = ref.forward(cfg, p64, ids[:6])  # (6, V)
        l32 = ref.forward(cfg, p32, ids)
        lsh = ref.forward(cfg, psh, ids)
    check("forward is causal (a prefix gives the same logits)", rel(prefix, full[:6]) < 1e-12, f"{rel(prefix, full[:6]):.1e}")
    check("float32 agrees with float64", rel(l32, full) < 1e-5, f"{rel(l32, full):.1e}")
    check("sharded folder loads like a single file", rel(lsh, full) == 0.0)


def weight_grads(cfg, params, ids, mask, modules):
    """G_m = dl/dW_m by autograd on W (the same route as expected PAGE)."""
    p = dict(params)
    Ws = [params[m + ".weight"].clone().requires_grad_(True) for m in modules]
    for m, W in zip(modules, Ws):
        p[m + ".weight"] = W
    loss = ref.record_loss(ref.forward(cfg, p, ids), ids, mask)
    return [g.detach() for g in torch.autograd.grad(loss, Ws)]


def test_page(tmp):
    d = os.path.join(tmp, "pg")
    make_tiny_llama(d, seed=5, hidden=16, inter=24, layers=2, heads=4, kv_heads=2, vocab=40)
    cfg, params = ref.load_model(d, torch.float64)
    modules = ref.candidate_modules(cfg)
    rng = np.random.default_rng(7)
    records = random_records(rng, cfg.vocab_size, [12, 17, 9], masked=True)
    rank, alpha = 4, 8.0
    s = alpha / rank
    gen = torch.Generator().manual_seed(11)
    A = {m: peft_init_A(gen, rank, params[m + ".weight"].shape[1]) for m in modules}
    init = os.path.join(tmp, "init.safetensors")
    write_safetensors(init, {m + ".lora_A.weight": A[m].numpy() for m in modules})
    A = {m: torch.from_numpy(read_safetensors(init)[0][m + ".lora_A.weight"]).double() for m in modules}  # as stored
    out = ref.handle({"model_dir": d, "mode": "page", "records": records, "rank": rank, "alpha": alpha,
                      "lora_init": init})
    check("page: modules layer-major in kind order", out["modules"][:7] == [ref.module_of(0, k) for k in ref.KINDS])

    # Finite differences of the loss in W, for a few entries of two modules: autograd's G is the true gradient.
    ids, mask = records[0]["input_ids"], records[0]["loss_mask"]
    G = weight_grads(cfg, params, ids, mask, modules)
    worst = 0.0
    for j in (6, 7 * 1 + 0):  # layer 0 down_proj, layer 1 q_proj
        name = modules[j] + ".weight"
        for (a, b) in [(0, 0), (3, 5), (1, 7)]:
            h = 1e-5
            vals = []
            for sign in (+1, -1):
                p = dict(params)
                W = params[name].clone()
                W[a, b] += sign * h
                p[name] = W
                with torch.no_grad():
                    vals.append(ref.record_loss(ref.forward(cfg, p, ids), ids, mask).item())
            fd = (vals[0] - vals[1]) / (2 * h)
            worst = max(worst, abs(fd - G[j][a, b].item()) / max(abs(fd), 1e-8))
    check("autograd dl/dW matches finite differences", worst < 1e-6, f"max rel err {worst:.1e}")

    # Identity: sampled energy is || s G A^T ||^2, record by record and module by module.
    worst = 0.0
    all_G = []
    for n, rec in enumerate(records):
        Gn = weight_grads(cfg, params, rec["input_ids"], rec["loss_mask"], modules)
        all_G.append(Gn)
        want = [(s * g @ A[m].T).pow(2).sum().item() for g, m in zip(Gn, modules)]
        worst = max(worst, rel(out["perRecordSampled"][n], want))
        want_e = [s * s * rank / (3 * g.shape[1]) * g.pow(2).sum().item() for g in Gn]
        worst = max(worst, rel(out["perRecordExpected"][n], want_e))
    check("sampled PAGE == ||s G A^T||^2 (and expected == s^2 r/(3 d_in) ||G||^2)", worst < 1e-10, f"{worst:.1e}")

    # Monte Carlo over PEFT's random A: the mean sampled energy converges to the closed form.
    K = 4000
    gen = torch.Generator().manual_seed(13)
    worst = 0.0
    for j, m in enumerate(modules):
        d_out, d_in = params[m + ".weight"].shape
        As = (torch.rand(K, rank, d_in, generator=gen, dtype=torch.float64) * 2 - 1) / math.sqrt(d_in)  # (K, r, d_in)
        mc = np.mean([(s * (Gn[j] @ As.transpose(1, 2))).pow(2).sum(dim=(1, 2)).mean().item() for Gn in all_G])
        worst = max(worst, abs(mc - out["pageExpected"][j]) / out["pageExpected"][j])
    check(f"mean over {K} random A of sampled PAGE -> expected PAGE", worst < 0.03, f"max rel dev {worst:.3f}")
    # And page mode's own seeded draw (no lora_init) gives the same expected PAGE, which does not depend on A.
    out2 = ref.handle({"model_dir": d, "mode": "page", "records": records, "rank": rank, "alpha": alpha, "seed": 4})
    check("expected PAGE is independent of A", rel(out2["pageExpected"], out["pageExpected"]) < 1e-12)
    check("share sums to 1, ranking sorted", abs(sum(out["share"]) - 1) < 1e-12 and
          out["ranking"][0] == modules[int(np.argmax(out["pageExpected"]))])


def random_adapter(path, params, modules, rank, seed, b_scale=0.3):
    rng = np.random.default_rng(seed)
    t = {}
    for m in modules:
        d_out, d_in = params[m + ".weight"].shape
        t[ref.peft_key(m, "A")] = rng.uniform(-1, 1, (rank, d_in)) / math.sqrt(d_in)
        t[ref.peft_key(m, "B")] = b_scale * rng.standard_normal((d_out, rank))
    write_safetensors(path, t)
    return {k: v.astype(np.float32).astype(np.float64) for k, v in t.items()}  # the values as stored (F32)


def test_grad_train(tmp):
    d = os.path.join(tmp, "gt")
    make_tiny_llama(d, seed=9, hidden=16, inter=20, layers=2, heads=4, kv_heads=1, vocab=30)
    cfg, params = ref.load_model(d, torch.float64)
    rng = np.random.default_rng(2)
    records = random_records(rng, cfg.vocab_size, [10, 14, 8, 11], masked=True)
    recs = ref.check_records(records, cfg)
    targets = [ref.module_of(0, "down_proj"), ref.module_of(1, "v_proj"), ref.module_of(1, "gate_proj")]
    rank, alpha = 3, 6.0
    apath = os.path.join(tmp, "adapter.safetensors")
    stored = random_adapter(apath, params, targets, rank, seed=21)
    out = ref.handle({"model_dir": d, "mode": "grad", "records": records, "rank": rank, "alpha": alpha, "adapter": apath})

    def loss_with(key, idx, delta):
        mods = {}
        for k, v in stored.items():
            v = v.copy()
            if k == key:
                v.reshape(-1)[idx] += delta
            mods.setdefault(k[len(ref.PEFT_PREFIX):].rsplit(".lora_", 1)[0], {})[k.rsplit(".lora_", 1)[1][0]] = v
        loras = ref.build_loras(cfg, params, mods, lambda m, r: alpha / rank, torch.float64)
        with torch.no_grad():
            return ref.batch_loss(cfg, params, recs, loras).item()

    worst = 0.0
    h = 1e-6
    for key in out["grads"]:
        for idx in (0, 5, len(out["grads"][key]) - 1):
            fd = (loss_with(key, idx, h) - loss_with(key, idx, -h)) / (2 * h)
            worst = max(worst, abs(fd - out["grads"][key][idx]) / max(abs(fd), 1e-6))
    check("grad mode dA, dB match finite differences", worst < 1e-6, f"max rel err {worst:.1e} over {len(out['grads'])} tensors")
    check("grad mode loss is the mean of per-record losses", abs(out["loss"] - loss_with(None, 0, 0)) < 1e-14)

    # Train mode against AdamW written out by hand (torch.optim.AdamW's algorithm, decoupled weight decay).
    batches, lrs = [[0, 1], [2, 3], [1, 3], [0]], [1e-2, 5e-3, 2e-3, 1e-3]
    betas, eps, wd = (0.8, 0.95), 1e-6, 0.1
    tr = ref.handle({"model_dir": d, "mode": "train", "records": records, "rank": rank, "alpha": alpha,
                     "adapter": apath, "steps": 4, "batches": batches, "lrs": lrs, "betas": list(betas), "eps": eps,
                     "weight_decay": wd})
    mods = {}
    for k, v in stored.items():
        mods.setdefault(k[len(ref.PEFT_PREFIX):].rsplit(".lora_", 1)[0], {})[k.rsplit(".lora_", 1)[1][0]] = v
    loras = ref.build_loras(cfg, params, mods, lambda m, r: alpha / rank, torch.float64, requires_grad=True)
    leaves = [(ref.peft_key(m, tag), t) for m, (A, B, _) in loras.items() for tag, t in (("A", A), ("B", B))]
    m1 = {k: torch.zeros_like(t) for k, t in leaves}
    m2 = {k: torch.zeros_like(t) for k, t in leaves}
    losses = []
    for step, (batch, lr) in enumerate(zip(batches, lrs), start=1):
        loss = ref.batch_loss(cfg, params, [recs[i] for i in batch], loras)
        grads = torch.autograd.grad(loss, [t for _, t in leaves])
        losses.append(loss.item())
        with torch.no_grad():
            for (k, t), g in zip(leaves, grads):
                t.mul_(1 - lr * wd)  # decoupled: decay the weight itself, not the gradient
                m1[k] = betas[0] * m1[k] + (1 - betas[0]) * g
                m2[k] = betas[1] * m2[k] + (1 - betas[1]) * g * g
                mhat = m1[k] / (1 - betas[0] ** step)
                vhat = m2[k] / (1 - betas[1] ** step)
                t.sub_(lr * mhat / (vhat.sqrt() + eps))
    check("train losses match hand-written AdamW", rel(tr["losses"], losses) < 1e-12, f"{tr['losses']}")
    worst = max(rel(tr["adapter"][k], t.detach().reshape(-1).numpy()) for k, t in leaves)
    check("train final adapter matches hand-written AdamW", worst < 1e-10, f"{worst:.1e}")
    check("train step-1 loss equals grad mode loss on the same batch",
          abs(tr["losses"][0] - ref.handle({"model_dir": d, "mode": "grad", "records": records[:2], "rank": rank,
                                            "alpha": alpha, "adapter": apath})["loss"]) < 1e-14)
    return d, params, records, stored, targets


def test_eval_adapter(tmp, d, params, records, stored, targets):
    rank, alpha = 3, 6.0
    adir = os.path.join(tmp, "peft")
    os.makedirs(adir, exist_ok=True)
    write_safetensors(os.path.join(adir, "adapter_model.safetensors"), stored)

    def cfg_with(**kw):
        c = {"peft_type": "LORA", "r": rank, "lora_alpha": alpha, "target_modules": ["down_proj", "v_proj", "gate_proj"],
             "bias": "none", "task_type": "CAUSAL_LM"}
        c.update(kw)
        with open(os.path.join(adir, "adapter_config.json"), "w") as f:
            json.dump(c, f)

    def grad_loss(mods, scale):
        sub = os.path.join(tmp, "sub.safetensors")
        write_safetensors(sub, {k: v for k, v in stored.items() if any(k.startswith(ref.PEFT_PREFIX + m + ".") for m in mods)})
        # grad mode's batch loss is the mean of per-record losses: the same number eval-adapter's meanLoss reports.
        return ref.handle({"model_dir": d, "mode": "grad", "records": records, "rank": rank, "alpha": scale * rank,
                           "adapter": sub})["loss"]

    cfg_with()
    ev = ref.handle({"model_dir": d, "mode": "eval-adapter", "records": records, "adapter_dir": adir})
    check("eval-adapter == grad-mode loss (all targets, alpha/r)",
          abs(ev["meanLoss"] - grad_loss(targets, alpha / rank)) < 1e-12 and ev["adaptedModules"] == sorted(targets))
    merged = ref.handle({"model_dir": d, "mode": "eval-adapter", "records": records, "adapter_dir": adir, "merge": True})
    check("eval-adapter merge: W + s B A folded in gives the side branch's loss", merged.get("merged") is True and
          abs(merged["meanLoss"] - ev["meanLoss"]) < 1e-12, f"{merged['meanLoss']} vs {ev['meanLoss']}")
    cfg_with(layers_to_transform=[1])
    ev = ref.handle({"model_dir": d, "mode": "eval-adapter", "records": records, "adapter_dir": adir})
    want = [m for m in targets if ".layers.1." in m]
    check("eval-adapter honours layers_to_transform", ev["adaptedModules"] == sorted(want) and
          abs(ev["meanLoss"] - grad_loss(want, alpha / rank)) < 1e-12, f"ignored {ev['ignoredModules']}")
    cfg_with(use_rslora=True)
    ev = ref.handle({"model_dir": d, "mode": "eval-adapter", "records": records, "adapter_dir": adir})
    check("eval-adapter rsLoRA scale alpha/sqrt(r)", abs(ev["meanLoss"] - grad_loss(targets, alpha / math.sqrt(rank))) < 1e-12)
    cfg_with(target_modules=r".*\.layers\.0\.mlp\.down_proj")
    ev = ref.handle({"model_dir": d, "mode": "eval-adapter", "records": records, "adapter_dir": adir})
    check("eval-adapter regex target_modules", ev["adaptedModules"] == [targets[0]])


def test_cli(tmp, d, records):
    script = os.path.join(HERE, "llama_ref.py")
    req = os.path.join(tmp, "req.json")
    with open(req, "w") as f:
        json.dump({"model_dir": d, "mode": "page", "records": records, "rank": 2, "alpha": 4, "time": True}, f)
    p = subprocess.run([sys.executable, script, req], capture_output=True, text=True)
    ok = p.returncode == 0 and len(json.loads(p.stdout)["pageExpected"]) == 14 and "seconds" in json.loads(p.stdout)
    check("CLI page request returns JSON", ok, p.stderr.strip()[-200:])
    with open(req, "w") as f:
        json.dump({"model_dir": os.path.join(tmp, "nope"), "mode": "loss", "records": records}, f)
    p = subprocess.run([sys.executable, script, req], capture_output=True, text=True)
    check("CLI missing model exits 2 with a message", p.returncode == 2 and "error" in json.loads(p.stdout)
          and "config.json" in p.stderr, p.stdout.strip())


def main():
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="llama-ref-selftest-") as tmp:
        test_safetensors(tmp)
        test_forward(tmp)
        test_page(tmp)
        d, params, records, stored, targets = test_grad_train(tmp)
        test_eval_adapter(tmp, d, params, records, stored, targets)
        test_cli(tmp, d, records)
    print(f"{time.perf_counter() - t0:.1f} s")
    print("FAIL: " + ", ".join(FAILED) if FAILED else "PASS")
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
