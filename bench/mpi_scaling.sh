#!/usr/bin/env bash
# Data-parallel scaling on one machine (run by hand, not a test): tokens/s of
# one process (1 thread, --accum 2) against 2 ranks (1 thread each, --accum 1),
# the same global batch and so the same computation, side by side in one run;
# and the time the 2 ranks spend blocked on gradient communication with the
# reductions during the backward (--overlap on) and after it (--overlap off).
#
#   bench/mpi_scaling.sh [STEPS] [SHAPES]     (default 6 steps; shapes: "dim512 samba")
#
# dim512: the Llama of bench/train_vs_torch.py (dim 512, 8 layers, 8 heads /
# 4 KV, FFN 1376, vocab 32000, untied), 4 x 512 tokens per micro-batch.
# samba:  a small Samba (dim 512, 4 x [mamba, mlp][swa, mlp], FFN 1792,
# vocab 32000, tied, window 256), 2 x 512 tokens per micro-batch.
# Prints per shape and mode the median over steps 2.. of tokens/s and of the
# blocked communication (comm_s of metrics.jsonl).
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:-6}
shapes=${2:-"dim512 samba"}
strata=${STRATA:-build/strata}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mpirun=(mpirun --oversubscribe --bind-to core -np 2)

python3 - "$tmp/data.bin" <<'EOF'
import random, struct, sys
random.seed(1)
with open(sys.argv[1], "wb") as f:
    f.write(struct.pack("<%dH" % 400000, *[random.randrange(32000) for _ in range(400000)]))
EOF

make_config() {  # preset, out dir, JSON overrides
  "$strata" init --preset "$1" --dtype f32 -o "$tmp/base-$2" >/dev/null 2>&1
  python3 - "$tmp/base-$2/config.json" "$tmp/$2.json" "$3" <<'EOF'
import json, sys
cfg = json.load(open(sys.argv[1]))
over = json.loads(sys.argv[3])
window = over.pop("window", None)
cfg.update(over, max_position_embeddings=512)
cfg["head_dim"] = cfg["hidden_size"] // cfg["num_attention_heads"]
if "strata_layers" in cfg:  # the unit repeated to the layer count; every attention's window
    cfg["strata_layers"]["repeat"] = cfg["num_hidden_layers"] // len(cfg["strata_layers"]["unit"])
    for layer in cfg["strata_layers"]["unit"]:
        for sub in layer if isinstance(layer, list) else [layer]:
            if isinstance(sub, dict) and "window" in sub and window:
                sub["window"] = window
json.dump(cfg, open(sys.argv[2], "w"), indent=2)
EOF
  "$strata" init --config "$tmp/$2.json" --dtype f32 --seed 1 -o "$tmp/init-$2" >/dev/null 2>&1
}

median() {  # metrics.jsonl, field: the median over steps 2..
  python3 - "$1" "$2" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
vals = [r[sys.argv[2]] for r in rows if "loss" in r and r["step"] > 1]
print("%.4g" % statistics.median(vals))
EOF
}

printf "%-8s %-26s %12s %12s\n" shape mode "tok/s" "comm_s"
for shape in $shapes; do
  case $shape in
    dim512) make_config tiny dim512 '{"hidden_size": 512, "intermediate_size": 1376, "num_hidden_layers": 8,
              "num_attention_heads": 8, "num_key_value_heads": 4, "vocab_size": 32000, "tie_word_embeddings": false}'
            batch=4 ;;
    samba)  make_config tiny-samba samba '{"hidden_size": 512, "intermediate_size": 1792, "num_hidden_layers": 8,
              "num_attention_heads": 8, "num_key_value_heads": 8, "vocab_size": 32000, "tie_word_embeddings": true,
              "window": 256}'
            batch=2 ;;
    *) echo "unknown shape $shape" >&2; exit 1 ;;
  esac
  args=(train --init "$tmp/init-$shape" --data "$tmp/data.bin" --steps "$steps" --batch "$batch" --seq 512
        --lr 1e-4 --warmup 0 --seed 1 --threads 1 --shuffle off)
  "$strata" "${args[@]}" --accum 2 -o "$tmp/$shape-one" >/dev/null 2>&1
  printf "%-8s %-26s %12s %12s\n" "$shape" "1 process, --accum 2" "$(median "$tmp/$shape-one/metrics.jsonl" tokens_per_s)" -
  for mode in on off; do
    "${mpirun[@]}" "$strata" "${args[@]}" --overlap $mode -o "$tmp/$shape-two-$mode" >/dev/null 2>&1
    printf "%-8s %-26s %12s %12s\n" "$shape" "2 ranks, --overlap $mode" \
      "$(median "$tmp/$shape-two-$mode/metrics.jsonl" tokens_per_s)" "$(median "$tmp/$shape-two-$mode/metrics.jsonl" comm_s)"
  done
  "${mpirun[@]}" "$strata" "${args[@]}" --zero 1 -o "$tmp/$shape-zero" 2>"$tmp/$shape-zero.err" >/dev/null
  printf "%-8s %-26s %12s %12s\n" "$shape" "2 ranks, --zero 1" \
    "$(median "$tmp/$shape-zero/metrics.jsonl" tokens_per_s)" "$(median "$tmp/$shape-zero/metrics.jsonl" comm_s)"
  grep -h "data-parallel over" "$tmp/$shape-zero.err" | sed "s/^/  $shape: /"
done
