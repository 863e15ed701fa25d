#!/usr/bin/env bash
# Prompt throughput of `strata eval passkey` against the prompt length, for
# the long-context demo's tiny Samba and a Llama of the same size (random
# weights: speed does not depend on training), one length per process.
# Run by hand after scripts/long_context_demo.sh has prepared its configs:
#   bench/passkey_speed.sh [LENGTHS]      e.g. bench/passkey_speed.sh "16k 64k"
set -euo pipefail
cd "$(dirname "$0")/.."
s=./build/strata
work=demo-out/brown
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "| model | prompt tokens | prompt tok/s | wall s |"
echo "|---|---:|---:|---:|"
for m in samba llama; do
  [[ -f $work/$m.json ]] || { echo "no $work/$m.json: run scripts/long_context_demo.sh first" >&2; exit 1; }
  $s init --config "$work/$m.json" --seed 1 -o "$tmp/$m" >/dev/null 2>&1
  cp "$work/tok.model" "$tmp/$m/tokenizer.model"
  for n in ${1:-"16k 64k"}; do
    t0=$(date +%s.%N)
    $s eval passkey -m "$tmp/$m" --lengths "$n" --depths 0.5 --samples 1 --threads 2 --json 2>/dev/null >"$tmp/out.json"
    t1=$(date +%s.%N)
    python3 - "$tmp/out.json" "$m" "$t0" "$t1" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
t = j["trials"][0]
print(f"| {sys.argv[2]} | {t['prompt_tokens']} | {j['prompt_tokens_per_s']:.0f} | {float(sys.argv[4]) - float(sys.argv[3]):.1f} |")
PY
  done
done
