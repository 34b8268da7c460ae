#!/usr/bin/env bash
# cube_vs_duckdb.sh — `streamcube cube` against DuckDB on the same files.
#
# What it measures, on 1,000,000 generated playback events over 7 days (the
# streamcube-datagen default configuration, seed 42):
#   * wall time and peak RSS of `streamcube cube --threads 2` and of DuckDB
#     (`SET threads = 2`) computing the same cube: dedup by event_id, left
#     join of the catalog (genre `unknown` when missing),
#     GROUP BY day, CUBE(country, device, genre, content_id) with plays,
#     watch_seconds, completed, buffering_ms, bitrate_sum, bitrate_count and
#     unique_viewers (DuckDB: approx_count_distinct(viewer_id));
#   * correctness of streamcube's cube: same cell set and identical exact
#     measures as DuckDB's, and unique_viewers against count(DISTINCT
#     viewer_id) (p99 / max relative error on cells with >= 1000 viewers, max
#     absolute error below that), printed for streamcube and for DuckDB's
#     approx_count_distinct.
# Targets, printed PASS/FAIL: streamcube >= 5x faster and <= 1/3 of DuckDB's
# peak memory (informational), exact measures identical, unique_viewers p99
# <= 2.5% and max <= 4% on cells >= 1000, max abs error <= 3 below 1000.
# The exit status is non-zero when correctness fails (never for speed).
#
# With --big it also generates 10,000,000 events over 30 days (from
# 2026-10-01, so that none is in the future) and runs only `streamcube cube`
# on them, printing time and peak memory (target < 4 GiB).
#
# Usage:  bench/cube_vs_duckdb.sh [--big] [--runs N] [--threads N] [--skip-build]
#   --runs N       timed runs per tool, best wall time reported (default 3)
#   --threads N    threads for both tools (default 2)
#   --skip-build   use the streamcube binary already built in release
# Environment: STREAMCUBE_BIN=/path/to/streamcube uses that binary instead of
# building one; CARGO_BUILD_JOBS limits the build's parallelism as usual.
#
# Needs python3 (with venv) and cargo. It creates bench/.venv with a pinned
# duckdb from PyPI, keeps generated data in bench/out/data-*/ (reused when
# present) and results in bench/out/results-*/; bench/out/last-run.txt is a
# copy of the output. Both folders are gitignored. Peak RSS comes from wait4()
# on each measured process; the DuckDB process includes the Python
# interpreter (about 30 MiB).

set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

HELPER="$HERE/cube_vs_duckdb.py"
# The 1M set is the generator's default (2026-11-01, 7 days). The 30-day set
# starts a month earlier so that it lies in the past (streamcube rejects
# events from the future, judged by the wall clock).
START_1M="2026-11-01"
START_BIG="2026-10-01"

BIG=0
RUNS=3
THREADS=2
SKIP_BUILD=0

while [[ $# -gt 0 ]]; do
    case "$1" in
        --big) BIG=1 ;;
        --runs) RUNS="${2:?--runs needs a number}"; shift ;;
        --threads) THREADS="${2:?--threads needs a number}"; shift ;;
        --skip-build) SKIP_BUILD=1 ;;
        -h | --help) usage; exit 0 ;;
        *) usage_error "unknown option: $1 (see --help)" ;;
    esac
    shift
done
positive_int --runs "$RUNS"
positive_int --threads "$THREADS"

# prepare_data DIR EVENTS DAYS START: the generated events and catalog in DIR, in the page cache.
prepare_data() {
    local dir="$1" days="$3" start="$4"
    generate "$dir" events="$2" days="$days" start="$start" seed="$SEED"
    file_sizes "$dir/events.csv" "$dir/catalog.csv"
    # DuckDB does not reject events from the future as streamcube does.
    warn_if_future "$start" "$days" "streamcube will reject the events after now as being" \
        "in the future, and the comparison cannot match."
    cat "$dir/events.csv" "$dir/catalog.csv" >/dev/null # warm the page cache for both tools
}

setup() {
    venv_with "duckdb==$DUCKDB_VERSION"
    release_bin "$SKIP_BUILD"
    machine_and_versions "$(py_versions duckdb)"
}

# The 1M-event comparison. Sets CHECK_STATUS (non-zero: correctness failed).
compare_1m() {
    local data="$OUT/data-1m" res="$OUT/results-1m" exact="$OUT/exact-1m.csv"
    prepare_data "$data" 1000000 7 "$START_1M"
    rm -rf "$res"
    mkdir -p "$res"

    step "timing: $RUNS run(s) each, --threads $THREADS"
    local sc_runs=() duck_runs=() i order tool
    for ((i = 1; i <= RUNS; i++)); do
        # Alternate the order so neither tool always runs first.
        order="streamcube duckdb"
        if ((i % 2 == 0)); then order="duckdb streamcube"; fi
        for tool in $order; do
            if [[ "$tool" == streamcube ]]; then
                measure "streamcube cube (run $i)" "$res/streamcube-run$i.json" \
                    "$BIN" cube --events "$data/events.csv" --catalog "$data/catalog.csv" \
                    --out "$res/streamcube_cube.csv" --report "$res/streamcube_report.json" \
                    --threads "$THREADS"
                sc_runs+=("$res/streamcube-run$i.json")
            else
                measure "duckdb (run $i)" "$res/duckdb-run$i.json" \
                    "$PY" "$HELPER" duckdb-cube --events "$data/events.csv" \
                    --catalog "$data/catalog.csv" --out "$res/duckdb_cube.csv" --threads "$THREADS"
                duck_runs+=("$res/duckdb-run$i.json")
            fi
        done
    done

    step "exact reference: count(DISTINCT viewer_id) per cell (DuckDB, not timed)"
    if [[ -f "$exact" && "$exact" -nt "$data/.complete" ]]; then
        echo "using $(rel "$exact")"
    else
        "$PY" "$HELPER" duckdb-cube --exact --events "$data/events.csv" \
            --catalog "$data/catalog.csv" --out "$exact.tmp" --threads "$(nproc)"
        mv "$exact.tmp" "$exact"
    fi

    step "speed and memory (1,000,000 events, 7 days)"
    "$PY" "$HELPER" report --streamcube "${sc_runs[@]}" --duckdb "${duck_runs[@]}"

    step "correctness of streamcube's cube"
    CHECK_STATUS=0
    "$PY" "$HELPER" check --ours "$res/streamcube_cube.csv" --duckdb "$res/duckdb_cube.csv" \
        --exact "$exact" --threads "$(nproc)" --json "$res/check.json" || CHECK_STATUS=$?
}

# streamcube alone on 10M events over 30 days.
big_run() {
    local data="$OUT/data-10m-30d" res="$OUT/results-10m-30d"
    prepare_data "$data" 10000000 30 "$START_BIG"
    rm -rf "$res"
    mkdir -p "$res"
    step "streamcube cube on 10,000,000 events over 30 days from $START_BIG, --threads $THREADS"
    measure "streamcube cube (10M)" "$res/streamcube.json" \
        "$BIN" cube --events "$data/events.csv" --catalog "$data/catalog.csv" \
        --out "$res/streamcube_cube.csv" --report "$res/streamcube_report.json" \
        --threads "$THREADS"
    "$PY" "$HELPER" big-report --streamcube "$res/streamcube.json" --events 10000000 --days 30
}

main() {
    setup
    compare_1m
    if [[ "$BIG" == 1 ]]; then
        big_run
    fi
    if [[ "$CHECK_STATUS" != 0 ]]; then
        step "FAILED: streamcube's cube is not correct (see above)"
    else
        step "done: correctness passed (speed and memory targets are informational)"
    fi
    return "$CHECK_STATUS"
}

tee_output last-run.txt main
