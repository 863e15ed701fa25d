#!/usr/bin/env bash
# Sets up, builds and shows strata working on a machine with nothing else:
# trains a small tokenizer on English text that every Debian system ships (the
# licence texts), writes a randomly initialised model with it, generates from
# it (gibberish until it is trained), prints its description, and runs a short
# benchmark. With ../shared/data present it also runs the real stories260K model.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh strata
out=demo-out
mkdir -p "$out"
s=./build/strata

echo "== train a 512-piece tokenizer on /usr/share/common-licenses" >&2
$s train-tokenizer --input /usr/share/common-licenses/GPL-3 /usr/share/common-licenses/Apache-2.0 \
  --vocab 512 -o "$out/tok.model"

echo "== a random 'stories260k'-shaped model using it" >&2
$s init --preset stories260k --tokenizer "$out/tok.model" --seed 1 -o "$out/random-model"
$s info -m "$out/random-model"

echo "== generate (random weights: expect nonsense)" >&2
$s generate -m "$out/random-model" -p "The licence" -n 24 --temp 0.8 --seed 1

if [[ -f ../shared/data/stories260K.bin ]]; then
  echo "== a real trained model: stories260K (llama2.c format), greedy" >&2
  $s generate -m ../shared/data/stories260K.bin --tokenizer ../shared/data/tok512.model \
    -p "Once upon a time" -n 80 --temp 0
fi

echo "== benchmark: stories15M shape, random BF16 weights" >&2
$s bench --preset stories15m --dtype bf16 --prompt-len 128 --gen 64
