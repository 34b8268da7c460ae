#!/usr/bin/env bash
# bronze_vs_pandas.sh — bronze processing: `streamcube ingest` (embedded backend) against the
# same job written as a pandas script (bench/bronze_pandas.py).
#
# What it measures, on generated playback events (`streamcube generate`, seed 42: 0.5% of the
# rows are duplicates and 0.1% are bad rows, each breaking one contract rule):
#   * wall time, rows/s and peak RSS of `streamcube --data-dir D ingest FILE` into a fresh data
#     directory (land the file in bronze, validate, pseudonymize, deduplicate, write silver to
#     SQLite, quarantine, report), and of bench/bronze_pandas.py doing the same work into a
#     fresh SQLite file: pd.read_csv of the whole file, every field validated with the
#     contract's rules, HMAC-SHA-256 of viewer_id under the same key, dedup by event_id (first
#     wins, also against the store), executemany in one transaction into streamcube's
#     silver_events schema (same indexes, pragmas, WAL, column encodings), quarantine JSONL and
#     report JSON;
#   * on 1,000,000 rows over 7 days from 2026-11-01, as plain CSV and as gzip, and with --big
#     also on 10,000,000 rows over 30 days from 2026-10-01 (plain and gzip);
#   * correctness, for every data set: both tools report the same rows, accepted, duplicates
#     and rejected (and the same counts per reason); each silver table holds exactly its
#     accepted rows; both silver tables hold the same set of event_ids, with identical rows
#     (pseudonym, hour, origin, every column); the quarantines list the same lines, raw text
#     and reasons.
# Targets, printed as information: streamcube's throughput at least 20x the pandas job's, and
# streamcube's peak memory flat from 1M to 10M rows (at most 1.25x; peak RSS and own memory).
# The exit status is non-zero when correctness fails (never for speed or memory).
#
# Usage:  bench/bronze_vs_pandas.sh [--big] [--runs N] [--rows N] [--skip-build]
#   --big          also the 10,000,000-row data sets (30 days)
#   --runs N       timed runs per tool and data set, best wall time reported (default 1)
#   --rows N       rows of the base data sets instead of 1,000,000 (for quick runs)
#   --skip-build   use the streamcube binary already built in release
# Environment: STREAMCUBE_BIN=/path/to/streamcube uses that binary instead of building one;
# CARGO_TARGET_DIR and CARGO_BUILD_JOBS apply to the build as usual. A random pseudonymization
# key is drawn for each invocation and given to both tools.
#
# Needs python3 (with venv) and cargo. It creates or completes bench/.venv with pinned pandas,
# numpy and xxhash (the pandas job's hash for the id index both tools write) from PyPI, keeps
# generated data in bench/out/data-bronze-*/ (reused when present) and results in
# bench/out/results-bronze-*/ (the last run's streamcube data directory,
# pandas database, quarantines and reports, kept for inspection: with --big they take about
# 12 GB); bench/out/bronze-last-run.txt is a copy of the output. Both folders are gitignored.
# Peak RSS comes from wait4() on each measured process (bench/cube_vs_duckdb.py measure); the
# pandas process includes the Python interpreter, pandas and numpy (about 70 MiB). Both tools
# open SQLite with mmap_size = 1 GiB, so both RSS figures also count the database pages read
# through the map (file-backed and reclaimable, but counted): up to 1 GiB more as silver grows.
# The "anon" columns are each process's own memory without those pages (RssAnon, sampled every
# 20 ms), and the flatness target is printed for both.

set -euo pipefail
shopt -s inherit_errexit
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

JOB="$HERE/bronze_pandas.py"
SUMMARY="$OUT/bronze-summary.jsonl"
# Starts in the past: both tools reject events more than 5 minutes in the future (by the wall
# clock).
START_BASE="2026-11-01"
DAYS_BASE=7
START_BIG="2026-10-01"
DAYS_BIG=30
ROWS_BIG=10000000

BIG=0
RUNS=1
ROWS=1000000
SKIP_BUILD=0

while [[ $# -gt 0 ]]; do
    case "$1" in
        --big) BIG=1 ;;
        --runs) RUNS="${2:?--runs needs a number}"; shift ;;
        --rows) ROWS="${2:?--rows needs a number}"; shift ;;
        --skip-build) SKIP_BUILD=1 ;;
        -h | --help) usage; exit 0 ;;
        *) usage_error "unknown option: $1 (see --help)" ;;
    esac
    shift
done
positive_int --runs "$RUNS"
positive_int --rows "$ROWS"
((ROWS >= BAD_EVERY)) || usage_error "--rows must be at least $BAD_EVERY"

# Settings streamcube would otherwise take from the environment and that change what ingest
# does (another backend, a key ring, served countries) or where it writes.
unset STREAMCUBE_BACKEND STREAMCUBE_DATA_DIR STREAMCUBE_PSEUDONYM_KEYRING \
    STREAMCUBE_PSEUDONYM_KEY_ID STREAMCUBE_SERVED_COUNTRIES STREAMCUBE_CUBOIDS
STREAMCUBE_PSEUDONYM_KEY="$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')"
export STREAMCUBE_PSEUDONYM_KEY

setup() {
    venv_with "pandas==$PANDAS_VERSION" "numpy==$NUMPY_VERSION" "xxhash==$XXHASH_VERSION"
    release_bin "$SKIP_BUILD"
    local sqlite
    sqlite="$("$PY" -c 'import sqlite3; print(sqlite3.sqlite_version)')"
    machine_and_versions "$(py_versions pandas numpy xxhash), SQLite $sqlite (pandas job)"
}

# run_set LABEL FILE ROWS [BASE]: times both tools on FILE and checks their results. BASE is
# the label of the data set whose streamcube memory this one is compared with.
run_set() {
    local label="$1" file="$2" rows="$3" base="${4:-}"
    local res
    res="$OUT/results-bronze-${label// /-}"
    rm -rf "$res"
    mkdir -p "$res"
    cat "$file" >/dev/null # warm the page cache for both tools

    step "$label: $(printf "%'d" "$rows") rows, $RUNS run(s) each"
    local sc_runs=() pd_runs=() i order tool log
    for ((i = 1; i <= RUNS; i++)); do
        # Alternate the order so neither tool always runs first.
        order="streamcube pandas"
        if ((i % 2 == 0)); then order="pandas streamcube"; fi
        for tool in $order; do
            if [[ "$tool" == streamcube ]]; then
                rm -rf "$res/streamcube-data"
                log="$res/streamcube-run$i.log"
                # Its tables of counts go to the log; the check below prints them.
                measure "streamcube ingest (run $i)" "$res/streamcube-run$i.json" \
                    "$BIN" --data-dir "$res/streamcube-data" ingest "$file" >"$log" ||
                    { cat "$log"; return 1; }
                tail -n 1 "$log"
                sc_runs+=("$res/streamcube-run$i.json")
            else
                rm -rf "$res/pandas.db" "$res/pandas.db-wal" "$res/pandas.db-shm" "$res/pandas-lake"
                log="$res/pandas-run$i.log"
                measure "pandas job (run $i)" "$res/pandas-run$i.json" \
                    "$PY" "$JOB" ingest --db "$res/pandas.db" --lake "$res/pandas-lake" "$file" \
                    >"$log" || { cat "$log"; return 1; }
                cat "$log"
                pd_runs+=("$res/pandas-run$i.json")
            fi
        done
    done
    "$PY" "$JOB" summary --label "$label" --rows "$rows" ${base:+--base "$base"} \
        --streamcube "${sc_runs[@]}" --pandas "${pd_runs[@]}" --append "$SUMMARY"

    step "$label: correctness (last run of each tool)"
    "$PY" "$JOB" check --streamcube-dir "$res/streamcube-data" --db "$res/pandas.db" \
        --lake "$res/pandas-lake" --name "$(basename "$file")" --json "$res/check.json" ||
        CHECK_STATUS=1
}

main() {
    setup
    CHECK_STATUS=0
    rm -f "$SUMMARY"

    local base big
    base="$(rows_label "$ROWS")"
    bronze_data "$OUT/data-bronze-$base" "$ROWS" "$DAYS_BASE" "$START_BASE" 0
    run_set "$base csv" "$EVENTS_FILE" "$ROWS"
    bronze_data "$OUT/data-bronze-$base-gz" "$ROWS" "$DAYS_BASE" "$START_BASE" 1
    run_set "$base csv.gz" "$EVENTS_FILE" "$ROWS"

    if [[ "$BIG" == 1 ]]; then
        big="$(rows_label "$ROWS_BIG")-${DAYS_BIG}d"
        bronze_data "$OUT/data-bronze-$big" "$ROWS_BIG" "$DAYS_BIG" "$START_BIG" 0
        run_set "$big csv" "$EVENTS_FILE" "$ROWS_BIG" "$base csv"
        bronze_data "$OUT/data-bronze-$big-gz" "$ROWS_BIG" "$DAYS_BIG" "$START_BIG" 1
        run_set "$big csv.gz" "$EVENTS_FILE" "$ROWS_BIG" "$base csv.gz"
    fi

    step "throughput and peak memory"
    "$PY" "$JOB" table --summary "$SUMMARY"

    if [[ "$CHECK_STATUS" != 0 ]]; then
        step "FAILED: the two tools' results differ (see above)"
    else
        step "done: correctness passed (speed and memory targets are informational)"
    fi
    return "$CHECK_STATUS"
}

tee_output bronze-last-run.txt main
