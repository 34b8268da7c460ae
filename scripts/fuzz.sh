#!/usr/bin/env bash
# Fuzzes the bad-input paths for a bounded time: the CSV and JSON-lines readers, the event JSON,
# the query parameters, the HTTP API and the Lambda event parsing (S3, DynamoDB stream, MSK).
#
#   scripts/fuzz.sh                 # every target, about 30 s each (about 4 minutes in all)
#   scripts/fuzz.sh 120             # 120 s per target
#   scripts/fuzz.sh 20 http msk     # only these targets
#
# Each target is a test binary of property tests (see docs/reliability.md, "Fuzzing"). Every property
# replays the checked-in seed corpus (fuzz/corpus/<target>/) first, then runs generated cases
# until its share of the target's time is used (FUZZ_SECONDS) or PROPTEST_CASES cases are done.
# A failure is shrunk and saved into fuzz/corpus/ (proptest regression seeds, or crash-*.json),
# so that every later run, `cargo test` included, replays it first.
#
# Environment: PROPTEST_CASES (cap on cases per property; default: unbounded, time decides),
# PROPTEST_RNG_SEED / FUZZ_SEED (repeat a run), FUZZ_KNOWN_BUGS=1 (let the generators produce the
# inputs of the known bugs too), FUZZ_STRICT=1 (fail when a known bug still reproduces).
#
# Prints the executions per target and property; exits non-zero when a property fails, a target
# exceeds its time limit (a hang is a bug too) or the build fails.
set -uo pipefail
cd "$(dirname "$0")/.."

per_target=${1:-${FUZZ_TARGET_SECONDS:-30}}
shift || true

# target name, package, test file, number of properties run by default (the test functions).
all_targets=(
  "readers  streamcube-model    fuzz_readers"
  "event    streamcube-model    fuzz_event"
  "query    streamcube-model    fuzz_query"
  "http     streamcube-embedded fuzz_http"
  "s3       bronze-processor    fuzz_events"
  "stream   cube-consolidator   fuzz_events"
  "msk      kafka-ingest        fuzz_events"
)
targets=()
if [ $# -gt 0 ]; then
  for want in "$@"; do
    found=0
    for t in "${all_targets[@]}"; do
      set -- $t
      if [ "$1" = "$want" ]; then targets+=("$t"); found=1; fi
    done
    [ $found = 1 ] || { echo "unknown target '$want' (known: readers event query http s3 stream msk)" >&2; exit 2; }
  done
else
  targets=("${all_targets[@]}")
fi

log_dir=$(mktemp -d "${TMPDIR:-/tmp}/streamcube-fuzz.XXXXXX")
export CARGO_TERM_COLOR=never RUST_BACKTRACE=0
export PROPTEST_CASES=${PROPTEST_CASES:-100000000}

echo "== building the fuzz targets (debug, -j1)"
for t in "${targets[@]}"; do
  set -- $t
  if ! cargo test -q -j1 --all-features -p "$2" --test "$3" --no-run >"$log_dir/build-$1.log" 2>&1; then
    cat "$log_dir/build-$1.log"
    echo "build failed: $1" >&2
    exit 1
  fi
done

failed=()
echo "== fuzzing: ${per_target}s per target, logs in $log_dir"
for t in "${targets[@]}"; do
  set -- $t
  name=$1 pkg=$2 test=$3
  # The properties of a target share its time; they run one after the other.
  listed=$(cargo test -q -j1 --all-features -p "$pkg" --test "$test" -- --list 2>/dev/null | grep -c ': test$')
  ignored=$(cargo test -q -j1 --all-features -p "$pkg" --test "$test" -- --list --ignored 2>/dev/null | grep -c ': test$')
  props=$((${listed:-1} - ${ignored:-0}))
  [ "$props" -gt 0 ] || props=1
  export FUZZ_SECONDS=$(awk -v t="$per_target" -v n="$props" 'BEGIN { printf "%.1f", t / n }')
  log="$log_dir/$name.log"
  start=$(date +%s)
  timeout --kill-after=10 $((per_target + 180)) \
    cargo test -q -j1 --all-features -p "$pkg" --test "$test" -- --test-threads=1 --nocapture >"$log" 2>&1
  rc=$?
  took=$(($(date +%s) - start))
  execs=$(grep -o 'fuzz-execs .* execs=[0-9]*' "$log" | sed 's/.* execs=//' | awk '{ s += $1 } END { print s + 0 }')
  if [ $rc -eq 0 ]; then
    printf '%-8s ok      %9s executions in %4ss\n' "$name" "$execs" "$took"
  else
    [ $rc -eq 124 ] && why="TIMEOUT" || why="FAILED"
    printf '%-8s %-7s %9s executions in %4ss  (see %s)\n' "$name" "$why" "$execs" "$took" "$log"
    grep -E 'fails|Test failed|minimal|panicked at' "$log" | head -20 | sed 's/^/    /'
    failed+=("$name")
  fi
  grep -o 'fuzz-execs .*' "$log" | sed 's/^fuzz-execs /    /'
done

echo "== known bugs (ignored tests named known_bug_*; see docs/reliability.md)"
still=()
for t in "${targets[@]}"; do
  set -- $t
  name=$1 pkg=$2 test=$3
  bugs=$(cargo test -q -j1 --all-features -p "$pkg" --test "$test" -- --list --ignored 2>/dev/null | sed -n 's/^\(known_bug_[a-z0-9_]*\): test$/\1/p')
  for bug in $bugs; do
    if FUZZ_SECONDS=5 PROPTEST_CASES=64 timeout 300 \
      cargo test -q -j1 --all-features -p "$pkg" --test "$test" -- --ignored --exact "$bug" >"$log_dir/$bug.log" 2>&1; then
      printf '  fixed?   %-8s %s passes now: remove its #[ignore]\n' "$name" "$bug"
    else
      printf '  present  %-8s %s\n' "$name" "$bug"
      still+=("$bug")
    fi
  done
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "FAILED: ${failed[*]} (inputs saved under fuzz/corpus/; logs in $log_dir)" >&2
  exit 1
fi
if [ ${#still[@]} -gt 0 ] && [ "${FUZZ_STRICT:-0}" = 1 ]; then
  echo "FAILED: ${#still[@]} known bugs still reproduce (FUZZ_STRICT=1)" >&2
  exit 1
fi
echo "ok: no new failure (${#still[@]} known bugs still reproduce)"
