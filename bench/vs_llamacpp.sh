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
  python3 - "$t" "$dir/$t.strata" "$dir/$t.llama" <<'PY'
import json, statistics, sys
t, ours, theirs = sys.argv[1], [json.loads(l) for l in open(sys.argv[2])], [json.loads(l) for l in open(sys.argv[3])]
med = lambda rows, k: statistics.median(r[k] for r in rows)
sp, sd, lp, ld = med(ours, "prefill_tok_s"), med(ours, "decode_tok_s"), med(theirs, "prefill_tok_s"), med(theirs, "decode_tok_s")
print(f"| {t} | {sp:.1f} | {lp:.1f} | {sp / lp:.2f}x | {sd:.1f} | {ld:.1f} | {sd / ld:.2f}x | {100 * med(ours, 'roofline_fraction'):.0f}% |")
PY
done
build=$(python3 -c 'import json, sys; print(json.loads(open(sys.argv[1]).readline())["build"])' "$dir/$t.llama")
echo "llama.cpp: node-llama-cpp 3.21.1 prebuilt libraries, build $build; $threads threads; prompt $prompt, $gen decoded; median of $repeat" >&2
