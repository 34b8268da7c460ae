#!/usr/bin/env bash
# bronze_aws.sh — bronze processing through the AWS adapters, on the local AWS emulator:
# `streamcube --backend aws ingest FILE` (the bronze-processor's code path: the file is put in
# the bronze bucket, read back from S3 as a stream, validated, pseudonymized, deduplicated
# against silver with BatchGetItem and written with BatchWriteItem, its report and quarantine
# put in the lake bucket), next to `streamcube ingest FILE` on the embedded backend, in the
# same run, and the same job as a Python Lambda would do it (bench/bronze_boto3.py: the file put
# in the bronze bucket and read back, the pandas job of bronze_pandas.py, boto3's BatchGetItem
# and BatchWriteItem into a silver table of its own, the same items).
#
# What it measures, on the same generated files as bench/bronze_vs_pandas.sh (seed 42: 0.5%
# duplicates, 0.1% bad rows), plain CSV and gzip:
#   * wall time, rows/s, peak RSS and own (anonymous) memory of each streamcube run, and the
#     CPU seconds the emulator (moto_server, a Python process) spent serving the AWS run: on
#     this machine the emulator, not streamcube, sets the pace, so the AWS figures are a floor
#     for the adapters, not what DynamoDB and S3 would give;
#   * with --rows-small N, also a smaller file first, to show that peak memory does not grow
#     with the file (files are streamed, writes bounded);
#   * the same for the boto3 job, whose CPU is the Python process's: the ratio of the two
#     client CPUs is what the emulator does not hide (Lambda bills the function's time);
#   * correctness, for every data set: the AWS run's report (read back from the lake bucket)
#     has the embedded run's counts (rows, accepted, duplicates, rejected, per reason), and the
#     silver table holds exactly `accepted` items; the boto3 job's report and table likewise,
#     and 200 sampled items identical to those streamcube wrote.
# The exit status is non-zero when correctness fails (never for speed or memory).
#
# Usage:  bench/bronze_aws.sh [--rows N] [--rows-small N] [--runs N] [--skip-build]
#   --rows N        rows of the data sets (default 1,000,000)
#   --rows-small N  also data sets of N rows, run first (default 100,000; 0: none)
#   --runs N        timed runs per backend and data set, best wall time reported (default 1)
#   --format F      csv, gzip or both (default both)
#   --skip-build    use the streamcube binary already built in release with `--features aws`
# Environment: STREAMCUBE_BIN=/path/to/streamcube uses that binary (built with the aws
# feature) instead of building one; CARGO_TARGET_DIR applies to the build as usual.
#
# Needs python3 (with venv) and cargo. scripts/emulator.sh installs moto into .venv-emulator/
# (first run only), starts it on 127.0.0.1 and stops it at the end; each run uses its own
# tables, deleted after its check. Generated data is shared with bronze_vs_pandas.sh
# (bench/out/data-bronze-*/); results go to bench/out/results-bronze-aws/ and
# bench/out/bronze-aws-last-run.txt is a copy of the output.

set -euo pipefail
shopt -s inherit_errexit
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

HELPER="$HERE/bronze_aws.py"
BOTO3_JOB="$HERE/bronze_boto3.py"
RES="$OUT/results-bronze-aws"
SUMMARY="$RES/summary.jsonl"
# The same data sets as bronze_vs_pandas.sh: 7 days from a past day.
START="2026-11-01"
DAYS=7

ROWS=1000000
ROWS_SMALL=100000
RUNS=1
FORMAT=both
SKIP_BUILD=0

while [[ $# -gt 0 ]]; do
    case "$1" in
        --rows) ROWS="${2:?--rows needs a number}"; shift ;;
        --rows-small) ROWS_SMALL="${2:?--rows-small needs a number}"; shift ;;
        --runs) RUNS="${2:?--runs needs a number}"; shift ;;
        --format) FORMAT="${2:?--format needs csv, gzip or both}"; shift ;;
        --skip-build) SKIP_BUILD=1 ;;
        -h | --help) usage; exit 0 ;;
        *) usage_error "unknown option: $1 (see --help)" ;;
    esac
    shift
done
positive_int --rows "$ROWS"
positive_int --runs "$RUNS"
[[ "$ROWS_SMALL" == 0 ]] || positive_int --rows-small "$ROWS_SMALL"
[[ "$FORMAT" =~ ^(csv|gzip|both)$ ]] || usage_error "--format must be csv, gzip or both"
((ROWS >= BAD_EVERY)) || usage_error "--rows must be at least $BAD_EVERY"
((ROWS_SMALL == 0 || ROWS_SMALL >= BAD_EVERY)) ||
    usage_error "--rows-small must be 0 or at least $BAD_EVERY"

unset STREAMCUBE_BACKEND STREAMCUBE_DATA_DIR STREAMCUBE_PSEUDONYM_KEYRING \
    STREAMCUBE_PSEUDONYM_KEY_ID STREAMCUBE_SERVED_COUNTRIES STREAMCUBE_CUBOIDS \
    STREAMCUBE_PSEUDONYM_SECRET_ARN STREAMCUBE_RETENTION_DAYS
STREAMCUBE_PSEUDONYM_KEY="$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')"
export STREAMCUBE_PSEUDONYM_KEY

# cpu_of PID: user + system CPU seconds of a running process.
cpu_of() {
    awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat"
}

# provision_tables PREFIX: the stack's tables named after PREFIX, created, and added to `tables`.
provision_tables() {
    export STREAMCUBE_SILVER_TABLE="$1-silver" STREAMCUBE_CUBE_TABLE="$1-cube" \
        STREAMCUBE_CATALOG_TABLE="$1-catalog"
    tables+=("$STREAMCUBE_SILVER_TABLE" "$STREAMCUBE_CUBE_TABLE" "$STREAMCUBE_CATALOG_TABLE")
    "$BIN" provision >/dev/null
}

# on_emulator LABEL JSON CMD...: `measure`s CMD; EMU_CPU is the emulator's CPU seconds meanwhile.
on_emulator() {
    local label="$1" json="$2" before after
    shift 2
    # shellcheck disable=SC2154 # moto_pid: the emulator's process, set by scripts/emulator.sh
    before="$(cpu_of "$moto_pid")"
    measure "$label" "$json" "$@" || return 1
    after="$(cpu_of "$moto_pid")"
    EMU_CPU="$(awk -v a="$before" -v b="$after" 'BEGIN { printf "%.2f", b - a }')"
}

# check_report KEY JSON WHO: the report at KEY in the lake bucket has the embedded run's counts and
# the current silver table holds exactly its accepted rows (uses `res` and `name` of run_set).
check_report() {
    "$PY" "$HELPER" check --embedded-report "$res/embedded-data/lake/reports/events/$name.json" \
        --lake-bucket "$STREAMCUBE_LAKE_BUCKET" --report-key "$1" \
        --silver-table "$STREAMCUBE_SILVER_TABLE" --json "$2" --who "$3"
}

# run_set LABEL FILE ROWS: both backends on FILE, then the check of the last AWS run.
run_set() {
    local label="$1" file="$2" rows="$3" name tag i res
    name="$(basename "$file")"
    tag="${label//[^a-z0-9]/-}"
    res="$RES/$tag"
    rm -rf "$res"
    mkdir -p "$res"
    cat "$file" >/dev/null # warm the page cache for both runs
    step "$label: $(printf "%'d" "$rows") rows, $RUNS run(s) per backend"
    local aws_runs=() boto3_runs=() emb_runs=() emu_cpu=0 py_emu_cpu=0 tables
    for ((i = 1; i <= RUNS; i++)); do
        rm -rf "$res/embedded-data"
        measure "embedded (run $i)" "$res/embedded-run$i.json" \
            "$BIN" --data-dir "$res/embedded-data" ingest "$file" >"$res/embedded-run$i.log" ||
            { cat "$res/embedded-run$i.log"; return 1; }
        emb_runs+=("$res/embedded-run$i.json")

        tables=()
        provision_tables "bench-$tag-$i"
        local ours="$STREAMCUBE_SILVER_TABLE"
        on_emulator "AWS adapters on the emulator (run $i)" "$res/aws-run$i.json" \
            "$BIN" --backend aws --data-dir "$res/aws-unused" ingest "$file" \
            >"$res/aws-run$i.log" || { cat "$res/aws-run$i.log"; return 1; }
        emu_cpu="$EMU_CPU"
        echo "    emulator CPU during the AWS run: $emu_cpu s"
        aws_runs+=("$res/aws-run$i.json")
        if ((i == RUNS)); then
            step "$label: correctness (AWS run $i against the embedded run)"
            check_report "reports/events/$name.json" "$res/check.json" AWS || CHECK_STATUS=1
        fi

        # The same job as a Python Lambda would do it, into tables of its own.
        provision_tables "bench-py-$tag-$i"
        on_emulator "boto3 job on the emulator (run $i)" "$res/boto3-run$i.json" \
            "$JOB_PY" "$BOTO3_JOB" ingest --bronze-bucket "$STREAMCUBE_BRONZE_BUCKET" \
            --lake-bucket "$STREAMCUBE_LAKE_BUCKET" --lake-prefix python/ \
            --silver-table "$STREAMCUBE_SILVER_TABLE" "$file" || return 1
        py_emu_cpu="$EMU_CPU"
        echo "    emulator CPU during the boto3 run: $py_emu_cpu s"
        boto3_runs+=("$res/boto3-run$i.json")
        if ((i == RUNS)); then
            step "$label: correctness (boto3 run $i against the embedded run and streamcube's items)"
            check_report "python/reports/events/$name.json" "$res/check-boto3.json" boto3 || CHECK_STATUS=1
            "$JOB_PY" "$BOTO3_JOB" same-items --table "$STREAMCUBE_SILVER_TABLE" \
                --streamcube-table "$ours" --embedded-db "$res/embedded-data/streamcube.db" ||
                CHECK_STATUS=1
        fi
        "$PY" "$HELPER" drop "${tables[@]}"
    done
    echo "{\"cpu_seconds\": $emu_cpu, \"boto3_cpu_seconds\": $py_emu_cpu}" >"$res/emulator-cpu.json"
    "$PY" "$HELPER" summary --label "$label" --rows "$rows" --aws "${aws_runs[@]}" \
        --boto3 "${boto3_runs[@]}" --embedded "${emb_runs[@]}" \
        --emulator-cpu "$res/emulator-cpu.json" --append "$SUMMARY"
}

main() {
    release_bin "$SKIP_BUILD" aws
    step "starting the AWS emulator"
    # shellcheck source=scripts/emulator.sh
    source "$ROOT/scripts/emulator.sh"
    export STREAMCUBE_BRONZE_BUCKET="$STREAMCUBE_TEST_BRONZE_BUCKET"
    export STREAMCUBE_LAKE_BUCKET="$STREAMCUBE_TEST_LAKE_BUCKET"
    export STREAMCUBE_GLUE_DATABASE=bench STREAMCUBE_GLUE_TABLE=cube
    # The Python job runs in the benchmarks' venv; the helpers with the emulator's (boto3;
    # `measure` needs only the standard library).
    venv_with "pandas==$PANDAS_VERSION" "numpy==$NUMPY_VERSION" "xxhash==$XXHASH_VERSION" \
        "boto3==$BOTO3_VERSION"
    JOB_PY="$PY"
    PY="$ROOT/.venv-emulator/bin/python"
    machine_and_versions "$(py_versions moto boto3) (the emulator); pandas $PANDAS_VERSION and boto3 $BOTO3_VERSION (the Python job)"

    CHECK_STATUS=0
    rm -rf "$RES"
    mkdir -p "$RES"
    local sizes=("$ROWS") rows name
    if ((ROWS_SMALL > 0)); then sizes=("$ROWS_SMALL" "$ROWS"); fi
    for rows in "${sizes[@]}"; do
        name="$(rows_label "$rows")"
        if [[ "$FORMAT" != gzip ]]; then
            bronze_data "$OUT/data-bronze-$name" "$rows" "$DAYS" "$START" 0
            run_set "$name csv" "$EVENTS_FILE" "$rows"
        fi
        if [[ "$FORMAT" != csv ]]; then
            bronze_data "$OUT/data-bronze-$name-gz" "$rows" "$DAYS" "$START" 1
            run_set "$name csv.gz" "$EVENTS_FILE" "$rows"
        fi
    done

    step "throughput and peak memory"
    "$PY" "$HELPER" table --summary "$SUMMARY"
    if [[ "$CHECK_STATUS" != 0 ]]; then
        step "FAILED: the AWS run's results differ from the embedded run's (see above)"
    else
        step "done: correctness passed (speed and memory are informational)"
    fi
    return "$CHECK_STATUS"
}

tee_output bronze-aws-last-run.txt main
