#!/usr/bin/env bash
# strata serve under load (docs/benchmarks.md, "Serving"):
#  1. aggregate generation tokens/s at 1, 4, 8 and 16 parallel streams, for
#     each GGUF file of MODELS (default: the TinyLlama-1.1B shape in BF16 and
#     Q4_0), next to llama.cpp decoding as many sequences together in one
#     context on the same file (node-llama-cpp, bench/llamacpp_batch.mjs);
#  2. time to first token of a follow-up chat turn on a ~2K-token first turn,
#     with prompt reuse and without (--cache-ram 0), for each of REUSE_MODELS
#     (default: the TinyLlama BF16 shape and a Samba 421M shape).
# Models are random (speed does not depend on the values); TOKENIZER is a
# 32000-piece SentencePiece model (default ../shared/data/tokenizer.model)
# and TEXT a text file for the long turn (default ../shared/data/tinyshakespeare.txt).
#   BENCH_DIR=bench-out/serve THREADS=2 MAX_TOKENS=64 REPEAT=3 bench/serve_bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${BENCH_DIR:-bench-out/serve}
threads=${THREADS:-2} max_tokens=${MAX_TOKENS:-64} repeat=${REPEAT:-3}
tokenizer=${TOKENIZER:-../shared/data/tokenizer.model}
text=${TEXT:-../shared/data/tinyshakespeare.txt}
scripts/build.sh strata >/dev/null
s=build/strata
mkdir -p "$dir"
[[ -d "$dir/tinyllama-bf16" ]] || $s init --preset tinyllama-1.1b --dtype bf16 --seed 1 -o "$dir/tinyllama-bf16" >&2
for t in bf16 q4_0; do
  [[ -f "$dir/tinyllama-$t.gguf" ]] || $s quantize -m "$dir/tinyllama-bf16" --type $t -o "$dir/tinyllama-$t.gguf" >&2
done
libs=$(scripts/setup_llamacpp.sh) && modules=$(cd "$libs/../../../.." && pwd) || modules=
[[ -d "$dir/samba-421m-bf16" ]] || $s init --preset samba-421m --dtype bf16 --seed 1 -o "$dir/samba-421m-bf16" >&2
models=${MODELS:-"bf16=$dir/tinyllama-bf16.gguf q4_0=$dir/tinyllama-q4_0.gguf"}
reuse_models=${REUSE_MODELS:-"llama=$dir/tinyllama-bf16 samba=$dir/samba-421m-bf16"}
port=18931
start() {  # model, extra flags...
  local m=$1
  shift
  $s serve -m "$m" --tokenizer "$tokenizer" --threads "$threads" --port $port "$@" 2>"$dir/serve.log" &
  pid=$!
  for _ in $(seq 600); do curl -sf localhost:$port/health >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "serve did not start: $(cat "$dir/serve.log")" >&2
  exit 1
}
stop() { kill "$pid"; wait "$pid" || true; }
median() { sort -g | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
echo "| model | streams | strata tok/s | vs 1 stream | llama.cpp tok/s | strata / llama.cpp |"
echo "|---|---:|---:|---:|---:|---:|"
for entry in $models; do
  name=${entry%%=*} path=${entry#*=}
  base=""
  for n in 1 4 8 16; do
    ours=() theirs=()
    for ((r = 0; r < repeat; ++r)); do
      start "$path" --parallel 16 --ctx 1024
      ours+=("$(node bench/serve_load.mjs "http://127.0.0.1:$port" throughput $n "$max_tokens" |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["tok_s"])')")
      stop
      if [[ -n "$modules" ]]; then
        theirs+=("$(node bench/llamacpp_batch.mjs "$modules" "$path" $n "$max_tokens" "$threads" |
          python3 -c 'import json, sys; print(json.load(sys.stdin)["tok_s"])')")
      else
        theirs+=(0)
      fi
    done
    v=$(printf '%s\n' "${ours[@]}" | median) l=$(printf '%s\n' "${theirs[@]}" | median)
    base=${base:-$v}
    python3 -c "v, b, l = $v, $base, $l; print(f'| $name | $n | {v:.1f} | {v / b:.2f}x | {l:.1f} | ' + (f'{v / l:.2f}x |' if l else '- |'))"
  done
done
echo
echo "| model | follow-up prompt tokens | cached | time to first token, reuse | without reuse | ratio |"
echo "|---|---:|---:|---:|---:|---:|"
for entry in $reuse_models; do
  name=${entry%%=*} path=${entry#*=}
  start "$path" --parallel 1 --ctx 4096
  with=$(node bench/serve_load.mjs "http://127.0.0.1:$port" followup "$text" 7000)
  stop
  start "$path" --parallel 1 --ctx 4096 --cache-ram 0
  without=$(node bench/serve_load.mjs "http://127.0.0.1:$port" followup "$text" 7000)
  stop
  python3 - "$name" "$with" "$without" <<'PY'
import json, sys
name, w, wo = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
print(f"| {name} | {w['prompt_tokens']} | {w['cached_tokens']} | {w['ttft_s']:.2f} s | {wo['ttft_s']:.2f} s | {wo['ttft_s'] / w['ttft_s']:.1f}x |")
PY
done
