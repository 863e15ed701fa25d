#!/usr/bin/env bash
# Puts a real llama.cpp beside strata for the interoperability tests and the
# llama.cpp comparison benchmark: the npm package node-llama-cpp (pinned),
# whose registry dependency @node-llama-cpp/linux-x64 carries prebuilt
# llama.cpp / ggml libraries. Nothing is built or downloaded at run time
# (install scripts are not run; the CUDA and Vulkan variants are left out).
# Idempotent. Prints the folder of the libraries on stdout; exits non-zero
# (tests then skip, saying so) when npm or the registry is unavailable.
# STRATA_LLAMACPP_HOME overrides the install folder.
set -euo pipefail
version=3.21.1
home=${STRATA_LLAMACPP_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/strata/node-llama-cpp-$version}
libs=$home/node_modules/@node-llama-cpp/linux-x64/bins/linux-x64
if [[ -f "$libs/libggml-base.so" && -d "$home/node_modules/node-llama-cpp" ]]; then
  echo "$libs"
  exit 0
fi
if [[ $(uname -sm) != "Linux x86_64" ]]; then
  echo "setup_llamacpp: prebuilt llama.cpp libraries are used on Linux x86-64 only" >&2
  exit 1
fi
command -v npm >/dev/null 2>&1 || { echo "setup_llamacpp: npm not found" >&2; exit 1; }
mkdir -p "$home"
[[ -f "$home/package.json" ]] || echo '{"private": true}' >"$home/package.json"
echo "setup_llamacpp: installing node-llama-cpp $version into $home" >&2
(cd "$home" && npm install --no-audit --no-fund --ignore-scripts --omit=optional --loglevel=error \
  "node-llama-cpp@$version" "@node-llama-cpp/linux-x64@$version" >&2)
[[ -f "$libs/libggml-base.so" ]] || { echo "setup_llamacpp: $libs/libggml-base.so missing after install" >&2; exit 1; }
echo "$libs"
