#!/usr/bin/env bash
# Soak of `strata serve`: SECONDS of mixed load from CLIENTS concurrent
# clients (bench/serve_soak.mjs: whole and streamed completions and chats,
# abandoned streams, greedy probes that must not change, refusals that must
# be 400/404/413), with the server's resident memory sampled every 5 s.
# Passes when every answer was the expected one, the server is still
# healthy and stops cleanly on SIGTERM, and its RSS grew by at most
# SOAK_RSS_MIB (default 64) after the first fifth of the run (warm-up: the
# slots' caches, the prompt cache and the thread pool fill then).
#   scripts/soak_serve.sh [SECONDS] [CLIENTS]      (default 300 s, 32 clients)
# MODEL and TOKENIZER default to ../shared/data/stories260K.bin and
# tok512.model; STRATA to build/strata (built if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-300}
clients=${2:-32}
model=${MODEL:-../shared/data/stories260K.bin}
tokenizer=${TOKENIZER:-../shared/data/tok512.model}
bound_mib=${SOAK_RSS_MIB:-64}
s=${STRATA:-build/strata}
for f in "$model" "$tokenizer"; do
  [[ -e $f ]] || { echo "soak_serve: $f not found (set MODEL and TOKENIZER)" >&2; exit 2; }
done
[[ -x $s ]] || scripts/build.sh strata >/dev/null
out=$(mktemp -d)
trap 'kill "$pid" "$sampler" 2>/dev/null || true; rm -rf "$out"' EXIT

"$s" serve -m "$model" --tokenizer "$tokenizer" --port 0 --parallel 8 --queue 32 --body-limit 1048576 \
  --cache-ram 64 --threads 2 2>"$out/serve.log" &
pid=$!
url=
for _ in $(seq 300); do
  url=$(grep -o 'http://[0-9.]*:[0-9]*' "$out/serve.log" | head -1 || true)
  [[ -n $url ]] && curl -sf "$url/health" >/dev/null 2>&1 && break
  sleep 0.1
done
[[ -n $url ]] || { echo "soak_serve: the server did not start: $(cat "$out/serve.log")" >&2; exit 1; }
echo "soak_serve: $url, $clients clients for $seconds s" >&2

(while kill -0 "$pid" 2>/dev/null; do
   echo "$(date +%s) $(awk '/^VmRSS:/ {print $2}' /proc/$pid/status)"
   sleep 5
 done) >"$out/rss" &
sampler=$!
start=$(date +%s)
node bench/serve_soak.mjs "$url" "$seconds" "$clients" >"$out/result.json"
healthy=no
curl -sf "$url/health" >/dev/null && healthy=yes
curl -sf "$url/metrics" >"$out/metrics" || true
kill -TERM "$pid"
stopped=0
wait "$pid" || stopped=$?
kill "$sampler" 2>/dev/null || true

python3 - "$out/result.json" "$out/rss" "$start" "$seconds" "$bound_mib" "$healthy" "$stopped" "$out/metrics" <<'EOF'
import json, sys
result = json.load(open(sys.argv[1]))
rss = [tuple(map(int, l.split())) for l in open(sys.argv[2]) if len(l.split()) == 2]
start, seconds, bound = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
healthy, stopped = sys.argv[6] == "yes", int(sys.argv[7])
warm = [kib for t, kib in rss if t >= start + seconds // 5] or [rss[-1][1]]
growth = (max(warm) - warm[0]) / 1024
metrics = {l.split()[0]: l.split()[1] for l in open(sys.argv[8]) if l.startswith("strata_requests")}
print(json.dumps(result["counts"]))
print("requests:", sum(result["counts"].values()), "| server counters:", metrics)
print("RSS MiB: start %.1f, after warm-up %.1f, max %.1f, end %.1f; growth after warm-up %.1f (bound %d)" % (
    rss[0][1] / 1024, warm[0] / 1024, max(k for _, k in rss) / 1024, rss[-1][1] / 1024, growth, bound))
for u in result["unexpected"]:
    print("unexpected:", u)
print("healthy at the end:", healthy, "| exit status on SIGTERM:", stopped)
ok = not result["unexpected"] and healthy and stopped == 0 and growth <= bound
print("soak_serve:", "passed" if ok else "FAILED")
sys.exit(0 if ok else 1)
EOF
