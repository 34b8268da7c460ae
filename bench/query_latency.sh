#!/usr/bin/env bash
# query_latency.sh — latency of `GET /v1/cube` from `streamcube serve` (embedded backend).
#
# What it measures: with a month of generated playback data (30 days from
# 2026-10-01, 3,000,000 events by default, seed 42) ingested and consolidated
# into a data directory, `streamcube serve` on 127.0.0.1 (a free port) answers
# the dashboard's usual queries, each sent 200 times after 10 warm-ups over one
# keep-alive HTTP/1.1 connection (Python's http.client), one request at a
# time; latency is from sending the request to having read the whole body:
#   trend          30-day daily trend of plays and unique viewers
#   top10          top 10 titles of one country (BR) over the last 7 days, by plays
#   breakdown      the last day grouped by country, device and genre (granularity day)
#   breakdown.csv  the same with Accept: text/csv
# It prints p50, p99 and max in milliseconds per query, and the server's peak
# RSS. Target, printed PASS/FAIL (informational): p99 < 50 ms for each query.
# The exit status is non-zero when an answer is not 200 with at least one row
# (never for speed).
#
# Usage:  bench/query_latency.sh [--events N] [--repeat N] [--warmup N]
#                                [--country CC] [--skip-build]
#   --events N     events in the month (default 3000000)
#   --repeat N     timed requests per query (default 200)
#   --warmup N     untimed requests per query first (default 10)
#   --country CC   the country of the top-10 query (default BR, the most frequent)
#   --skip-build   use the streamcube binary already built in release
# Environment: STREAMCUBE_BIN=/path/to/streamcube uses that binary instead of
# building one; CARGO_BUILD_JOBS limits the build's parallelism as usual.
#
# Needs python3 and cargo. Generated CSV files are kept in
# bench/out/data-month-N/ and the ingested and consolidated data directory in
# bench/out/store-month-N/, reused while the parameters and the streamcube
# binary are the same (building it is not timed). Results go to
# bench/out/results-query-latency/ and bench/out/query-latency-last-run.txt is
# a copy of the output. The server is stopped on exit, whatever happens.

set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

HELPER="$HERE/query_latency.py"
# 30 days that lie in the past (streamcube rejects events from the future).
START="2026-10-01"
DAYS=30
# A fixed pseudonymization key, so that the data directory does not depend on a random one.
export STREAMCUBE_PSEUDONYM_KEY="5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed"
export STREAMCUBE_BACKEND=embedded

EVENTS=3000000
REPEAT=200
WARMUP=10
COUNTRY=BR
SKIP_BUILD=0

while [[ $# -gt 0 ]]; do
    case "$1" in
        --events) EVENTS="${2:?--events needs a number}"; shift ;;
        --repeat) REPEAT="${2:?--repeat needs a number}"; shift ;;
        --warmup) WARMUP="${2:?--warmup needs a number}"; shift ;;
        --country) COUNTRY="${2:?--country needs an ISO code}"; shift ;;
        --skip-build) SKIP_BUILD=1 ;;
        -h | --help) usage; exit 0 ;;
        *) usage_error "unknown option: $1 (see --help)" ;;
    esac
    shift
done
positive_int --events "$EVENTS"
positive_int --repeat "$REPEAT"
[[ "$WARMUP" =~ ^[0-9]+$ ]] || usage_error "--warmup must be a whole number"
[[ "$COUNTRY" =~ ^[A-Z]{2}$ ]] || usage_error "--country must be an upper-case ISO code"

SERVER_PID=""
SERVER_LOG=""
stop_server() {
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -INT "$SERVER_PID" 2>/dev/null || true # graceful shutdown on Ctrl-C
        local i
        for ((i = 0; i < 50; i++)); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    SERVER_PID=""
}

setup() {
    release_bin "$SKIP_BUILD"
    # No venv: the helper needs only Python's standard library.
    machine_and_versions "$(python3 --version)"
}

# store DIR DATA: ingests and consolidates DATA into the data directory DIR,
# unless it holds the same input consolidated by the same binary.
store() {
    local dir="$1" data="$2" params
    params="$(cat "$data/.complete") cuboids=${STREAMCUBE_CUBOIDS:-default} bin=$BIN_SHA"
    if is_complete "$dir" "$params" streamcube.db; then
        echo "using the consolidated data in $(rel "$dir")"
        return
    fi
    step "ingesting and consolidating into $(rel "$dir") (not timed)"
    rm -rf "$dir"
    local started=$SECONDS
    "$BIN" --data-dir "$dir" ingest --catalog "$data/catalog.csv" "$data/events.csv"
    echo "ingested in $((SECONDS - started)) s"
    started=$SECONDS
    "$BIN" --data-dir "$dir" consolidate >"$dir/consolidate.txt"
    tail -n 3 "$dir/consolidate.txt"
    echo "consolidated $DAYS days in $((SECONDS - started)) s"
    echo "$params" >"$dir/.complete"
}

main() {
    trap stop_server EXIT
    trap 'exit 130' INT TERM
    setup
    local data="$OUT/data-month-$EVENTS" dir="$OUT/store-month-$EVENTS"
    local res="$OUT/results-query-latency"
    rm -rf "$res"
    mkdir -p "$res"
    generate "$data" events="$EVENTS" days="$DAYS" start="$START" seed="$SEED"
    store "$dir" "$data"
    echo "  data directory: $(du -sm "$dir" | cut -f1) MiB ($(du -sm "$dir/streamcube.db" | cut -f1) MiB streamcube.db)"

    step "starting streamcube serve on 127.0.0.1"
    SERVER_LOG="$res/server.log"
    # Port 0: the system picks a free port, and the server prints the address it got.
    "$BIN" --data-dir "$dir" serve --addr 127.0.0.1:0 --dashboard "$res/no-dashboard" \
        >"$SERVER_LOG" 2>&1 &
    SERVER_PID=$!
    local url="" i
    for ((i = 0; i < 100; i++)); do
        url="$(sed -n 's/^serving on \(http:\/\/[0-9.:]*\).*$/\1/p' "$SERVER_LOG" | head -n 1)"
        [[ -n "$url" ]] && break
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    if [[ -z "$url" ]]; then
        echo "the server did not start:" >&2
        cat "$SERVER_LOG" >&2
        return 1
    fi
    echo "  $url (pid $SERVER_PID)"

    step "queries: $REPEAT timed after $WARMUP warm-up each"
    local status=0
    python3 "$HELPER" run --url "$url" --start "$START" --days "$DAYS" --country "$COUNTRY" \
        --repeat "$REPEAT" --warmup "$WARMUP" --json "$res/latency.json" || status=$?
    if ((status == 130)); then
        return 130 # interrupted
    fi
    if kill -0 "$SERVER_PID" 2>/dev/null; then
        local cpu rss
        cpu="$(awk '{printf "%.2f", ($14 + $15) / '"$(getconf CLK_TCK)"'}' "/proc/$SERVER_PID/stat")"
        rss="$(awk '/VmHWM/ {printf "%.0f MiB", $2 / 1024}' "/proc/$SERVER_PID/status")"
        echo "  server: peak RSS $rss, cpu $cpu s (warm-ups included)"
    else
        echo "  the server is gone:" >&2
        tail -n 20 "$SERVER_LOG" >&2
        status=1
    fi
    stop_server
    if [[ "$status" != 0 ]]; then
        step "FAILED: some answers were not 200 with rows"
    else
        step "done: every answer was 200 with rows (latency targets are informational)"
    fi
    return "$status"
}

tee_output query-latency-last-run.txt main
