#!/usr/bin/env bash
# One prepared run on the device tool's GPU machine (NVIDIA H200: x86-64, PyTorch with CUDA, no Node, no Vulkan
# loader). Builds nothing there: everything comes from .gpu/ (scripts/gpu-pack.sh, carried) and the tracked tree.
#
#   bash scripts/gpu-check.sh          from anywhere in the checkout; OUT is where the figures go
#
# Phases, each under `timeout` and all inside one budget (GPU_CHECK_BUDGET_S, default 450 s), each one's failure
# recorded and the next one run:
#   unpack        .gpu/payload.tar.xz into $GPU_RUN_DIR (default /tmp/domlora-gpu; tar -J, or python3's tarfile where
#                 xz is missing); the Vulkan loader .debs with dpkg -x into / and ldconfig, only if ldconfig knows no
#                 libvulkan.so.1 (the device README's recipe); NVIDIA's ICD from /usr/local/nvidia if none is installed
#   matmul        scripts/gpu-matmul.ts: Dawn's adapter (info, limits, what tfjs-backend-webgpu's device got), fp32 matmul
#                 GFLOP/s through tfjs-webgpu, and a 933 MB tensor (the Qwen2.5-1.5B embedding) bound whole
#   torch-matmul  scripts/gpu-matmul-torch.py: the same shapes in PyTorch on CUDA, fp32 / tf32 / bf16, and a copy
#   bench         scripts/bench.ts with BENCH_BACKEND=webgpu against bench_torch.py --device cuda: rows page (PAGE probe,
#                 SmolLM-135M shapes, 4 x 500 tokens), train-dom (DomLoRA step, batch 4) and qwen15 (Qwen2.5-1.5B
#                 shapes, PAGE over 2 x 256 tokens); a failed row is recorded and the next one runs
#   summary       scripts/gpu-check-summary.py: $OUT/gpu-check.json and the table printed at the end
# $OUT gets gpu-check.json, gpu-check.log (everything, Dawn's warnings included), webgpu-matmul.json,
# torch-matmul.json and bench.json. Only the summary goes to stdout.
#
# Switches: GPU_CHECK_TINY=1 (tiny shapes: a dry run on lavapipe / a CPU), GPU_CHECK_PHASES=matmul,torch-matmul,bench,
# GPU_CHECK_PYTHON (default python3), GPU_CHECK_DPKG_ROOT=dir (unpack the .debs there and put their libraries on
# LD_LIBRARY_PATH instead of touching /), GPU_CHECK_UNPACK=python (force the tarfile fallback), and the bench's own
# BENCH_ONLY, BENCH_RECORDS, BENCH_CHILD_TIMEOUT_S.
set -u
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
T0=$(date +%s)
BUDGET=${GPU_CHECK_BUDGET_S:-450}
DEADLINE=$((T0 + BUDGET))
TINY=${GPU_CHECK_TINY:-0}
PHASES=",${GPU_CHECK_PHASES:-matmul,torch-matmul,bench},"
RUN=${GPU_RUN_DIR:-/tmp/domlora-gpu}
PY=${GPU_CHECK_PYTHON:-python3}
OUT=${OUT:-$(mktemp -d /tmp/gpu-check-out.XXXXXX)}
mkdir -p "$OUT"
LOG=$OUT/gpu-check.log
exec 3>&1 >"$LOG" 2>&1
say() { echo "$*"; echo "$*" >&3; }
tiny_flag=(); [ "$TINY" = 1 ] && tiny_flag=(--tiny)

rm -rf "$RUN"; mkdir -p "$RUN"
PHASE_FILE=$RUN/phases.tsv
: > "$PHASE_FILE"
# phase NAME MAX_SECONDS COMMAND...: runs it under timeout, min(MAX, what the budget has left), and records the outcome.
phase() {
  local name=$1 max=$2; shift 2
  local left=$((DEADLINE - $(date +%s) - 20)) t rc start
  t=$(( max < left ? max : left ))
  if [ "$t" -lt 10 ]; then
    printf '%s\tskipped\t0\t%s\n' "$name" "budget spent" >> "$PHASE_FILE"; say "[$name] skipped: budget spent"; return 1
  fi
  echo "===== [$name] $(date -u +%T) timeout ${t}s: $*"
  start=$(date +%s)
  timeout -k 10 "$t" "$@"
  rc=$?
  local secs=$(( $(date +%s) - start )) status=ok
  [ $rc -eq 124 ] || [ $rc -eq 137 ] && status=timeout
  [ $rc -ne 0 ] && [ $status = ok ] && status=failed
  printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$secs" "rc $rc" >> "$PHASE_FILE"
  echo "===== [$name] $status (rc $rc) in ${secs}s"
  say "[$name] $status (rc $rc, ${secs} s)"
  return $rc
}

say "DomLoRA gpu-check$([ "$TINY" = 1 ] && echo ' (TINY shapes)'): OUT=$OUT, run dir $RUN, budget ${BUDGET} s"
echo "host: $(uname -a)"; echo "glibc: $(ldd --version 2>&1 | head -1)"; echo "cpus: $(nproc)"
head -3 .gpu/MANIFEST.txt 2>/dev/null

# ---- unpack -------------------------------------------------------------------------------------------------------
unpack_payload() {
  [ -f .gpu/payload.tar.xz ] || { echo "no .gpu/payload.tar.xz: run scripts/gpu-pack.sh here and carry .gpu"; return 1; }
  if [ "${GPU_CHECK_UNPACK:-}" != python ] && command -v xz >/dev/null; then
    echo "unpacking with tar -xJf"; tar -C "$RUN" -xJf .gpu/payload.tar.xz || return 1
  else
    echo "unpacking with $PY's tarfile (lzma)"
    "$PY" -c 'import sys, tarfile
t = tarfile.open(sys.argv[1], "r:xz")
t.extractall(sys.argv[2], **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))' .gpu/payload.tar.xz "$RUN" || return 1
  fi
  "$RUN/node/bin/node" -e 'console.log("unpacked node", process.version, process.execPath)'
}
export -f unpack_payload; export RUN PY
phase unpack 120 bash -c unpack_payload
NODE=$RUN/node/bin/node
# dawn.node needs GCC 12's libstdc++ (GLIBCXX_3.4.30): if the system's is older, use the one packed beside it.
DAWN=$RUN/node_modules/webgpu/dist/linux-x64/dawn.node
if [ -x "$NODE" ] && ! "$NODE" -e "require('$DAWN')" 2>"$RUN/dawn-load.txt"; then
  cat "$RUN/dawn-load.txt"
  export LD_LIBRARY_PATH="$RUN/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  "$NODE" -e "require('$DAWN')" && say "[dawn] loads with the packed libstdc++ only" || say "[dawn] dawn.node does not load: $(head -c 300 "$RUN/dawn-load.txt")"
fi

# The Vulkan loader: the README's dpkg -x into / only where none is installed; elsewhere (a dry run) into a folder.
deb_extract() { # deb_extract FILE DIR: dpkg -x, or python3 reading the ar archive where dpkg is missing
  if command -v dpkg >/dev/null; then dpkg -x "$1" "$2"; else
    "$PY" -c 'import io, sys, tarfile
d = open(sys.argv[1], "rb").read(); i = 8
while i < len(d):
    name, size = d[i:i + 16].decode().strip().rstrip("/"), int(d[i + 48:i + 58].decode().strip()); i += 60
    if name.startswith("data.tar"):
        tarfile.open(fileobj=io.BytesIO(d[i:i + size])).extractall(sys.argv[2])
    i += size + (size & 1)' "$1" "$2"; fi
}
if [ -n "${GPU_CHECK_DPKG_ROOT:-}" ]; then
  mkdir -p "$GPU_CHECK_DPKG_ROOT"
  for f in .gpu/debs/*.deb; do deb_extract "$f" "$GPU_CHECK_DPKG_ROOT"; done
  export LD_LIBRARY_PATH="$GPU_CHECK_DPKG_ROOT/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  say "[vulkan] loader unpacked into $GPU_CHECK_DPKG_ROOT and put first on LD_LIBRARY_PATH: $(ls "$GPU_CHECK_DPKG_ROOT"/usr/lib/x86_64-linux-gnu/libvulkan.so.1* | xargs -n1 basename | tr '\n' ' ')"
elif ldconfig -p | grep -q 'libvulkan\.so\.1 '; then
  say "[vulkan] loader already installed: $(ldconfig -p | grep 'libvulkan\.so\.1 ' | head -1 | sed 's/.*=> //')"
else
  for f in .gpu/debs/*.deb; do deb_extract "$f" /; done
  ldconfig
  say "[vulkan] loader unpacked into / from .gpu/debs: $(ldconfig -p | grep -c 'libvulkan\.so\.1 ') libvulkan.so.1 in ldconfig"
fi
NV=/usr/local/nvidia
if [ -z "${VK_DRIVER_FILES:-}${VK_ICD_FILENAMES:-}" ] && [ -f $NV/share/vulkan/icd.d/nvidia_icd.json ] &&
   ! ls /usr/share/vulkan/icd.d/nvidia_icd*.json /etc/vulkan/icd.d/nvidia_icd*.json >/dev/null 2>&1; then
  export VK_DRIVER_FILES=$NV/share/vulkan/icd.d/nvidia_icd.json VK_ICD_FILENAMES=$NV/share/vulkan/icd.d/nvidia_icd.json
  export __EGL_VENDOR_LIBRARY_FILENAMES=$NV/share/glvnd/egl_vendor.d/10_nvidia.json
fi
if [ -d $NV/lib64 ] && [[ ":${LD_LIBRARY_PATH:-}:" != *":$NV/lib64:"* ]]; then
  export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$NV/lib64"
fi
say "[vulkan] VK_DRIVER_FILES=${VK_DRIVER_FILES:-(loader default)}"
echo "ICD files:"; ls -la /usr/share/vulkan/icd.d /etc/vulkan/icd.d $NV/share/vulkan/icd.d 2>&1
echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"

# ---- the bench's random models, written in the background while the GPU phases run ---------------------------------
# (the Qwen2.5-1.5B one is 1.54B BF16 parameters drawn in JS: minutes of one CPU core; the bench waits for it).
PREP_PIDS=()
if [[ $PHASES == *,bench,* ]] && [ -x "$NODE" ]; then
  export BENCH_MODELS=$RUN/models BENCH_TINY=$TINY BENCH_DEADLINE=$((DEADLINE - 25))
  export BENCH_ONLY=${BENCH_ONLY:-page,train-dom,qwen15}
  for rows in $(echo "$BENCH_ONLY" | tr ',' '\n' | sed 's/^\(page\|train-dom\|train-vanilla\)$/page/' | sort -u); do
    timeout -k 5 $((DEADLINE - $(date +%s))) nice "$NODE" "$RUN/out/gpu/bench.js" prepare "$rows" &
    PREP_PIDS+=($!)
  done
  say "[models] writing in the background for rows $BENCH_ONLY (pids ${PREP_PIDS[*]})"
fi

# ---- GPU ----------------------------------------------------------------------------------------------------------
if command -v nvidia-smi >/dev/null; then
  timeout 30 nvidia-smi
  timeout 30 nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used,clocks.sm,clocks.max.sm,temperature.gpu,power.draw \
    --format=csv > "$RUN/nvidia-smi.csv"
  say "[gpu] $(tail -1 "$RUN/nvidia-smi.csv")"
else
  say "[gpu] no nvidia-smi on this machine"
fi

# ---- the phases ---------------------------------------------------------------------------------------------------
if [[ $PHASES == *,matmul,* ]]; then
  phase matmul $([ "$TINY" = 1 ] && echo 240 || echo 120) "$NODE" --enable-source-maps "$RUN/out/gpu/gpu-matmul.js" "$OUT/webgpu-matmul.json" "${tiny_flag[@]}"
fi
if [[ $PHASES == *,torch-matmul,* ]]; then
  export PYTHONUNBUFFERED=1
  phase torch-matmul $([ "$TINY" = 1 ] && echo 150 || echo 90) "$PY" scripts/gpu-matmul-torch.py "$OUT/torch-matmul.json" "${tiny_flag[@]}"
fi
if [[ $PHASES == *,bench,* ]]; then
  rm -f "$ROOT/bench-results/bench.json"
  export BENCH_BACKEND=${BENCH_BACKEND:-webgpu} BENCH_TORCH_DEVICE=${BENCH_TORCH_DEVICE:-cuda} BENCH_PYTHON
  BENCH_PYTHON=$(command -v "$PY")
  export BENCH_RECORDS=${BENCH_RECORDS:-4}
  export BENCH_CHILD_TIMEOUT_S=${BENCH_CHILD_TIMEOUT_S:-180} BENCH_DEADLINE=$((DEADLINE - 25)) BENCH_ROOT=$ROOT
  export BENCH_CHILD_STDERR=1 BENCH_TINY=$TINY PYTHONUNBUFFERED=1
  echo "bench env: $(env | grep ^BENCH_ | sort | tr '\n' ' ')"
  phase bench 100000 "$NODE" --enable-source-maps "$RUN/out/gpu/bench.js"
  cp "$ROOT/bench-results/bench.json" "$OUT/bench.json" 2>/dev/null || echo "no bench-results/bench.json"
fi
for p in "${PREP_PIDS[@]}"; do kill "$p" 2>/dev/null && echo "stopped model writer $p"; done

# ---- summary ------------------------------------------------------------------------------------------------------
echo "===== [summary] $(date -u +%T)"
timeout 60 "$PY" scripts/gpu-check-summary.py "$OUT" "$RUN" "$(( $(date +%s) - T0 ))" "$BUDGET" "$TINY" > "$RUN/summary.txt" 2>&1
cat "$RUN/summary.txt"; cat "$RUN/summary.txt" >&3
ls -la "$OUT"
