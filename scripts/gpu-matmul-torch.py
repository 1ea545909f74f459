#!/usr/bin/env python3
"""PyTorch side of scripts/gpu-check.sh's phase (a): matmul rates for the shapes of scripts/gpu-matmul.ts, in float32
(TF32 off, torch's default), TF32 and bfloat16, and a device-to-device copy: the ceilings our webgpu figures compare to.

  python3 scripts/gpu-matmul-torch.py OUT.json [--tiny]

On CUDA: random normal inputs, 3 warm-ups, then the median of `reps` products timed one by one with CUDA events; a
float64 product of 4 rows checks each result (relative norm error). Without CUDA (a dry run on a CPU) it runs float32
and bfloat16 on the CPU with wall clocks, and says so in "deviceNote".
"""
import json
import statistics
import sys
import time

import torch

out_path = sys.argv[1]
tiny = "--tiny" in sys.argv
cuda = torch.cuda.is_available()
dev = torch.device("cuda" if cuda else "cpu")
res = {"torch": torch.__version__, "device": dev.type, "rows": []}
if not cuda:
    res["deviceNote"] = "torch.cuda.is_available() is false: ran on the CPU"
else:
    res["gpu"] = torch.cuda.get_device_name(0)
    res["cuda"] = torch.version.cuda
    p = torch.cuda.get_device_properties(0)
    res["multiprocessors"] = p.multi_processor_count
    res["memoryGB"] = p.total_memory / 1e9


def save():
    with open(out_path, "w") as f:
        json.dump(res, f, indent=1)


def timed(fn, reps):
    """Median milliseconds of fn() over reps runs, after 3 warm-ups."""
    for _ in range(3):
        fn()
    times = []
    if cuda:
        torch.cuda.synchronize()
        for _ in range(reps):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b))
    else:
        for _ in range(reps):
            t = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


SHAPES = [("512x576x1536", 1, 512, 576, 1536, False), ("512x1536x576", 1, 512, 1536, 576, False),
          ("512x576x1536 B^T", 1, 512, 576, 1536, True)]
if not tiny:
    SHAPES += [("9x[500x64x500] B^T", 9, 500, 64, 500, True), ("2048^3", 1, 2048, 2048, 2048, False),
               ("4096^3", 1, 4096, 4096, 4096, False), ("8192^3", 1, 8192, 8192, 8192, False)]
MODES = [("fp32", torch.float32, False), ("tf32", torch.float32, True), ("bf16", torch.bfloat16, False)]
if not cuda:
    MODES = [m for m in MODES if m[0] != "tf32"]

gen = torch.Generator(device=dev).manual_seed(0)
for name, bt, m, k, n, tb in SHAPES:
    a64 = torch.randn(bt, m, k, generator=gen, device=dev, dtype=torch.float32)
    b64 = torch.randn(bt, n, k, generator=gen, device=dev, dtype=torch.float32) if tb else \
        torch.randn(bt, k, n, generator=gen, device=dev, dtype=torch.float32)
    ref = a64[0, m // 2 - 2: m // 2 + 2].double() @ (b64[0].double().T if tb else b64[0].double())
    for mode, dtype, tf32 in MODES:
        row = {"name": name, "mode": mode, "batch": bt, "m": m, "k": k, "n": n, "transposeB": tb}
        try:
            torch.backends.cuda.matmul.allow_tf32 = tf32
            a, b = a64.to(dtype), b64.to(dtype)
            if bt == 1:
                a, b = a[0], b[0]
            bb = b.transpose(-2, -1) if tb else b
            flop = 2 * bt * m * k * n
            reps = 5 if not cuda else max(10, min(200, int(2e12 / flop)))
            ms = timed(lambda: a @ bb, reps)
            c = a @ bb
            got = (c if bt == 1 else c[0])[m // 2 - 2: m // 2 + 2].double()
            row.update(reps=reps, medianMs=ms, gflops=flop / (ms * 1e6),
                       relErr=float((got - ref).norm() / ref.norm()))
            del a, b, bb, c
        except Exception as e:  # noqa: BLE001  (recorded per row; the next row runs)
            row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0]}"
        torch.backends.cuda.matmul.allow_tf32 = False
        res["rows"].append(row)
        print(f"{name:20s} {mode:5s} " + (f"FAILED {row['error']}" if "error" in row else
              f"{row['medianMs']:9.3f} ms {row['gflops']:10.1f} GFLOP/s  rel err {row['relErr']:.1e}"), flush=True)
        save()
    del a64, b64

# Device-to-device copy: bytes read + written over the time (the memory-bound ceiling).
try:
    nbytes = (64 << 20) if tiny or not cuda else (2 << 30)
    src = torch.empty(nbytes // 4, device=dev, dtype=torch.float32).uniform_()
    dst = torch.empty_like(src)
    ms = timed(lambda: dst.copy_(src), 10 if cuda else 3)
    res["copy"] = {"bytes": nbytes, "medianMs": ms, "GBps": 2 * nbytes / (ms * 1e6)}
    print(f"copy {nbytes >> 20} MiB: {res['copy']['GBps']:.0f} GB/s (read + write)", flush=True)
    del src, dst
except Exception as e:  # noqa: BLE001
    res["copy"] = {"error": str(e).splitlines()[0]}
save()
