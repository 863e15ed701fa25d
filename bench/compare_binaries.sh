#!/usr/bin/env bash
# Two strata binaries side by side, alternating in one run (the machine is
# shared and noisy): decode and prefill of TinyLlama-1.1B (BF16 and F32
# checkpoints) and training steps of the stories15M shape. Prints every
# round, then the medians of each binary and the median of the per-round
# NEW/OLD ratios (old and new run back to back in a round, so a ratio sees
# the same minute of the machine).
#   bench/compare_binaries.sh OLD_STRATA NEW_STRATA [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
old=$1 new=$2 rounds=${3:-5}
out=bench-out/compare
mkdir -p "$out"
for dt in bf16 f32; do
  [[ -d $out/tinyllama-$dt ]] || "$new" init --preset tinyllama-1.1b --dtype $dt -o "$out/tinyllama-$dt" 2>/dev/null
done
[[ -f $out/tokens.bin ]] || /usr/bin/python3 -c "
import random, struct
random.seed(1)
open('$out/tokens.bin', 'wb').write(b''.join(struct.pack('<H', random.randrange(32000)) for _ in range(400000)))"

field() { /usr/bin/python3 -c "import json,sys; print(json.loads(sys.stdin.read())['$1'])"; }
# Median tokens/s of the training steps after the first.
train_tok_s() {
  /usr/bin/python3 -c "
import json, statistics
v = [json.loads(l)['tokens_per_s'] for l in open('$1/metrics.jsonl') if 'tokens_per_s' in l][1:]
print(statistics.median(v))"
}

declare -A res
for r in $(seq 1 "$rounds"); do
  for which in old new; do
    bin=${!which}
    for dt in bf16 f32; do
      j=$("$bin" bench -m "$out/tinyllama-$dt" --threads 2 --prompt-len 128 --gen 32 --repeat 3 --no-probe --json 2>/dev/null)
      res[$which.$dt.prefill]+=" $(echo "$j" | field prefill_tok_s)"
      res[$which.$dt.decode]+=" $(echo "$j" | field decode_tok_s)"
    done
    rm -rf "$out/run-$which"
    "$bin" train --preset stories15m --data "$out/tokens.bin" --steps 6 --batch 8 --seq 256 --eval-every 0 \
      --save-every 1000 --threads 2 -o "$out/run-$which" >/dev/null 2>&1
    res[$which.train]+=" $(train_tok_s "$out/run-$which")"
  done
  echo "round $r: old ${res[old.bf16.decode]##* } / new ${res[new.bf16.decode]##* } BF16 decode tok/s," \
       "old ${res[old.train]##* } / new ${res[new.train]##* } train tok/s"
done

summary() {  # old values, new values -> median old, median new, median of the per-round ratios
  /usr/bin/python3 -c "
import statistics, sys
o = list(map(float, sys.argv[1].split())); n = list(map(float, sys.argv[2].split()))
print('%12.2f %12.2f %10.3f' % (statistics.median(o), statistics.median(n), statistics.median(b / a for a, b in zip(o, n))))" "$1" "$2"
}
printf "%-22s %12s %12s %10s\n" measure old new new/old
for k in bf16.prefill bf16.decode f32.prefill f32.decode train; do
  printf "%-22s %s\n" "$k tok/s" "$(summary "${res[old.$k]}" "${res[new.$k]}")"
done
