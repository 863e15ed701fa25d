#!/usr/bin/env bash
# Healing demo for the modified decoder (run by hand; docs/modified-decoder.md):
#   1. sample a corpus from the base model itself (stories260K),
#   2. convert the base to the modified decoder with the parameter-neutral
#      `paper` layout of differential attention (approximate: the loss rises),
#   3. continue training the converted model on the corpus ("healing"),
#   4. compare held-out losses of base, converted and healed models, and plot.
# Usage: scripts/heal_demo.sh [DATA_DIR with stories260K.bin + tok512.model] [OUT_DIR] [STEPS]
set -euo pipefail
cd "$(dirname "$0")/.."
data=$(realpath "${1:-../shared/data}")
out=${2:-heal-out}
steps=${3:-400}
strata=build/strata
base="$data/stories260K.bin"
tok="$data/tok512.model"
[[ -f "$base" && -f "$tok" ]] || { echo "heal_demo: need $base and $tok" >&2; exit 1; }
bash scripts/build.sh strata 2>/dev/null
mkdir -p "$out"

echo "== 1. corpus sampled from the base model (temperature 1)"
[[ -f "$out/train.txt" ]] || "$strata" generate -m "$base" --samples 6000 -n 256 --temp 1.0 --seed 1 -o "$out/train.txt"
[[ -f "$out/val.txt" ]] || "$strata" generate -m "$base" --samples 300 -n 256 --temp 1.0 --seed 1000000 -o "$out/val.txt"
# The 300 held-out samples are the last documents: they become the validation split.
"$strata" tokenize --tokenizer "$tok" --input "$out/train.txt" "$out/val.txt" -o "$out/data" --val-fraction 0.0476

echo "== 2. convert with the paper layout"
rm -rf "$out/converted"
"$strata" convert -m "$base" -o "$out/converted" --to modified --attention differential --diff-layout paper

loss() { "$strata" ppl -m "$1" --text "$out/val.txt" --tokenizer "$tok" --json | sed -E 's/.*"mean_nll": *([0-9.eE+-]+).*/\1/'; }
base_loss=$(loss "$base")
conv_loss=$(loss "$out/converted")
echo "held-out loss: base $base_loss, converted $conv_loss"

echo "== 3. healing: continued training of the converted model"
rm -rf "$out/run"
"$strata" train --init "$out/converted" --data "$out/data" -o "$out/run" --steps "$steps" --batch 32 --seq 256 \
  --lr 2e-3 --min-lr 2e-4 --warmup 50 --wd 0.0 --eval-every 25 --eval-batches 4 --save-every "$steps" --keep-last 1 --seed 1
healed_loss=$(loss "$out/run/checkpoint-$steps")

echo "== 4. result"
"$strata" plot "$out/run" -o "$out/heal.png"
awk -v b="$base_loss" -v c="$conv_loss" -v h="$healed_loss" 'BEGIN {
  printf "held-out loss (nats/token): base %.4f, converted %.4f (+%.1f%%), healed %.4f (+%.1f%%)\n",
         b, c, 100 * (c - b) / b, h, 100 * (h - b) / b }'
echo "curve: $out/heal.png"
