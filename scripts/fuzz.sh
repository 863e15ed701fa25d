#!/usr/bin/env bash
# Fuzzes every parser target (fuzz/, libFuzzer + AddressSanitizer + UBSan,
# clang 14) for SECONDS each (default 60) and prints executions, coverage
# and findings per target. Builds incrementally in build-fuzz/ from the
# parser sources only. The corpus grows in build-fuzz/corpus/<target>/ from
# the seeds strata writes itself (build-fuzz/make_seeds) and the regression
# inputs in tests/fuzz-corpus/<target>/.
#
# A crash, hang (over 10 s on one input) or leak is copied into
# tests/fuzz-corpus/<target>/, where the GCC test suite replays it
# (tests/fuzz/test_fuzz_corpus.cpp), and makes the script exit non-zero.
# Installs clang 14, its fuzzer runtime and OpenMP runtime if missing.
#   scripts/fuzz.sh [SECONDS]    e.g. scripts/fuzz.sh 10
# FUZZ_TARGETS="gguf tokenizer" picks targets; FUZZ_JOBS=2 runs two at a time.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
need=()
for p in clang-14 libclang-rt-14-dev libomp-14-dev; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if ((${#need[@]})); then
  sudo_cmd=()
  [[ $(id -u) -ne 0 ]] && sudo_cmd=(sudo)
  echo "fuzz: installing ${need[*]}" >&2
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
fi
dir=build-fuzz
[[ -f $dir/CMakeCache.txt ]] || cmake -S fuzz -B $dir -DCMAKE_CXX_COMPILER=clang++-14 -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build $dir -j"$(nproc)" >&2
rm -rf $dir/seeds && $dir/make_seeds $dir/seeds
dict_of() {
  case $1 in
    gguf) echo fuzz/dicts/gguf.dict ;;
    chat_request | completion_request | sft_record) echo fuzz/dicts/request.dict ;;
    tokenizer) echo fuzz/dicts/tokenizer.dict ;;
    *) echo fuzz/dicts/json_file.dict ;;
  esac
}
targets=${FUZZ_TARGETS:-gguf safetensors chat_request completion_request sft_record trainer_state llama2c hf_dir token_data tokenizer}
jobs=${FUZZ_JOBS:-1}

# One target for SECONDS; its result line goes to $dir/<target>.result.
fuzz_one() {
  local t=$1 log=$dir/$1.log rc result execs cov ft
  mkdir -p $dir/corpus/$t $dir/artifacts tests/fuzz-corpus/$t
  rm -f $dir/artifacts/$t-*  # only this run's findings are reported
  set +e
  ASAN_OPTIONS=detect_leaks=1 $dir/fuzz_$t -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -dict="$(dict_of $t)" -artifact_prefix=$dir/artifacts/$t- $dir/corpus/$t $dir/seeds/$t tests/fuzz-corpus/$t >"$log" 2>&1
  rc=$?
  set -e
  execs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | awk '{print $2}' | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | awk '{print $2}')
  ft=$(grep -o 'ft: [0-9]*' "$log" | tail -1 | awk '{print $2}')
  result=ok
  if ((rc != 0)); then
    result="FOUND (exit $rc, log $log)"
    for a in $dir/artifacts/$t-*; do
      [[ -f $a ]] && cp "$a" tests/fuzz-corpus/$t/ && result+=" -> tests/fuzz-corpus/$t/$(basename "$a")"
    done
  fi
  printf '%-20s %12s %10s %8s  %s\n' $t "${execs:-?}" "${cov:-?}" "${ft:-?}" "$result" >$dir/$t.result
}

# FUZZ_JOBS targets at a time (one core each), results printed in target order.
running=0
for t in $targets; do
  rm -f $dir/$t.result
  fuzz_one $t &
  running=$((running + 1))
  if ((running >= jobs)); then
    wait -n
    running=$((running - 1))
  fi
done
wait
failed=0
printf '%-20s %12s %10s %8s  %s\n' target executions coverage features result
for t in $targets; do
  cat $dir/$t.result
  grep -q "  ok$" $dir/$t.result || failed=1
done
exit $failed
