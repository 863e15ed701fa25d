#!/usr/bin/env bash
# Recursive soft prompting on a task where it pays (docs/hypernet.md): the
# query names three children, the answer tells a fixed story and then repeats
# the names (scripts/hypernet_task.py; the test triples are never trained
# on). Every model is trained with the recurrent chunk context: chunk c of the
# answer (16 tokens) sees only the last token before it, so when the names
# are due only a soft prompt can still carry them. From stories260K
# (../shared/data), with the same budget of examples each:
#   (a) plain per-chunk SFT of the model, no soft prompt;
#   (b) a hypernetwork (16 soft tokens) trained in stage 1, the model frozen;
#   (c) stage 1 for half the steps, then stage 2 (both) for the other half;
#   (r) for reference, ordinary SFT with the whole context (the names can be
#       copied from the query).
# Prints greedy exact-match accuracy on the held-out triples and the wall
# times. Everything goes to demo-out/hypernet/ (retrained on every run).
# DEMO_STEPS=N changes the steps (default 600); DEMO_SKIP_BUILD=1 uses
# build/strata as it is; STRATA_SHARED_DATA points at the data directory.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/brown_prep.sh  # demo_build, section, s
demo_build
shared=${STRATA_SHARED_DATA:-../shared/data}
for f in stories260K.bin tok512.model; do
  [[ -f $shared/$f ]] || { echo "hypernet demo: $shared/$f not found (set STRATA_SHARED_DATA)" >&2; exit 1; }
done
out=demo-out/hypernet
rm -rf "$out"
mkdir -p "$out"
steps=${DEMO_STEPS:-600}
half=$((steps / 2)) batch=16 lr=2e-3 llm_lr=1e-3 seed=1

section "data and models"
/usr/bin/python3 scripts/hypernet_task.py "$out" 7
echo "$(wc -l <"$out/train.jsonl") training records, $(wc -l <"$out/test.jsonl") held-out triples" >&2
head -1 "$out/test.jsonl" >&2
$s convert -m "$shared/stories260K.bin" -o "$out/base" 2>/dev/null
cp "$shared/tok512.model" "$out/base/tokenizer.model"
$s convert -m "$out/base" -o "$out/hn" --add-hypernet --soft-tokens 16 --hypernet-heads 4 --seed $seed 2>/dev/null
cp "$shared/tok512.model" "$out/hn/tokenizer.model"
$s info -m "$out/hn" | sed -n '/^hypernet/p;/^total/p' >&2

declare -A secs
# train NAME ARGS...: one sft run into $out/NAME, timed.
train() {
  local name=$1
  shift
  section "train $name: $*"
  local t0
  t0=$(date +%s.%N)
  $s sft --data "$out/train.jsonl" -o "$out/$name" --batch $batch --seed $seed "$@" >"$out/$name.log" 2>&1 ||
    { tail -5 "$out/$name.log" >&2; exit 1; }
  grep -E "^step [0-9]+/[0-9]+ " "$out/$name.log" | tail -1 >&2
  secs[$name]=$(awk "BEGIN { print $(date +%s.%N) - $t0 + ${secs[$name]:-0} }")
}
train plain --init "$out/base" --chunk-context recurrent --steps $steps --lr $lr
train stage1 --init "$out/hn" --hypernet --stage 1 --chunk-context recurrent --steps $steps --lr $lr
train both1 --init "$out/hn" --hypernet --stage 1 --chunk-context recurrent --steps $half --lr $lr
secs[both2]=${secs[both1]}
train both2 --init "$out/both1/checkpoint-$half" --hypernet --stage 2 --chunk-context recurrent --steps $half \
  --lr $lr --llm-lr $llm_lr
train full --init "$out/base" --steps $steps --lr $lr --seq 128

section "greedy exact match on the held-out triples"
# score NAME CHECKPOINT ARGS...: prints "percent|tokens" for the table.
score() {
  local name=$1 ck=$2
  shift 2
  $s exact-match -m "$ck" --data "$out/test.jsonl" --out "$out/$name.answers.jsonl" "$@" 2>/dev/null |
    sed -E 's/^exact match [0-9]+ \/ [0-9]+ = ([0-9.]+)%; reference tokens right in place ([0-9.]+)%$/\1|\2/'
}
row() {  # label name checkpoint args...
  local label=$1 name=$2 ck=$3
  shift 3
  IFS='|' read -r em tok <<<"$(score "$name" "$ck" "$@")"
  printf '| %s | %s%% | %s%% | %.0f s |\n' "$label" "$em" "$tok" "${secs[$name]}"
}
echo "| model (recurrent chunk context, $steps steps x $batch examples) | exact match | answer tokens right | training time |"
echo "|---|---:|---:|---:|"
row "(a) plain per-chunk SFT, no soft prompt" plain "$out/plain/checkpoint-$steps" --chunk-context recurrent
row "(b) hypernetwork, stage 1 (model frozen)" stage1 "$out/stage1/checkpoint-$steps" --hypernet --chunk-context recurrent
row "(c) hypernetwork, stage 1 then stage 2" both2 "$out/both2/checkpoint-$half" --hypernet --chunk-context recurrent
row "(r) ordinary SFT, whole context (reference)" full "$out/full/checkpoint-$steps"
echo >&2
echo "answers: $out/*.answers.jsonl; logs: $out/*.log" >&2
