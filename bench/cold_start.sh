#!/usr/bin/env bash
# cold_start.sh — cold start and deployment size of each Lambda function (release build).
#
# What it measures: each function binary (cargo build --release, the workspace's
# release profile, with the `embedded` feature) is started --runs times as a new
# Lambda execution environment
# would start it: a fresh process under a local Lambda Runtime API (cold_start.py,
# the 2018-06-01 API Lambda serves to custom runtimes), on the embedded backend
# (the local run; on AWS the same start connects SDK clients instead of opening
# SQLite). The time is from spawning the process to the function having posted its
# answer to its first invocation, which is the function's sample event from
# events/ doing its real work on a small store (a copy of a prepared data directory
# per run, made before the clock starts):
#   ingest-api         http-post-events.json       stores 2 new events, rejects 1
#   cube-query         http-get-cube.json          a query over the stored events
#   bronze-processor   s3-put-events-csv.json      two CSV objects into silver
#   cube-consolidator  schedule-consolidate.json   its scheduled run: 2 pending days published
#   stream-marker      dynamodb-stream-silver.json cube-consolidator's binary as the template's
#                                                  stream-marker: 4 records' hours marked; and
#                                                  batches of 45 records (the cost model's mean)
#                                                  and 1,000 (BatchSize: a bronze file's rows),
#                                                  made by `cold_start.py stream-batch`
#   kafka-ingest       msk-events.json             an MSK batch with 2 poison records
#   erasure            http-delete-viewer.json     erases a viewer, recomputes, vacuums
# It prints the p50 time to the function's first `invocation/next` (init) and to
# its first answer, the slowest first answer, the p50 of the invocation itself (work:
# answer - init), and the peak RSS; then each
# function's deployment zip (one `bootstrap`, deflate level 9) and its size, from
# the deployment build (default features, what `sam build` ships: no embedded
# backend), which the script builds first and keeps in bench/out/cold-start-deploy/.
# Targets, printed MET/MISS (informational): first answer p50 under 50 ms, zip
# under 10 MB. The exit status is non-zero when a function fails to answer its
# event as expected (never for speed or size).
#
# Usage:  bench/cold_start.sh [--runs N] [--skip-build]
#   --runs N       cold starts per function (default 20)
#   --skip-build   use the function binaries already built: target/release (local
#                  build) and bench/out/cold-start-deploy/ (deployment build)
# CARGO_BUILD_JOBS limits the build's parallelism as usual.
#
# Needs python3 (standard library only) and cargo. Results go to
# bench/out/results-cold-start/ (the zips in bench/out/results-cold-start/zips/),
# and bench/out/cold-start-last-run.txt is a copy of the output.

set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

HELPER="$HERE/cold_start.py"
FUNCTIONS=(ingest-api cube-query bronze-processor cube-consolidator kafka-ingest erasure)
export STREAMCUBE_BACKEND=embedded
export STREAMCUBE_PSEUDONYM_KEY="5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed"
# Logs at the level a deployment uses; no ANSI colours in the log files.
export RUST_LOG=info NO_COLOR=1

RUNS=20
SKIP_BUILD=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --runs) RUNS="${2:?--runs needs a number}"; shift ;;
        --skip-build) SKIP_BUILD=1 ;;
        -h | --help) usage; exit 0 ;;
        *) usage_error "unknown option: $1 (see --help)" ;;
    esac
    shift
done
positive_int --runs "$RUNS"

RES="$OUT/results-cold-start"

# once BIN EVENT DATA_DIR: one untimed invocation, to prepare a data directory.
once() {
    STREAMCUBE_DATA_DIR="$3" python3 "$HELPER" run --bin "$TARGET/$1" \
        --event "$ROOT/events/$2" --label "prepare-$1" --runs 1 --work "$RES/work" \
        >/dev/null
}

# timed FUNCTION EVENT SEED [EXPECTED_HTTP_STATUS]
timed() {
    local expect=()
    [[ $# -ge 4 ]] && expect=(--expect-status "$4")
    python3 "$HELPER" run --bin "$TARGET/$1" --event "$ROOT/events/$2" --label "$1" \
        --runs "$RUNS" --seed-dir "$3" --work "$RES/work" --json "$RES/$1.json" "${expect[@]}"
}

# stream_batch LABEL EVENT_PATH SEED: cube-consolidator's binary as stream-marker, on a stream
# batch whose every record must be marked (an empty partial batch response).
stream_batch() {
    python3 "$HELPER" run --bin "$TARGET/cube-consolidator" --event "$2" --label "$1" \
        --runs "$RUNS" --seed-dir "$3" --work "$RES/work" --json "$RES/$1.json" \
        --expect-no-failures
}

main() {
    rm -rf "$RES"
    mkdir -p "$RES/work"
    TARGET="$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')/release"
    DEPLOY="$OUT/cold-start-deploy"
    if [[ "$SKIP_BUILD" != 1 ]]; then
        local packages=() local_features=() f
        for f in "${FUNCTIONS[@]}"; do
            packages+=(-p "$f")
            local_features+=("$f/embedded")
        done
        # What `sam build` / `cargo lambda build --release` ship: default features, AWS
        # backend only. Kept aside, because the local build below overwrites target/release.
        step "cargo build --release --locked ${packages[*]}  (deployment build)"
        (cd "$ROOT" && cargo build --release --locked "${packages[@]}")
        mkdir -p "$DEPLOY"
        for f in "${FUNCTIONS[@]}"; do cp "$TARGET/$f" "$DEPLOY/$f"; done
        # The same functions with the embedded backend, to start them without AWS.
        step "cargo build --release --locked ${packages[*]} --features embedded  (local build)"
        (cd "$ROOT" && IFS=, && cargo build --release --locked "${packages[@]}" \
            --features "${local_features[*]}")
    fi
    for f in "${FUNCTIONS[@]}"; do
        [[ -x "$TARGET/$f" ]] || { echo "no release binary at $TARGET/$f" >&2; return 1; }
        [[ -x "$DEPLOY/$f" ]] || { echo "no deployment binary at $DEPLOY/$f" >&2; return 1; }
    done
    BIN="$TARGET/ingest-api"
    BIN_SHA="$(cat "${FUNCTIONS[@]/#/$TARGET/}" | sha256sum | cut -c1-16)"
    machine_and_versions "$(python3 --version)"
    grep -A6 '^\[profile.release\]' "$ROOT/Cargo.toml" | sed -n 's/^\([a-z-]* = .*\)$/  profile.release: \1/p'

    step "preparing the data directories (not timed)"
    # empty: the schema, the key and the bronze objects of the S3 sample; pending: the same
    # with the sample events stored (their hours pending); loaded: those days consolidated.
    local empty="$RES/seed-empty" pending="$RES/seed-pending" loaded="$RES/seed-loaded"
    mkdir -p "$empty"
    once ingest-api http-get-health.json "$empty"
    mkdir -p "$empty/bronze"
    cp -r "$ROOT/functions/bronze-processor/tests/objects/." "$empty/bronze/"
    cp -r "$empty" "$pending"
    once ingest-api http-post-events.json "$pending"
    cp -r "$pending" "$loaded"
    once cube-consolidator schedule-consolidate.json "$loaded"
    echo "  $(rel "$empty"), $(rel "$pending"), $(rel "$loaded")"

    step "cold start to the first answer, $RUNS runs per function"
    timed ingest-api http-post-events.json "$empty" 200
    timed cube-query http-get-cube.json "$loaded" 200
    timed bronze-processor s3-put-events-csv.json "$empty"
    timed cube-consolidator schedule-consolidate.json "$pending"
    local sample="$ROOT/events/dynamodb-stream-silver.json"
    stream_batch stream-marker "$sample" "$pending"
    python3 "$HELPER" stream-batch --sample "$sample" --records 45 --hours 1 --out "$RES/stream-45.json"
    python3 "$HELPER" stream-batch --sample "$sample" --records 1000 --hours 2 --out "$RES/stream-1000.json"
    stream_batch stream-marker-45 "$RES/stream-45.json" "$pending"
    stream_batch stream-marker-1000 "$RES/stream-1000.json" "$pending"
    timed kafka-ingest msk-events.json "$empty"
    timed erasure http-delete-viewer.json "$loaded" 200

    step "deployment zips (the deployment build: default features, no embedded backend)"
    for f in "${FUNCTIONS[@]}"; do
        python3 "$HELPER" zip --bin "$DEPLOY/$f" --out "$RES/zips/$f.zip" \
            --json "$RES/$f.zip.json"
    done
}

tee_output cold-start-last-run.txt main
