#!/usr/bin/env bash
# strata against llama.cpp on the same GGUF files, same threads, alternating
# runs (docs/benchmarks.md, "Quantized weights against llama.cpp").
#
# llama.cpp is node-llama-cpp's prebuilt library (scripts/setup_llamacpp.sh;
# its build tag is printed). The model is a TinyLlama-1.1B shape with random
# weights (the speed does not depend on the values), written by strata in each
# file type. Each figure is the median of REPEAT runs; strata bench's DRAM
# probe gives the roofline in the same run.
#
# Usage: bench/vs_llamacpp.sh [TYPES] (default "q8_0 q4_0 q4_k_m")
#   BENCH_DIR=dir (default bench-out/llamacpp), THREADS=2, PROMPT=512, GEN=64, REPEAT=3
set -euo pipefail
cd "$(dirname "$0")/.."
types=${1:-"q8_0 q4_0 q4_k_m"}
dir=${BENCH_DIR:-bench-out/llamacpp}
threads=${THREADS:-2} prompt=${PROMPT:-512} gen=${GEN:-64} repeat=${REPEAT:-3}
libs=$(scripts/setup_llamacpp.sh)
modules=$(cd "$libs/../../../.." && pwd)
scripts/build.sh strata >/dev/null
s=build/strata
mkdir -p "$dir"
[[ -d "$dir/tinyllama-bf16" ]] || $s init --preset tinyllama-1.1b --dtype bf16 --seed 1 -o "$dir/tinyllama-bf16" >&2
median() { sort -g | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
printf '| type | strata prefill | llama.cpp prefill | ratio | strata decode | llama.cpp decode | ratio | decode / probe |\n'
printf '|---|---:|---:|---:|---:|---:|---:|---:|\n'
for t in $types; do
  f="$dir/tinyllama-$t.gguf"
  [[ -f "$f" ]] || $s quantize -m "$dir/tinyllama-bf16" --type "$t" -o "$f" >&2
  : >"$dir/$t.strata" && : >"$dir/$t.llama"
  for ((r = 0; r < repeat; ++r)); do
    $s bench -m "$f" -t "$threads" --prompt-len "$prompt" --gen "$gen" --json >>"$dir/$t.strata"
    node bench/llamacpp_speed.mjs "$modules" "$f" "$threads" "$prompt" "$gen" >>"$dir/$t.llama"
  done
  sp=$(jq -r '.prefill_tok_s' "$dir/$t.strata" | median)
  sd=$(jq -r '.decode_tok_s' "$dir/$t.strata" | median)
  probe=$(jq -r '.probe_gb_s' "$dir/$t.strata" | median)
  gb=$(jq -r '.decode_gb_per_token' "$dir/$t.strata" | median)
  lp=$(jq -r '.prefill_tok_s' "$dir/$t.llama" | median)
  ld=$(jq -r '.decode_tok_s' "$dir/$t.llama" | median)
  build=$(jq -r '.build' "$dir/$t.llama" | head -1)
  awk -v t="$t" -v sp="$sp" -v lp="$lp" -v sd="$sd" -v ld="$ld" -v probe="$probe" -v gb="$gb" 'BEGIN {
    printf "| %s | %.1f | %.1f | %.2fx | %.1f | %.1f | %.2fx | %.0f%% |\n", t, sp, lp, sp / lp, sd, ld, sd / ld, 100 * sd * gb / probe }'
done
echo "llama.cpp: node-llama-cpp 3.21.1 prebuilt libraries, build $build; $threads threads; prompt $prompt, $gen decoded; median of $repeat" >&2
