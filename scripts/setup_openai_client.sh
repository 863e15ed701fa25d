#!/usr/bin/env bash
# Installs the official OpenAI client for Node (npm package `openai`, pinned)
# for the server's client tests (tests/node/openai_client.mjs): into a cache
# folder of its own, never globally. Idempotent. Prints the node_modules
# folder on stdout; exits non-zero (the tests then skip, saying so) when npm
# or the registry is unavailable. STRATA_OPENAI_HOME overrides the folder.
set -euo pipefail
version=6.30.1
home=${STRATA_OPENAI_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/strata/openai-$version}
if [[ -f "$home/node_modules/openai/package.json" ]]; then
  echo "$home/node_modules"
  exit 0
fi
command -v npm >/dev/null 2>&1 || { echo "setup_openai_client: npm not found" >&2; exit 1; }
mkdir -p "$home"
[[ -f "$home/package.json" ]] || echo '{"private": true}' >"$home/package.json"
echo "setup_openai_client: installing openai $version into $home" >&2
(cd "$home" && npm install --no-audit --no-fund --ignore-scripts --loglevel=error "openai@$version" >&2)
[[ -f "$home/node_modules/openai/package.json" ]] || { echo "setup_openai_client: install failed" >&2; exit 1; }
echo "$home/node_modules"
