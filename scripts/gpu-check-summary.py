#!/usr/bin/env python3
"""Last phase of scripts/gpu-check.sh: merges its parts into OUT/gpu-check.json and prints a compact summary.

  python3 scripts/gpu-check-summary.py OUT RUN_DIR ELAPSED_S BUDGET_S TINY

Reads OUT/webgpu-matmul.json, OUT/torch-matmul.json, OUT/bench.json, RUN_DIR/phases.tsv, RUN_DIR/nvidia-smi.csv and
.gpu/MANIFEST.txt, each only if present: a part that failed or never ran shows as missing, never stops the summary.
Plain Python (no torch), so it runs wherever gpu-check.sh does.
"""
import datetime
import json
import os
import platform
import sys

out, run, elapsed, budget, tiny = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), sys.argv[5] == "1"
root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        return {"missing": f"{os.path.basename(path)}: {type(e).__name__}: {e}"}


def text(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


phases = []
for line in (text(os.path.join(run, "phases.tsv")) or "").splitlines():
    name, status, secs, note = (line.split("\t") + ["", "", "", ""])[:4]
    phases.append({"name": name, "status": status, "seconds": float(secs or 0), "note": note})
smi = None
csv = text(os.path.join(run, "nvidia-smi.csv"))
if csv and len(csv.splitlines()) > 1:
    keys = [k.strip() for k in csv.splitlines()[0].split(",")]
    vals = [v.strip() for v in csv.splitlines()[1].split(",")]
    smi = dict(zip(keys, vals))
manifest = text(os.path.join(root, ".gpu", "MANIFEST.txt"))
wg = load(os.path.join(out, "webgpu-matmul.json"))
tm = load(os.path.join(out, "torch-matmul.json"))
bench = load(os.path.join(out, "bench.json"))

LIMITS = ["maxStorageBufferBindingSize", "maxBufferSize", "maxComputeWorkgroupStorageSize",
          "maxComputeInvocationsPerWorkgroup", "maxComputeWorkgroupSizeX", "maxComputeWorkgroupsPerDimension"]
adapter = wg.get("adapter") or {}
dev_limits = (wg.get("tfjsDevice") or {}).get("limits") or {}

# Matmul: ours (webgpu fp32) beside torch's fp32 / tf32 / bf16, by shape name.
torch_rows = {}
for r in tm.get("rows", []):
    torch_rows.setdefault(r["name"], {})[r["mode"]] = r
matmul = []
for r in wg.get("rows", []):
    t = torch_rows.get(r["name"], {})
    g = {m: t[m].get("gflops") for m in ("fp32", "tf32", "bf16") if m in t}
    matmul.append({"shape": r["name"], "webgpuGflops": r.get("gflops"), "webgpuRelErr": r.get("relErr"),
                   "webgpuError": r.get("error") or r.get("validationError"), "torchGflops": g,
                   "torchRelErr": {m: t[m].get("relErr") for m in t},
                   "webgpuOverTorchFp32": (r["gflops"] / g["fp32"]) if r.get("gflops") and g.get("fp32") else None})
for name, t in torch_rows.items():  # torch shapes the webgpu side never reached
    if name not in {m["shape"] for m in matmul}:
        matmul.append({"shape": name, "webgpuGflops": None, "torchGflops": {m: t[m].get("gflops") for m in t}})

rows = []
raw = bench.get("raw") or {}
for job, pair in raw.items():
    ours, torch = pair.get("ours", {}), pair.get("torch", {})
    best = lambda j: min(j["perRecordSeconds"]) if j.get("perRecordSeconds") else None  # noqa: E731
    row = {"job": job, "oursSeconds": ours.get("seconds"), "oursError": ours.get("error"),
           "oursLoadSeconds": ours.get("loadSeconds"), "oursBackend": ours.get("backend"),
           "torchSeconds": torch.get("seconds"), "torchError": torch.get("error"), "torchDevice": torch.get("device"),
           "torchDeviceNote": torch.get("deviceNote"), "torchSecondStepSeconds": torch.get("secondStepSeconds"),
           "oursLoss": ours.get("loss"), "torchLoss": torch.get("loss"),
           "oursBestRecordSeconds": best(ours), "torchBestRecordSeconds": best(torch),
           "oursPeakRssMB": ours.get("peakRssMB"), "torchPeakRssMB": torch.get("peakRssMB"),
           "torchPeakCudaMB": torch.get("peakCudaMB")}
    if row["oursSeconds"] and row["torchSeconds"]:
        row["timeRatio"] = row["oursSeconds"] / row["torchSeconds"]
    if row["oursBestRecordSeconds"] and row["torchBestRecordSeconds"]:
        row["bestRecordRatio"] = row["oursBestRecordSeconds"] / row["torchBestRecordSeconds"]
    if row["oursLoss"] is not None and row["torchLoss"] is not None:
        row["lossRelDiff"] = abs(row["oursLoss"] - row["torchLoss"]) / max(abs(row["torchLoss"]), 1e-12)
    rows.append(row)

result = {
    "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "tiny": tiny,
    "elapsedSeconds": elapsed, "budgetSeconds": budget, "phases": phases,
    "machine": {"uname": " ".join(platform.uname()), "cpus": os.cpu_count(), "nvidiaSmi": smi},
    "versions": {"node": wg.get("node"), "torch": tm.get("torch"), "cuda": tm.get("cuda"),
                 "gpu": tm.get("gpu"), "driver": (smi or {}).get("driver_version"),
                 "webgpuBackend": wg.get("backend"), "pack": (manifest or "").splitlines()[:2]},
    "webgpu": {"adapterInfo": adapter.get("info"), "adapterLimits": adapter.get("limits"),
               "adapterFeatures": adapter.get("features"), "tfjsDeviceLimits": dev_limits,
               "tfjsDeviceFeatures": (wg.get("tfjsDevice") or {}).get("features"),
               "backendError": wg.get("backendError"), "backendInitSeconds": wg.get("backendInitSeconds"),
               "bigBuffer": wg.get("bigBuffer"), "uncapturedErrors": wg.get("uncapturedErrors"),
               "fatal": wg.get("fatal"), "missing": wg.get("missing")},
    "torchCopy": tm.get("copy"), "torchDeviceNote": tm.get("deviceNote"), "torchMissing": tm.get("missing"),
    "matmul": matmul,
    "bench": {"rows": rows, "backend": bench.get("backend"), "torchDevice": bench.get("torchDevice"),
              "records": bench.get("records"), "tokens": bench.get("tokens"), "shape": bench.get("shape"),
              "qwen15": bench.get("qwen15"), "summary": bench.get("summary"), "missing": bench.get("missing"),
              "totalSeconds": bench.get("totalSeconds")},
}
with open(os.path.join(out, "gpu-check.json"), "w") as f:
    json.dump(result, f, indent=1)


def f(v, d=1):
    return "-" if v is None else (f"{v:.{d}f}" if isinstance(v, (int, float)) else str(v))


def short(s, n=110):
    s = " ".join(str(s).split())
    return s if len(s) <= n else s[: n - 1] + "…"


print(f"== gpu-check summary ({'TINY shapes, ' if tiny else ''}{elapsed:.0f} s of {budget:.0f})")
print("phases: " + " | ".join(f"{p['name']} {p['status']} {p['seconds']:.0f}s" for p in phases))
v = result["versions"]
print(f"gpu: {v['gpu'] or (smi or {}).get('name', '-')}, driver {v['driver'] or '-'}; node {v['node'] or '-'}; "
      f"torch {v['torch'] or '-'} cuda {v['cuda'] or '-'}" + (f" ({tm['deviceNote']})" if tm.get("deviceNote") else ""))
info = adapter.get("info") or {}
if info:
    al = adapter.get("limits") or {}
    print(f"webgpu adapter: {info.get('vendor')} / {info.get('architecture')} / {short(info.get('description') or info.get('device'), 60)}")
    print("  limits (adapter -> tfjs device): " + ", ".join(
        f"{k} {al.get(k)}{'' if dev_limits.get(k) == al.get(k) else ' -> ' + str(dev_limits.get(k))}" for k in LIMITS[:2]))
else:
    print(f"webgpu: no adapter ({short(wg.get('backendError') or wg.get('missing') or wg.get('fatal'))})")
bb = wg.get("bigBuffer")
if bb:
    print(f"  big tensor {bb['rows']}x{bb['hidden']} f32 ({bb['bytes'] / 2**20:.0f} MiB) bound whole: "
          + ("OK" if bb.get("ok") else "FAILED " + short(bb.get("validationError") or bb.get("error") or bb.get("outOfMemoryError")
                                                             or f"headRelErr {bb.get('headRelErr')} gatherExact {bb.get('gatherExact')}", 90)))
if matmul:
    print(f"matmul GFLOP/s  {'shape':20s} {'webgpu':>9s} {'t.fp32':>9s} {'t.tf32':>9s} {'t.bf16':>9s}  webgpu/fp32  webgpu err")
    for m in matmul:
        g = m.get("torchGflops") or {}
        err = m.get("webgpuError")
        print(f"               {m['shape']:20s} {f(m['webgpuGflops']):>9s} {f(g.get('fp32')):>9s} {f(g.get('tf32')):>9s} "
              f"{f(g.get('bf16')):>9s}  {f(m.get('webgpuOverTorchFp32'), 3):>11s}  "
              + (short(err, 40) if err else f(m.get('webgpuRelErr'), 8) if m.get("webgpuRelErr") is None else f"{m['webgpuRelErr']:.1e}"))
cp = tm.get("copy") or {}
if cp.get("GBps"):
    print(f"torch copy {cp['bytes'] >> 20} MiB: {cp['GBps']:.0f} GB/s (read + write)")
if rows:
    ran = sorted({r["torchDevice"] for r in rows if r.get("torchDevice")})
    note = next((r["torchDeviceNote"] for r in rows if r.get("torchDeviceNote")), None)
    print(f"bench: ours on {bench.get('backend')} vs PyTorch on {'/'.join(ran) or bench.get('torchDevice')}"
          f"{f' ({note})' if note else ''}, seconds (model load excluded)")
    for r in rows:
        ours = f(r["oursSeconds"], 2) if r["oursError"] is None else "FAILED"
        th = f(r["torchSeconds"], 2) if r["torchError"] is None else "FAILED"
        line = f"  {r['job']:13s} ours {ours:>7s}  torch {th:>7s}  ratio {f(r.get('timeRatio'), 2):>6s}"
        if r.get("bestRecordRatio"):
            line += f"  best record {f(r['oursBestRecordSeconds'], 3)} / {f(r['torchBestRecordSeconds'], 3)} = {r['bestRecordRatio']:.2f}"
        if r.get("lossRelDiff") is not None:
            line += f"  loss diff {r['lossRelDiff']:.1e}"
        print(line)
        for side in ("ours", "torch"):
            if r[f"{side}Error"]:
                print(f"      {side}: {short(r[side + 'Error'], 150)}")
elif bench.get("missing"):
    print(f"bench: {short(bench['missing'])}")
print(f"full figures: {os.path.join(out, 'gpu-check.json')}; log: {os.path.join(out, 'gpu-check.log')}")
