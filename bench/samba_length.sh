#!/usr/bin/env bash
# Decode and prefill against prompt length: Samba-421M (Mamba + SWA, constant
# state) beside Llama-438M (full attention, a KV cache that grows), or the
# presets in $PRESETS (e.g. "samba-421m sliding-gla-438m sliding-retnet-446m"), BF16,
# random weights, 2 threads. Run by hand; every row is one `strata bench`
# process, so peak RSS is that run's whole process, prefill included, and the
# roofline compares its decode traffic (weights + the state read per token)
# with a read probe run in the same process.
#   bench/samba_length.sh [DECODE_LENGTHS] [PREFILL_LENGTHS] [LLAMA_MAX]
# e.g. bench/samba_length.sh "512 8192 65536" "4096 32768" 32768
# LLAMA_MAX caps the Llama rows (its prefill is quadratic in the length).
set -euo pipefail
cd "$(dirname "$0")/.."
s=./build/strata
[[ -x $s ]] || scripts/build.sh strata
decode_lengths=${1:-"512 8192 65536"}
prefill_lengths=${2:-"4096 32768"}
llama_max=${3:-32768}

row() {  # preset prompt_len gen
  "$s" bench --preset "$1" --dtype bf16 --threads 2 --prompt-len "$2" --gen "$3" --json 2>/dev/null |
    /usr/bin/python3 -c "
import json, sys
j = json.load(sys.stdin)
d = j['gen'] > 0
dec = (f\"{j['decode_tok_s']:.2f} | {j['decode_bytes_per_token'] / 1e9:.3f} | {j['decode_gb_s']:.1f} | \"
       f\"{j['probe_gb_s']:.1f} | {100 * j['roofline_fraction']:.0f}%\") if d else '- | - | - | - | -'
print(f\"| {j['model']} | {j['prompt_len']} | {j['prefill_tok_s']:.1f} | {dec} | {j['peak_rss_mib']:.0f} |\")"
}

echo "| model | prompt | prefill tok/s | decode tok/s | GB/token | decode GB/s | probe GB/s | roofline | peak RSS MiB |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
for pass in "32 $decode_lengths" "0 $prefill_lengths"; do  # decoded tokens, then the lengths
  read -r gen lengths <<<"$pass"
  for preset in ${PRESETS:-samba-421m llama-438m}; do
    for n in $lengths; do
      [[ $preset == llama-438m && $n -gt $llama_max ]] && continue
      row "$preset" "$n" "$gen"
    done
  done
done
