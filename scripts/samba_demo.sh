#!/usr/bin/env bash
# Samba against Llama on the Brown corpus: a tiny Samba (layers of [Mamba, MLP] and
# [sliding-window attention, MLP] alternating, docs/samba.md) and a Llama of the same
# parameter count, trained from scratch with the same budget (steps, batch, sequence
# length, learning-rate schedule, seed, data) on the corpus exactly as scripts/demo.sh
# prepares it (scripts/brown_prep.sh), about 3 minutes each on 2 cores. Prints their
# validation losses side by side, a sample from each, and draws both loss curves in
# one plot (demo-out/samba-vs-llama.png).
#
# Everything goes to demo-out/ (runs demo-out/samba and demo-out/llama, retrained on
# every run). Section headers and progress go to stderr; exits non-zero on any
# failure, including a model that does not beat the unigram baseline.
# DEMO_STEPS=N changes the number of training steps (default 600);
# DEMO_SKIP_BUILD=1 uses build/strata as it is.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/brown_prep.sh  # demo_build, brown_prep, section, eval_interval, s
demo_build
out=demo-out
mkdir -p "$out"

# The budget both models get. On 2 cores (AMD EPYC, AVX-512) the Llama (demo.sh's) trains
# at ~7.3k tok/s and the Samba at ~6.1k, so 600 steps of 16 x 128 tokens take about 3
# minutes each.
steps=${DEMO_STEPS:-600}
batch=16 seq=128 eval_batches=16 lr=2e-3 warmup=20
eval_every=$(eval_interval "$steps")  # a val point at the last step
window=$((seq / 2))  # as Samba's 2048 window at training length 4096

brown_prep "$out"  # sets work, data, vocab, train_docs, val_docs


section "models: Samba and Llama, hidden 256, 4 layers, 4 heads (2 KV), vocab $vocab, tied embeddings"
# Samba: 2 x ([Mamba, MLP], [SWA, MLP]); a Mamba sub-layer (expand 2, state 16) has 2.2x
# the parameters of an attention one, so its MLPs are narrower (528 against 688) to
# match the Llama's count.
model_config "$work/samba.json" 528 256 '"strata_recipe": "samba", "strata_init": "mamba",
 "strata_layers": {"unit": [[{"kind": "mamba"}, "mlp"], [{"kind": "attention", "window": '$window'}, "mlp"]]}'
model_config "$work/llama.json" 688 256  # demo.sh's Llama
names=(samba llama)
for m in "${names[@]}"; do
  echo "-- $m" >&2
  $s info --config "$work/$m.json" | sed -n '/^layers/p;/^total/p' >&2
done

for m in "${names[@]}"; do
  section "train $m: $steps steps x $batch x $seq tokens, AdamW lr $lr (warmup $warmup, cosine), val every $eval_every steps"
  rm -rf "${out:?}/$m"
  t0=$(date +%s.%N)
  $s train --config "$work/$m.json" --data "$data" -o "$out/$m" --steps "$steps" --batch $batch --seq $seq \
    --lr $lr --warmup $warmup --eval-every "$eval_every" --eval-batches $eval_batches --save-every "$eval_every" \
    --keep-last 1 --seed 1
  t1=$(date +%s.%N)
  echo "$t0 $t1" >"$out/$m/wall_clock"
done

plot=$out/samba-vs-llama.png
section "loss curves: $plot"
$s plot "$out/samba" "$out/llama" -o "$plot"

for m in "${names[@]}"; do
  section "generate from $m (temperature 0.8, top-p 0.9)"
  echo "-- $m sample:"
  $s generate -m "$out/$m/checkpoint-$steps" -p "The" -n 60 --temp 0.8 --top-p 0.9 --seed 1
done

section "result: validation loss (nats/token) on the same held-out tokens"
unigram=$(python3 scripts/unigram_loss.py "$data" --seq $seq --rows $((eval_batches * batch)))
params=()
for m in "${names[@]}"; do params+=("$($s info -m "$out/$m/checkpoint-$steps" --json | json_field /dev/stdin total_params)"); done
python3 - "$out" "$steps" $((batch * seq)) "$unigram" "${names[@]}" "${params[@]}" <<'EOF'
import json, math, sys
out, steps, step_tokens, unigram = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
n = (len(sys.argv) - 5) // 2
names, params = sys.argv[5:5 + n], [int(p) for p in sys.argv[5 + n:]]
u = dict(zip(unigram.split()[0::2], unigram.split()[1::2]))
cols = []
for name in names:
    rows = [json.loads(l) for l in open(f"{out}/{name}/metrics.jsonl") if l.strip()]
    train = [r for r in rows if "loss" in r]
    val = {r["step"]: r["val_loss"] for r in rows if "val_loss" in r}
    if steps not in val:
        sys.exit(f"samba_demo: {name} has no validation at the last step")
    t0, t1 = map(float, open(f"{out}/{name}/wall_clock").read().split())
    cols.append(dict(train=train, val=val, wall=t1 - t0,
                     tok_s=len(train) * step_tokens / sum(step_tokens / r["tokens_per_s"] for r in train)))
fmt = lambda label, vals: print(f"{label:<24}" + "".join(f"{v:>14}" for v in vals))
fmt("", names)
fmt("parameters", [f"{p:,}" for p in params])
fmt("tok/s in the steps", [f"{c['tok_s']:,.0f}" for c in cols])
fmt("wall s (val + ckpt)", [f"{c['wall']:.0f}" for c in cols])
fmt("train loss, last 10", [f"{sum(r['loss'] for r in c['train'][-10:]) / len(c['train'][-10:]):.3f}" for c in cols])
for step in sorted(cols[0]["val"]):
    fmt(f"val loss, step {step}", [f"{c['val'].get(step, float('nan')):.3f}" for c in cols])
fmt("final val perplexity", [f"{math.exp(c['val'][steps]):.1f}" for c in cols])
ul = float(u["unigram_val_loss"])
print(f"unigram baseline {ul:.3f} nats/token on the same {u['tokens']} val tokens; "
      f"params {names[0]}/{names[1]} = {params[0] / params[1]:.3f}")
best = min(range(n), key=lambda i: cols[i]["val"][steps])
print(f"lower final val loss: {names[best]} by "
      f"{max(c['val'][steps] for c in cols) - cols[best]['val'][steps]:.3f} nats/token")
for name, c in zip(names, cols):
    if not c["val"][steps] < ul:
        sys.exit(f"samba_demo: {name} does not beat the unigram baseline")
EOF
