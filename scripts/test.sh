#!/usr/bin/env bash
# Sets up the machine, builds, and runs every test: the Release build, then the
# same suite built with AddressSanitizer + UBSan. Tests that need ../shared/data
# skip with a message when it is absent. STRATA_SKIP_SANITIZE=1 skips the second pass.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# A real llama.cpp for the interoperability tests (they skip, saying so, without it).
if libs=$(scripts/setup_llamacpp.sh); then export STRATA_LLAMACPP_LIBS=$libs; fi
# The official OpenAI client for the server's tests (they skip, saying so, without it).
if mods=$(scripts/setup_openai_client.sh); then export STRATA_OPENAI_MODULES=$mods; fi
jobs=$(nproc 2>/dev/null || echo 2)

echo "== Release build and tests" >&2
scripts/build.sh
(cd build && ctest --output-on-failure -j"$jobs" --timeout 900)

if [[ "${STRATA_SKIP_SANITIZE:-0}" != 1 ]]; then
  echo "== AddressSanitizer + UBSan build and tests" >&2
  STRATA_SANITIZE=1 scripts/build.sh
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
  export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
  (cd build-asan && ctest --output-on-failure -j"$jobs" --timeout 1800)
fi
