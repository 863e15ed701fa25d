#!/usr/bin/env bash
# The Samba paper's length claims at a size this machine trains
# (docs/long-context.md): a tiny Samba, a tiny Llama-SWA (sliding window
# only, Mistral-like) and a tiny Llama (full attention), the same parameter
# count, trained on the same tokens for the same steps at length 512 on the
# Brown corpus as scripts/demo.sh prepares it. Then:
#   1. perplexity against the evaluation length (512 ... 16K) on the held-out
#      text, the Llama also with Self-Extend (a fourth line):
#      demo-out/long/length.png;
#   2. the same short passkey tuning at 512 for Samba and Llama-SWA, and
#      passkey accuracy to 16K (32x the tuning length):
#      demo-out/long/passkey-{samba,swa}.png.
# Prints every table, and the wall time of each step to demo-out/long/times.txt.
#
# DEMO_STEPS=N training steps (default 600), DEMO_TUNE_STEPS=N passkey tuning
# steps (default 100), DEMO_MAX_LEN=N longest evaluation length (default
# 16384), DEMO_SKIP_BUILD=1 uses build/strata as it is.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/brown_prep.sh  # demo_build, brown_prep, section, eval_interval, s
demo_build
root=demo-out
out=$root/long
mkdir -p "$out"
: >"$out/times.txt"

steps=${DEMO_STEPS:-600}
tune_steps=${DEMO_TUNE_STEPS:-100}
max_len=${DEMO_MAX_LEN:-16384}
batch=8 seq=512 lr=2e-3 warmup=20 window=128 self_extend=8,128
eval_every=$(eval_interval "$steps")

timed() {  # timed NAME COMMAND...: runs it, appends its wall time to times.txt
  local name=$1 t0 t1
  shift
  t0=$(date +%s.%N)
  "$@"
  t1=$(date +%s.%N)
  awk -v n="$name" -v a="$t0" -v b="$t1" 'BEGIN { printf "%-28s %8.1f s\n", n, b - a }' | tee -a "$out/times.txt" >&2
}

brown_prep "$root"  # sets work, data, vocab, train_docs, val_docs

lengths=512
for ((n = 1024; n <= max_len; n *= 2)); do lengths+=",$n"; done


section "models: Samba, Llama-SWA (window $window), Llama; hidden 256, 4 layers, vocab $vocab"
# Samba's Mamba sub-layers hold 2.2x an attention sub-layer's parameters, so
# its MLPs are narrower (528 against 688) to match the others' count.
model_config "$work/samba.json" 528 $seq '"strata_recipe": "samba", "strata_init": "mamba",
 "strata_layers": {"unit": [[{"kind": "mamba"}, "mlp"], [{"kind": "attention", "window": '$window'}, "mlp"]]}'
model_config "$work/swa.json" 688 $seq '"strata_recipe": "llama-swa",
 "strata_layers": {"unit": [[{"kind": "attention", "window": '$window'}, "mlp"]]}'
model_config "$work/llama.json" 688 $seq
names=(samba swa llama)
for m in "${names[@]}"; do
  echo "-- $m" >&2
  $s info --config "$work/$m.json" | sed -n '/^layers/p;/^total/p' >&2
done

for m in "${names[@]}"; do
  section "train $m: $steps steps x $batch x $seq tokens"
  rm -rf "${out:?}/$m"
  timed "train $m" $s train --config "$work/$m.json" --data "$data" -o "$out/$m" --steps "$steps" --batch $batch \
    --seq $seq --lr $lr --warmup $warmup --eval-every "$eval_every" --save-every "$steps" --keep-last 1 --seed 1
done

section "perplexity against the evaluation length on the held-out text ($lengths)"
ckpt() { echo "$out/$1/checkpoint-$steps"; }
timed "eval length" $s eval length -m "$(ckpt samba)" -m "$(ckpt swa)" -m "$(ckpt llama)" --text "$work/val.txt" \
  --lengths "$lengths" --json -o "$out/length.png" >"$out/length.json"
timed "eval length, self-extend" $s eval length -m "$(ckpt llama)" --text "$work/val.txt" --lengths "$lengths" \
  --self-extend $self_extend --json >"$out/length-self-extend.json"
python3 - "$out/length.json" "$out/length-self-extend.json" <<'EOF'
import json, sys
table = {}
for path, suffix in ((sys.argv[1], ""), (sys.argv[2], " + Self-Extend")):
    for r in json.load(open(path)):
        table.setdefault(r["model"].split("/")[-2] + suffix, {})[r["length"]] = r["perplexity"]
lengths = sorted({n for v in table.values() for n in v})
print("| model | " + " | ".join(str(n) for n in lengths) + " |")
print("|---|" + "---:|" * len(lengths))
for name, v in table.items():
    print(f"| {name} | " + " | ".join("-" if v.get(n) is None else f"{v[n]:.1f}" for n in lengths) + " |")
EOF

section "passkey tuning at $seq: $tune_steps steps, the same data for Samba and Llama-SWA"
timed "passkey data" $s data passkey --tokenizer "$work/tok.model" --length $seq --count $((tune_steps * batch)) \
  -o "$out/passkey.jsonl"
for m in samba swa; do
  rm -rf "${out:?}/$m-tuned"
  timed "passkey tuning $m" $s sft --init "$(ckpt $m)" --data "$out/passkey.jsonl" --template none --seq $seq \
    --batch $batch --steps "$tune_steps" --lr 1e-4 --warmup $((tune_steps / 2)) --wd 0.1 --save-every "$tune_steps" \
    --keep-last 1 --seed 1 -o "$out/$m-tuned"
done

section "passkey accuracy to $max_len (depths 0 ... 1, 3 keys a cell)"
for m in samba swa; do
  echo "-- $m (tuned)"
  timed "eval passkey $m" $s eval passkey -m "$out/$m-tuned/checkpoint-$tune_steps" --lengths "$lengths" \
    --depths 0,0.25,0.5,0.75,1 --samples 3 -o "$out/passkey-$m.png"
done

section "wall time of each step"
cat "$out/times.txt"
