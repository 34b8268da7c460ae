#!/usr/bin/env bash
# consolidate.sh — `streamcube consolidate` on the embedded backend (SQLite + local dir).
#
# What it measures: wall time and peak RSS of the `streamcube consolidate`
# process only (ingest runs beforehand and is not timed), on generated playback
# data (seed 42) for one UTC day, in two cases:
#   (a) one hour partition: the events of one hour of a day of 2,400,000
#       events, cut out of the day's CSV by the UTC hour of occurred_at (by
#       default the hour whose row count is nearest to a 24th of the day, about
#       100,000 rows; the script prints the count and the busiest hour's),
#       ingested alone into a fresh data directory: one hour recomputed;
#   (b) the whole day: the 2,400,000 events ingested into a fresh data
#       directory: 24 hours recomputed and merged into the day;
#   (c) with --closing, the day closed after midnight: the day without its
#       last hour (23:00 UTC) ingested and consolidated (not timed), then that
#       hour ingested, and the timed run consolidates again, as the first
#       scheduled run after the day ends does: one hour recomputed, the other
#       23 read back from gold, the day level and the exports built again
#       (the day level it replaces is then deleted; a day still open is
#       published without one). Its peak memory is what a closing run needs
#       (the cost model's consolidator memory).
# For each: seconds, seconds per hour partition, events per second and cells
# written per second, and the seconds until the day was published (its new
# generation live in gold and its CSV and Parquet exports in the lake; the
# command then acknowledges the hours it consolidated, which appends their
# events to the viewer index that erasure requests use), where cells = the
# hour cells plus the day cells that the
# consolidation wrote to gold (counted from the gold_blocks headers of the
# SQLite database; every cell carries its unique-viewers sketch).
# For comparison, DuckDB (pinned in bench/.venv, SET threads = 2) computes the
# same day from the same CSV: dedup, catalog join, GROUP BY hour,
# CUBE(country, device, genre, content_id) plus the day's CUBE, with
# approx_count_distinct(viewer_id); the script prints DuckDB time / streamcube
# time. DuckDB reads the CSV, while streamcube reads silver (already
# validated and deduplicated) from SQLite.
# Target, printed PASS/FAIL (informational, never the exit status): the day
# is published in under 10 s; the whole command's time is printed beside it.
#
# Usage:  bench/consolidate.sh [--events N] [--hour H] [--runs N] [--threads N]
#                              [--no-duckdb] [--closing] [--skip-build]
#   --events N     events in the generated day (default 2400000)
#   --hour H       the hour partition of (a): auto (default), busiest or 0..23
#   --runs N       timed runs per case, best wall time reported (default 3);
#                  each run consolidates a fresh copy of the ingested data
#   --threads N    DuckDB's threads (default 2)
#   --no-duckdb    skip the DuckDB comparison
#   --closing      also time case (c), the day closed after its last hour
#   --skip-build   use the streamcube binary already built in release
# Environment: STREAMCUBE_BIN=/path/to/streamcube uses that binary instead of
# building one; CARGO_BUILD_JOBS limits the build's parallelism as usual.
#
# Needs python3 (with venv) and cargo. Generated CSV files are kept in
# bench/out/data-day-N/ and the ingested (not yet consolidated) data
# directories in bench/out/ingested-*/ (for (c), bench/out/closing-day-N/,
# the day consolidated without its last hour), reused while the parameters and the
# streamcube binary are the same; each timed run consolidates a copy in
# bench/out/consolidate-work/. Results go to bench/out/results-consolidate/ and
# bench/out/consolidate-last-run.txt is a copy of the output. Peak RSS comes
# from wait4() on the measured process.

set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

HELPER="$HERE/consolidate.py"
# A past day (streamcube rejects events from the future, by the wall clock).
DAY="2026-11-04"
# A fixed pseudonymization key: runs and copies see the same pseudonyms.
export STREAMCUBE_PSEUDONYM_KEY="5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed"
export STREAMCUBE_BACKEND=embedded

EVENTS=2400000
HOUR=auto
RUNS=3
THREADS=2
DUCKDB=1
CLOSING=0
SKIP_BUILD=0

while [[ $# -gt 0 ]]; do
    case "$1" in
        --events) EVENTS="${2:?--events needs a number}"; shift ;;
        --hour) HOUR="${2:?--hour needs auto, busiest or 0..23}"; shift ;;
        --runs) RUNS="${2:?--runs needs a number}"; shift ;;
        --threads) THREADS="${2:?--threads needs a number}"; shift ;;
        --no-duckdb) DUCKDB=0 ;;
        --closing) CLOSING=1 ;;
        --skip-build) SKIP_BUILD=1 ;;
        -h | --help) usage; exit 0 ;;
        *) usage_error "unknown option: $1 (see --help)" ;;
    esac
    shift
done
positive_int --events "$EVENTS"
positive_int --runs "$RUNS"
positive_int --threads "$THREADS"
[[ "$HOUR" =~ ^(auto|busiest|[0-9]|1[0-9]|2[0-3])$ ]] || usage_error "--hour must be auto, busiest or 0..23"

setup() {
    venv_with "duckdb==$DUCKDB_VERSION"
    release_bin "$SKIP_BUILD"
    machine_and_versions "$(py_versions duckdb)"
}

# ingested DIR EVENTS_CSV CATALOG_CSV [LATER_CSV]: a data directory holding the ingested (not
# consolidated) events, kept while the input and the binary are the same. With LATER_CSV, the
# events are consolidated and LATER_CSV's ingested after them (for (c)).
ingested() {
    local dir="$1" events="$2" catalog="$3" later="${4:-}"
    local params
    params="events=$(stat -c '%s %Y' "$events") catalog=$(stat -c '%s %Y' "$catalog") bin=$BIN_SHA"
    [[ -z "$later" ]] || params+=" later=$(stat -c '%s %Y' "$later")"
    if is_complete "$dir" "$params" streamcube.db; then
        echo "using the ingested data in $(rel "$dir")"
        return
    fi
    step "ingesting $(rel "$events") into $(rel "$dir")${later:+, consolidating, ingesting $(rel "$later")} (not timed)"
    rm -rf "$dir"
    local started=$SECONDS
    "$BIN" --data-dir "$dir" ingest --catalog "$catalog" "$events"
    if [[ -n "$later" ]]; then
        "$BIN" --data-dir "$dir" consolidate
        "$BIN" --data-dir "$dir" ingest "$later"
    fi
    echo "done in $((SECONDS - started)) s"
    echo "$params" >"$dir/.complete"
}

main() {
    setup
    RES="$OUT/results-consolidate"
    rm -rf "$RES"
    mkdir -p "$RES"
    local data="$OUT/data-day-$EVENTS"
    generate "$data" events="$EVENTS" days=1 start="$DAY" seed="$SEED"
    file_sizes "$data/events.csv"

    step "(a) one hour partition: cutting hour $HOUR out of the day"
    local hour_csv="$data/hour-$HOUR.csv" hour_json="$data/hour-$HOUR.json"
    if [[ -f "$hour_csv" && -f "$hour_json" && "$hour_csv" -nt "$data/.complete" ]]; then
        echo "using $(rel "$hour_csv")"
        "$PY" "$HELPER" show-hour --json "$hour_json" --hour "$HOUR"
    else
        "$PY" "$HELPER" cut-hour --events "$data/events.csv" --hour "$HOUR" \
            --out "$hour_csv.tmp" --json "$hour_json"
        mv "$hour_csv.tmp" "$hour_csv"
    fi
    local hour_rows
    hour_rows="$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["rows"])' "$hour_json")"
    ingested "$OUT/ingested-hour-$EVENTS-$HOUR" "$hour_csv" "$data/catalog.csv"
    step "(a) timing: consolidate one hour partition ($RUNS run(s))"
    timed_consolidations hour "$OUT/ingested-hour-$EVENTS-$HOUR"

    step "(b) the whole day"
    ingested "$OUT/ingested-day-$EVENTS" "$data/events.csv" "$data/catalog.csv"
    step "(b) timing: consolidate the day ($RUNS run(s))"
    timed_consolidations day "$OUT/ingested-day-$EVENTS"

    if [[ "$CLOSING" == 1 ]]; then
        step "(c) the day closed after its last hour: cutting hour 23 out of the day"
        local last_csv="$data/hour-23.csv" rest_csv="$data/without-hour-23.csv"
        if [[ -f "$last_csv" && -f "$rest_csv" && "$rest_csv" -nt "$data/.complete" ]]; then
            echo "using $(rel "$last_csv") and $(rel "$rest_csv")"
        else
            "$PY" "$HELPER" cut-hour --events "$data/events.csv" --hour 23 \
                --out "$last_csv.tmp" --rest "$rest_csv.tmp" --json "$data/hour-23.json"
            mv "$last_csv.tmp" "$last_csv"
            mv "$rest_csv.tmp" "$rest_csv"
        fi
        ingested "$OUT/closing-day-$EVENTS" "$rest_csv" "$data/catalog.csv" "$last_csv"
        step "(c) timing: close the day, its last hour recomputed ($RUNS run(s))"
        timed_consolidations closing "$OUT/closing-day-$EVENTS"
    fi

    local duck_args=() closing_args=()
    if [[ "$DUCKDB" == 1 ]]; then
        step "DuckDB on the same day's CSV, --threads $THREADS ($RUNS run(s))"
        cat "$data/events.csv" "$data/catalog.csv" >/dev/null # warm the page cache
        local i
        for ((i = 1; i <= RUNS; i++)); do
            measure "duckdb day cube (run $i)" "$RES/duckdb-run$i.json" \
                "$PY" "$HELPER" duckdb-day --events "$data/events.csv" --catalog "$data/catalog.csv" \
                --out "$RES/duckdb_day.csv" --threads "$THREADS" --json "$RES/duckdb-cells.json"
            duck_args+=("$RES/duckdb-run$i.json")
        done
        rm -f "$RES/duckdb_day.csv"
        duck_args=(--duckdb-runs "${duck_args[@]}" --duckdb-cells "$RES/duckdb-cells.json")
    fi

    step "results"
    local hour_runs=() day_runs=() i
    for ((i = 1; i <= RUNS; i++)); do
        hour_runs+=("$RES/hour-run$i.json")
        day_runs+=("$RES/day-run$i.json")
        [[ "$CLOSING" == 0 ]] || closing_args+=("$RES/closing-run$i.json")
    done
    [[ "$CLOSING" == 0 ]] || closing_args=(--closing-runs "${closing_args[@]}")
    "$PY" "$HELPER" report \
        --hour-runs "${hour_runs[@]}" --hour-cells "$RES/hour-cells.json" --hour-events "$hour_rows" \
        --day-runs "${day_runs[@]}" --day-cells "$RES/day-cells.json" --day-events "$EVENTS" \
        "${duck_args[@]}" "${closing_args[@]}"
}

tee_output consolidate-last-run.txt main
