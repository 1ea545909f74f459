#!/usr/bin/env bash
# Packs what scripts/gpu-check.sh needs on the device tool's GPU machine (x86-64, PyTorch with CUDA, no Node, no
# Vulkan loader) into .gpu/ (git-ignored), to be named in the run's `carry`. Run it here, from any directory of the
# checkout the device tool sends, after `npm ci`:
#
#   bash scripts/gpu-pack.sh            -> .gpu/payload.tar.xz, .gpu/debs/*.deb, .gpu/MANIFEST.txt
#
# payload.tar.xz (unpacked there by gpu-check.sh into /tmp, never into /):
#   node/bin/node                      this machine's Node (NodeSource build: needs only glibc and libstdc++)
#   out/gpu/bench.js, gpu-matmul.js    scripts/bench.ts and scripts/gpu-matmul.ts bundled by esbuild; everything but
#                                      the tfjs packages and webgpu is inside them
#   node_modules/@tensorflow/*         tfjs-core, -backend-cpu, -backend-wasm (with its .wasm files), -backend-webgpu:
#                                      package.json and the one file `main` names (core and cpu re-bundled with
#                                      their own dependencies); one tfjs-core for all, as the engine needs
#   node_modules/webgpu                its JS and the linux-x64 dawn.node only (the package ships Dawn for 5 platforms)
#   lib/libstdc++.so.6                 this machine's, used there only if dawn.node cannot load with the system's
#                                      (it needs GLIBCXX_3.4.30, i.e. GCC 12's libstdc++, and glibc 2.34)
# debs/: the Vulkan loader and GL dispatch libraries as the device README lists them (apt-get download, amd64).
# The PyTorch side (test/reference/bench_torch.py, scripts/gpu-matmul-torch.py) is tracked and travels anyway.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
DEST=.gpu
LIMIT_MB=55 # the tree that travels is 64 MiB at most, tracked files included

[ -d node_modules/@tensorflow/tfjs-backend-webgpu ] && [ -f node_modules/webgpu/dist/linux-x64/dawn.node ] ||
  { echo "gpu-pack: run npm ci first (node_modules/@tensorflow/tfjs-backend-webgpu, webgpu)" >&2; exit 1; }
NODE_BIN=$(command -v node)
file -L "$NODE_BIN" | grep -q 'x86-64' || { echo "gpu-pack: $NODE_BIN is not an x86-64 program; the device is x86-64" >&2; exit 1; }
git check-ignore -q "$DEST/" || { echo "gpu-pack: $DEST/ is not git-ignored; it must not travel as untracked files" >&2; exit 1; }

STAGE=$(mktemp -d /tmp/domlora-gpu-pack.XXXXXX)
trap 'rm -rf "$STAGE"' EXIT
P=$STAGE/payload
mkdir -p "$P/node/bin" "$P/lib" "$P/out/gpu" "$P/node_modules/@tensorflow" "$P/node_modules/webgpu/dist/linux-x64"

# Node: the binary alone (npm is not needed there).
cp "$NODE_BIN" "$P/node/bin/node"

# The two programs. tfjs and webgpu stay outside the bundles: tfjs-backend-webgpu is loaded at run time (backend.ts's
# optionalRequire) and must register with the same tfjs-core as the engine, and webgpu is an ES module loaded by import().
ESB=node_modules/.bin/esbuild
ext=(--external:@tensorflow/tfjs-core --external:@tensorflow/tfjs-backend-cpu --external:@tensorflow/tfjs-backend-wasm
  --external:@tensorflow/tfjs-backend-webgpu --external:@tensorflow/tfjs-node --external:@tensorflow/tfjs-node-gpu --external:webgpu)
common=(--bundle --platform=node --target=node20 --format=cjs --log-level=warning --sourcemap)
"$ESB" scripts/bench.ts "${common[@]}" "${ext[@]}" --outfile="$P/out/gpu/bench.js"
"$ESB" scripts/gpu-matmul.ts "${common[@]}" "${ext[@]}" --outfile="$P/out/gpu/gpu-matmul.js"

# tfjs: package.json + the `main` file. tfjs-core and -backend-cpu require seedrandom / node-fetch: bundle those in.
for pkg in tfjs-core tfjs-backend-cpu tfjs-backend-wasm tfjs-backend-webgpu; do
  src=node_modules/@tensorflow/$pkg
  main=$(node -p "require('./$src/package.json').main")
  mkdir -p "$P/node_modules/@tensorflow/$pkg/$(dirname "$main")"
  cp "$src/package.json" "$P/node_modules/@tensorflow/$pkg/"
  case $pkg in
    tfjs-core|tfjs-backend-cpu)
      "$ESB" "$src/$main" --bundle --platform=node --target=node20 --format=cjs --log-level=error \
        --external:@tensorflow/tfjs-core --outfile="$P/node_modules/@tensorflow/$pkg/$main" ;;
    *) cp "$src/$main" "$P/node_modules/@tensorflow/$pkg/$main" ;;
  esac
done
cp node_modules/@tensorflow/tfjs-backend-wasm/dist/*.wasm "$P/node_modules/@tensorflow/tfjs-backend-wasm/dist/"
cp node_modules/webgpu/package.json node_modules/webgpu/index.js node_modules/webgpu/LICENSE.md "$P/node_modules/webgpu/"
cp node_modules/webgpu/dist/linux-x64/dawn.node "$P/node_modules/webgpu/dist/linux-x64/"

cp -L "$(ldconfig -p | grep -m1 'libstdc++\.so\.6 (libc6,x86-64)' | sed 's/.*=> //')" "$P/lib/libstdc++.so.6"

# Smoke test of the staged tree with the staged node: the packages resolve and tfjs-core is one instance.
(cd "$P" && ./node/bin/node -e "
  const tf = require('@tensorflow/tfjs-core'); require('@tensorflow/tfjs-backend-cpu'); require('@tensorflow/tfjs-backend-wasm');
  if (!tf.findBackendFactory('cpu') || !tf.findBackendFactory('wasm')) throw new Error('backends did not register');
  import('webgpu').then((w) => { if (typeof w.create !== 'function') throw new Error('webgpu: no create'); console.log('staged tree loads: tfjs-core', tf.version_core); });
")

rm -rf "$DEST"
mkdir -p "$DEST/debs"
XZ_LEVEL=${GPU_PACK_XZ_LEVEL:-9} # 9: ~28 MiB in 2-5 min here; 1 (for dry runs): faster, ~10 MiB larger
echo "compressing (xz -$XZ_LEVEL)..."
tar -C "$P" -cf - . | nice xz "-$XZ_LEVEL" -T1 > "$DEST/payload.tar.xz"

# The Vulkan loader (and the GL dispatch libraries the device README lists beside it), amd64, from this machine's
# Debian sources, with apt state kept in a private folder.
APT=$STAGE/apt
mkdir -p "$APT/lists/partial" "$APT/cache/archives/partial"
o=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 "-oDir::State::Lists=$APT/lists" "-oDir::Cache=$APT/cache" -oAPT::Sandbox::User=root -qq)
apt-get "${o[@]}" update
(cd "$DEST/debs" && apt-get "${o[@]}" download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)

{
  echo "DomLoRA GPU pack, $(date -u +%FT%TZ), from $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- scripts src test || echo ' (with uncommitted changes)')"
  echo "node $("$NODE_BIN" -v); tfjs $(node -p "require('./node_modules/@tensorflow/tfjs-core/package.json').version"); webgpu $(node -p "require('./node_modules/webgpu/package.json').version")"
  echo "payload.tar.xz: $(stat -c %s "$DEST/payload.tar.xz") bytes, $(tar -C "$P" -cf - . | wc -c) unpacked; sha256 $(sha256sum "$DEST/payload.tar.xz" | cut -d' ' -f1)"
  (cd "$P" && find . -type f -printf '  %p %s\n' | sort)
  for f in "$DEST"/debs/*.deb; do echo "$(basename "$f") $(stat -c %s "$f")"; done
} > "$DEST/MANIFEST.txt"

bytes=$(du -sb "$DEST" | cut -f1)
tracked=$(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
echo "$DEST: $((bytes / 1024 / 1024)) MiB ($bytes bytes); tracked files $((tracked / 1024)) KiB; the device tool's limit is 64 MiB in all"
ls -la "$DEST" "$DEST/debs"
[ $((bytes / 1024 / 1024)) -le $LIMIT_MB ] || { echo "gpu-pack: $DEST is over $LIMIT_MB MiB" >&2; exit 1; }
