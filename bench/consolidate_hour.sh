#!/usr/bin/env bash
# consolidate_hour.sh — the scheduled consolidation's run of one large hour of the open day.
#
# What it measures: wall time and peak memory of `streamcube consolidate` on the
# embedded backend recomputing one hour of the current UTC day (still open, so
# the run publishes the hour without the day level or exports, as the scheduled
# runs do), for hours of several sizes: how a run's memory grows with the
# events of the hours it recomputes. Each size is a generated day (seed 42) of
# that many events, every event moved into the same hour (the last complete
# UTC hour; see consolidate.py one-hour), ingested into a fresh data directory
# (not timed). The table gives the distinct events, seconds, hour cells, peak
# RSS, own (anonymous) memory and own memory per event. The cost model
# (bench/cost_model.py) scales a run's memory from these figures.
#
# Usage:  bench/consolidate_hour.sh [--events N,N,...] [--runs N] [--skip-build]
#   --events N,...  events in each hour (default 100000,1000000,3000000)
#   --runs N        timed runs per size, best wall time reported (default 2)
#   --skip-build    use the streamcube binary already built in release
# Environment: STREAMCUBE_BIN=/path/to/streamcube uses that binary instead of
# building one.
#
# Needs python3 (with venv) and cargo. Must run after 01:00 UTC (the hour has to
# be over and in the current day). Data go to bench/out/open-hour-N/ (remade on
# every run: the hour is today's), results to bench/out/results-consolidate-hour/
# and the output to bench/out/consolidate-hour-last-run.txt.

set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

HELPER="$HERE/consolidate.py"
export STREAMCUBE_PSEUDONYM_KEY="5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed"
export STREAMCUBE_BACKEND=embedded

SIZES="100000,1000000,3000000"
RUNS=2
SKIP_BUILD=0

while [[ $# -gt 0 ]]; do
    case "$1" in
        --events) SIZES="${2:?--events needs a list of numbers}"; shift ;;
        --runs) RUNS="${2:?--runs needs a number}"; shift ;;
        --skip-build) SKIP_BUILD=1 ;;
        -h | --help) usage; exit 0 ;;
        *) usage_error "unknown option: $1 (see --help)" ;;
    esac
    shift
done
IFS=, read -ra EVENTS <<<"$SIZES"
for n in "${EVENTS[@]}"; do positive_int --events "$n"; done
positive_int --runs "$RUNS"

main() {
    # The helpers need only Python's standard library, run by the benchmarks' venv's Python.
    [[ -x "$PY" ]] || python3 -m venv "$VENV"
    release_bin "$SKIP_BUILD"
    # shellcheck disable=SC2119 # no packages to name
    machine_and_versions "$(py_versions)"
    local hour
    hour="$(date -u -d '1 hour ago' +%Y-%m-%dT%H)"
    [[ "${hour%T*}" == "$(date -u +%Y-%m-%d)" ]] ||
        { echo "the last complete UTC hour is in yesterday: run after 01:00 UTC" >&2; return 1; }
    RES="$OUT/results-consolidate-hour"
    rm -rf "$RES"
    mkdir -p "$RES"
    local n
    for n in "${EVENTS[@]}"; do
        local data="$OUT/data-day-$n" dir="$OUT/open-hour-$n"
        generate "$data" events="$n" days=1 start="2026-11-04" seed="$SEED"
        step "$n events moved into $hour:00Z and ingested into $(rel "$dir") (not timed)"
        rm -rf "$dir"
        mkdir -p "$dir"
        "$PY" "$HELPER" one-hour --events "$data/events.csv" --out "$dir/hour.csv" --at "$hour"
        "$BIN" --data-dir "$dir/data" ingest --catalog "$data/catalog.csv" "$dir/hour.csv" >/dev/null
        rm -f "$dir/hour.csv"
        step "consolidating the hour of $n events ($RUNS run(s))"
        timed_consolidations "open-$n" "$dir/data"
        rm -rf "$dir"
    done
    step "results"
    "$PY" "$HELPER" hours-report --res "$RES" --events "${EVENTS[@]}" --runs "$RUNS"
}

tee_output consolidate-hour-last-run.txt main
