#!/usr/bin/env bash
# Installs code-server 4.100.3 (VS Code 1.100.3, Node 20) into .vscode-test/ without reaching anything but the npm
# registry, so the end-to-end tests run a real VS Code offline. See ../shared/docs/vscode-testing.md for the reasons
# behind each step. A stamp file makes the second run instant.
set -euo pipefail

VERSION=4.100.3
# @vscode/ripgrep's version and the ripgrep release it fetches, both read from code-server 4.100.3's shrinkwrap and
# from @vscode/ripgrep/lib/postinstall.js. Re-read them if VERSION changes.
RG_PKG_VERSION=1.15.11
RG_RELEASE=v13.0.0-10

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
dest="$root/.vscode-test/code-server-$VERSION"
stamp="$dest/.installed"

if [[ -f "$stamp" ]] && "$dest/node_modules/.bin/code-server" --config /dev/null --version >/dev/null 2>&1; then
  echo "code-server $VERSION already installed in $dest"
  exit 0
fi

node_major="$(node -p 'process.versions.node.split(".")[0]')"
if [[ "$node_major" != 20 ]]; then
  echo "code-server $VERSION needs Node 20; this is Node $(node --version)" >&2
  exit 1
fi

# The system packages: chromium (the browser Playwright drives), libkrb5-dev (code-server's kerberos module builds
# against it), ripgrep (its binary seeds @vscode/ripgrep's download cache).
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
[[ -e /usr/include/gssapi/gssapi.h ]] || missing+=(libkrb5-dev)
command -v rg >/dev/null 2>&1 || missing+=(ripgrep)
if (( ${#missing[@]} )); then
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
    echo "installing ${missing[*]} with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
  else
    echo "missing system packages: ${missing[*]} (install them with apt-get as root)" >&2
    exit 1
  fi
fi

# @vscode/ripgrep's postinstall downloads ripgrep from GitHub unless its cache already holds the tarball: seed the
# cache with Debian's rg under the name the postinstall looks for.
tmp="$(node -p 'require("os").tmpdir()')"
cache="$tmp/vscode-ripgrep-cache-$RG_PKG_VERSION"
tarball="$cache/ripgrep-$RG_RELEASE-x86_64-unknown-linux-musl.tar.gz"
if [[ ! -s "$tarball" ]]; then
  mkdir -p "$cache"
  work="$(mktemp -d)"
  cp "$(command -v rg)" "$work/rg"
  tar -czf "$tarball" -C "$work" rg
  rm -rf "$work"
fi

rm -rf "$dest"
mkdir -p "$dest"
cat > "$dest/package.json" <<JSON
{ "name": "domlora-e2e-code-server", "private": true, "version": "0.0.0" }
JSON

echo "installing code-server $VERSION into $dest (about a minute)"
start=$SECONDS
(
  cd "$dest"
  # unsafe_perm: code-server's postinstall refuses to run as root otherwise. yes: node-pty's postinstall runs
  # `npx node-gyp`, which aborts without a TTY otherwise.
  npm_config_unsafe_perm=true npm_config_yes=true npm_config_fund=false npm_config_audit=false \
    npm install --no-save --loglevel=error "code-server@$VERSION" >"$dest/install.log" 2>&1 \
    || { tail -40 "$dest/install.log" >&2; exit 1; }
)
"$dest/node_modules/.bin/code-server" --config /dev/null --version
date -u +%FT%TZ > "$stamp"
echo "code-server $VERSION installed in $((SECONDS - start)) s"
