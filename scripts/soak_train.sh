#!/usr/bin/env bash
# Kill-9 soak of training (docs/reliability.md): a small run is killed with
# SIGKILL at KILLS random moments (during steps, checkpoint writes and
# metrics appends alike) and resumed each time. After every kill each
# checkpoint directory must be complete and load; at the end the losses must
# equal those of an uninterrupted run bit for bit.
#   scripts/soak_train.sh [KILLS]     (default 20)
#   STRATA=path/to/strata  SOAK_DIR=dir (default: a new temp dir, removed on success)
set -euo pipefail
cd "$(dirname "$0")/.."
kills=${1:-20}
strata=${STRATA:-build/strata}
[[ -x $strata ]] || scripts/build.sh strata >/dev/null
dir=${SOAK_DIR:-$(mktemp -d /tmp/strata-soak-XXXXXX)}
mkdir -p "$dir"
# 30,000 random tokens below 512 (the tiny preset's vocabulary), as uint16.
/usr/bin/python3 -c "import random, struct, sys
random.seed(7)
sys.stdout.buffer.write(struct.pack('<30000H', *[random.randrange(512) for _ in range(30000)]))" >"$dir/tokens.bin"
args=(train --preset tiny --data "$dir/tokens.bin" --steps 40 --batch 4 --seq 64 --save-every 2 --eval-every 0
      --lr 3e-3 --warmup 2 --seed 5 --threads 1)
"$strata" "${args[@]}" -o "$dir/ref" >/dev/null 2>&1
logged() {  # steps in the soak run's metrics so far
  local n
  n=$(grep -c '"loss"' "$dir/soak/metrics.jsonl" 2>/dev/null) || true
  echo "${n:-0}"
}
check_checkpoints() {
  for c in "$dir"/soak/checkpoint-*; do
    [[ -e $c ]] || continue
    [[ -f $c/COMPLETE ]] || { echo "soak: $c is incomplete" >&2; exit 1; }
    "$strata" info -m "$c" >/dev/null 2>&1 || { echo "soak: $c does not load" >&2; exit 1; }
  done
}
resume=()
for ((k = 1; k <= kills; ++k)); do
  [[ -d $dir/soak ]] && compgen -G "$dir/soak/checkpoint-*" >/dev/null && resume=(--resume) || { rm -rf "$dir/soak"; resume=(); }
  "$strata" "${args[@]}" -o "$dir/soak" "${resume[@]}" >>"$dir/soak.log" 2>&1 &
  pid=$!
  # Kill k comes once about k/(KILLS+1) of the 40 steps are logged, then
  # after a random 0-9 ms: inside a step, a checkpoint write or a metrics
  # append, whichever is running then.
  target=$((k * 40 / (kills + 1) + RANDOM % 3))
  while kill -0 $pid 2>/dev/null && (($(logged) < target)); do
    sleep 0.002
  done
  sleep "0.00$((RANDOM % 10))"
  kill -9 $pid 2>/dev/null || true
  wait $pid 2>/dev/null || true
  check_checkpoints
  last=$( (ls -d "$dir"/soak/checkpoint-* 2>/dev/null || true) | sed 's/.*checkpoint-//' | sort -n | tail -1)
  echo "soak: kill $k/$kills, last checkpoint ${last:-none}" >&2
done
[[ -d $dir/soak ]] && compgen -G "$dir/soak/checkpoint-*" >/dev/null && resume=(--resume) || { rm -rf "$dir/soak"; resume=(); }
"$strata" "${args[@]}" -o "$dir/soak" "${resume[@]}" >>"$dir/soak.log" 2>&1
check_checkpoints
# A resumed run clears what killed runs left half-written.
if compgen -G "$dir/soak/.tmp-*" >/dev/null; then
  echo "soak: temporary files left behind: $(ls -d "$dir"/soak/.tmp-*)" >&2
  exit 1
fi
python3 - "$dir/ref/metrics.jsonl" "$dir/soak/metrics.jsonl" <<'PY'
import json, sys
ref = [json.loads(l) for l in open(sys.argv[1]) if '"loss"' in l]
soak = [json.loads(l) for l in open(sys.argv[2]) if '"loss"' in l]
steps = [m["step"] for m in soak]
assert steps == sorted(set(steps)), f"steps logged twice or out of order: {steps}"
assert len(ref) == len(soak), f"{len(soak)} steps logged, expected {len(ref)}"
diff = [m["step"] for a, m in zip(ref, soak) if a["loss"] != m["loss"] or a["step"] != m["step"]]
assert not diff, f"losses differ from the uninterrupted run at steps {diff}"
print(f"soak: {len(soak)} steps, losses equal to the uninterrupted run bit for bit")
PY
[[ -n ${SOAK_DIR:-} ]] || rm -rf "$dir"
