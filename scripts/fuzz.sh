#!/usr/bin/env bash
# Runs every libFuzzer target for a given number of executions (or seconds), two at a time, from the
# seeds kept in the repository plus the build's corpus; prints each target's final libFuzzer line
# (executions, coverage, corpus) and fails if any target crashed.
#   scripts/fuzz.sh [--runs N | --seconds S] [--chunk N] [--no-leak-check] [TARGET...]
# Targets: projection_check trust_store policy_file decisions config gateway_requests note checkpoint tile_path
# witness_request (default: all).
# Builds its own clang tree (build-fuzz/). gateway_requests keeps the core's state between inputs, so it runs with
# -detect_leaks=0 (a leak check after each input would report that state). --no-leak-check does the same
# for every target: LeakSanitizer's per-input check slows long runs about 50-fold once the corpus grows
# (leaks are still caught by the ASan+UBSan unit-test run in the suite and by runs without the flag).
# --runs is reached in processes of --chunk executions each (default 1000000), each resuming from the
# corpus the last one grew: a long-lived ASan process slows down about tenfold within an hour here
# (madvise and TLB shootdowns), so restarting keeps the rate. Totals are summed over the chunks.
# ASAN_OPTIONS defaults to a throughput setting (no allocation stacks, an 8 MB quarantine: about 1.5-2x
# the executions per second here); a crash's input (crash-*) is re-run with the full defaults to read it.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=10000000 seconds=0 leak_check=1 chunk=1000000
targets=()
while (($#)); do
  case "$1" in
    --runs) runs="$2"; shift 2 ;;
    --seconds) seconds="$2"; shift 2 ;;
    --no-leak-check) leak_check=0; shift ;;
    --chunk) chunk="$2"; shift 2 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) targets+=("$1"); shift ;;
  esac
done
((${#targets[@]})) || targets=(projection_check trust_store policy_file decisions config gateway_requests note checkpoint tile_path
                                witness_request)
# The libFuzzer tree (clang, coverage + ASan): fuzz/CMakeLists.txt, built here into build-fuzz/ against
# the main build's generated proto library. (The suite does not use it: it runs the same harnesses from
# the ASan tree, build-asan/, with fuzz/replay_main.cc.)
bin=build-fuzz
./scripts/bootstrap.sh clang libclang-rt-14-dev  # libFuzzer and its sanitizer runtimes (only this script needs them)
clangxx=$(command -v clang++ || command -v clang++-14 || true)
[[ -n $clangxx ]] || { echo "fuzz.sh: clang++ is not on PATH after installing clang" >&2; exit 2; }
echo "fuzz.sh: building the generated proto library (build/) and the libFuzzer targets (build-fuzz/)"
./scripts/build.sh osh_proto >/dev/null
if [[ ! -f $bin/build.ninja ]]; then
  cmake -S fuzz -B "$bin" -G Ninja -DCMAKE_CXX_COMPILER="$clangxx" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DOSH_SOURCE_ROOT="$PWD" -DOSH_PROTO_LIBRARY="$PWD/build/proto/libosh_proto.a" -DOSH_PROTO_INCLUDE="$PWD/build/proto/gen" >/dev/null
fi
cmake --build "$bin" -- -j"$(nproc)" >/dev/null
[[ -d $bin/corpus/projection_check ]] || { mkdir -p "$bin/corpus/projection_check" "$bin/corpus/trust_store" &&
  "$bin/make_seeds" "$bin/corpus/projection_check" "$bin/corpus/trust_store"; }
export ASAN_OPTIONS=${ASAN_OPTIONS:-malloc_context_size=0:quarantine_size_mb=8:thread_local_quarantine_size_kb=64:max_malloc_fill_size=0}
logs=$(mktemp -d)
echo "fuzz.sh: logs in $logs (progress: $logs/progress)"
run_one() {
  local name=$1 corpus=$bin/corpus/$1
  mkdir -p "$corpus"
  local seeds=()
  [[ -d fuzz/seeds/$name ]] && seeds=(fuzz/seeds/$name)
  local extra=()
  [[ $name == gateway_requests || $leak_check == 0 ]] && extra+=(-detect_leaks=0)
  run_chunk() {  # $1: the limit flag
    (cd "$logs" && "$OLDPWD/$bin/fuzz_$name" "$1" "${extra[@]}" -max_len=16384 -print_final_stats=1 \
       "$OLDPWD/$corpus" "${seeds[@]/#/$OLDPWD/}") >>"$logs/$name.log" 2>&1
  }
  if ((seconds > 0)); then
    run_chunk -max_total_time="$seconds"
    return
  fi
  local done_runs=0 this
  while ((done_runs < runs)); do
    this=$((runs - done_runs < chunk ? runs - done_runs : chunk))
    run_chunk -runs="$this" || return 1
    done_runs=$((done_runs + $(grep 'stat::number_of_executed_units' "$logs/$name.log" | tail -1 | awk '{print $2}')))
    echo "$name: $done_runs of $runs executions" >>"$logs/progress"
  done
}
status=0
for ((i = 0; i < ${#targets[@]}; i += 2)); do
  pids=()
  for name in "${targets[@]:i:2}"; do run_one "$name" & pids+=($!); done
  for pid in "${pids[@]}"; do wait "$pid" || status=1; done
done
for name in "${targets[@]}"; do
  echo "== $name: $(grep -E '^#[0-9]+.*DONE|^#[0-9]+' "$logs/$name.log" | tail -1)"
  echo "   executions in all: $(grep 'stat::number_of_executed_units' "$logs/$name.log" | awk '{s += $2} END {print s + 0}')" \
       "in $(grep -c 'stat::number_of_executed_units' "$logs/$name.log") process(es);" \
       "peak RSS $(grep 'stat::peak_rss_mb' "$logs/$name.log" | awk '$2 > m {m = $2} END {print m + 0}') MB"
  grep -q 'ERROR: libFuzzer\|SUMMARY: ' "$logs/$name.log" && { echo "   CRASH: see $logs/$name.log"; status=1; }
done
exit $status
