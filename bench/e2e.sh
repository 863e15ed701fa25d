#!/usr/bin/env bash
# End-to-end inference benchmark of the TinyLlama-1.1B shape, run by hand:
#   bench/e2e.sh [MODEL_DIR_BF16] [MODEL_DIR_F32]
# Without arguments it writes random-weight checkpoints into bench-out/ first
# (strata init), so the load path (safetensors, relocation) is the real one.
# Prints prefill/decode tok/s, the roofline line against a DRAM read probe run
# in the same process, peak RSS, and decode at 64 vs ~2048 tokens of context.
set -euo pipefail
cd "$(dirname "$0")/.."
s=./build/strata
[[ -x $s ]] || scripts/build.sh strata
bf16=${1:-bench-out/tinyllama-bf16}
f32=${2:-bench-out/tinyllama-f32}
[[ -d $bf16 ]] || $s init --preset tinyllama-1.1b --dtype bf16 -o "$bf16"
[[ -d $f32 ]] || $s init --preset tinyllama-1.1b --dtype f32 -o "$f32"

for m in "$bf16" "$f32"; do
  echo "== $m: 512-token prefill, 128 decoded, 2 threads, median of 3"
  $s bench -m "$m" --threads 2 --prompt-len 512 --gen 128 --repeat 3
done

echo "== decode speed against context length ($bf16)"
for ctx in 64 2000; do
  $s bench -m "$bf16" --threads 2 --prompt-len $ctx --gen 48 --no-probe --json |
    sed -e "s/^/context $ctx: /"
done
