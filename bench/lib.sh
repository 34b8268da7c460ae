# shellcheck shell=bash
# shellcheck disable=SC2034 # the settings below are used by the scripts that source this file
#
# lib.sh — what the benchmark scripts of bench/ share. Each of them sources it after
# `set -euo pipefail`, parses its own options, and calls these:
#
#   usage                         prints the running script's header comment (its --help)
#   usage_error TEXT              prints TEXT on stderr and exits with status 2
#   positive_int OPTION VALUE     exits with status 2 unless VALUE is a positive integer
#   step TEXT                     prints a section title
#   rel PATH                      PATH relative to the repository
#   tee_output FILE CMD...        runs CMD, its output shown and copied to $OUT/FILE
#   venv_with PKG==VERSION...     creates or completes the benchmarks' venv with these pins
#   release_bin SKIP_BUILD [FEATURES]  sets BIN and BIN_SHA: the release streamcube binary
#   machine_and_versions TOOLS    prints the machine, TOOLS and streamcube's version
#   py_versions [PKG...]          "python X, PKG V, ...", as $PY sees them
#   measure LABEL JSON CMD...     runs CMD, prints and records its wall time and peak RSS
#   generate DIR KEY=VALUE...     `streamcube generate`, unless DIR holds the same generation
#   is_complete DIR PARAMS FILE...  whether DIR holds FILE... of a finished run with PARAMS
#   file_sizes FILE...            prints each file's size in MiB
#   rows_label N                  1000000 -> 1m, 100000 -> 100k (names of data sets)
#   bronze_data DIR ROWS DAYS START GZIP  the bronze benchmarks' generated events
#   warn_if_future START DAYS TEXT...  a warning when the data reaches past today
#   timed_consolidations NAME DIR  timed consolidations of copies of a data directory

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
OUT="$HERE/out"
# The venv every benchmark installs its pinned packages into (gitignored).
VENV="$HERE/.venv"
PY="$VENV/bin/python"
# `measure` lives in cube_vs_duckdb.py.
MEASURE="$HERE/cube_vs_duckdb.py"
SEED=42
# The bronze benchmarks' data sets have one bad row per this many rows.
BAD_EVERY=1000
# One pinned DuckDB for every benchmark that compares with it.
DUCKDB_VERSION="1.5.6"
# The bronze benchmarks' Python job (bronze_pandas.py, and bronze_boto3.py on the emulator).
PANDAS_VERSION="2.3.3"
NUMPY_VERSION="2.3.5"
XXHASH_VERSION="4.1.0"
# boto3 for bronze_boto3.py, the bronze job as a Python Lambda would write it.
BOTO3_VERSION="1.44.8"

usage() { sed -n '2,/^$/s/^# \{0,1\}//p' "${BASH_SOURCE[-1]}"; }

usage_error() {
    echo "$*" >&2
    exit 2
}

positive_int() {
    [[ "$2" =~ ^[1-9][0-9]*$ ]] || usage_error "$1 must be a positive integer"
}

step() { printf '\n==> %s\n' "$*"; }

rel() { echo "${1#"$ROOT"/}"; }

# tee_output FILE CMD...: the status is CMD's.
tee_output() {
    local log="$OUT/$1"
    shift
    mkdir -p "$OUT"
    "$@" 2>&1 | tee "$log"
    return "${PIPESTATUS[0]}"
}

# venv_with PKG==VERSION...: nothing to do when each package is installed in $VENV at its
# version; otherwise creates the venv if there is none and pip installs the pins into it.
venv_with() {
    local check='import sys
from importlib.metadata import version
sys.exit(any(version(n) != v for n, v in (a.split("==", 1) for a in sys.argv[1:])))'
    if [[ -x "$PY" ]] && "$PY" -c "$check" "$@" 2>/dev/null; then
        return 0
    fi
    if [[ -x "$PY" ]]; then
        step "installing $* in $(rel "$VENV")"
    else
        step "creating $(rel "$VENV") with $*"
        python3 -m venv "$VENV"
    fi
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "$@"
}

# release_bin SKIP_BUILD [FEATURES]: BIN is $STREAMCUBE_BIN when set; otherwise streamcube is
# built in release with FEATURES (unless SKIP_BUILD is 1) and BIN is the one in cargo's target
# directory. BIN_SHA is the start of the binary's sha256.
release_bin() {
    if [[ -n "${STREAMCUBE_BIN:-}" ]]; then
        BIN="$STREAMCUBE_BIN"
    else
        if [[ "$1" != 1 ]]; then
            local features=()
            if [[ -n "${2:-}" ]]; then features=(--features "$2"); fi
            step "cargo build --release --locked --bin streamcube ${features[*]}"
            (cd "$ROOT" && cargo build --release --locked --bin streamcube "${features[@]}")
        fi
        local target_dir
        target_dir="$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps |
            python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
        BIN="$target_dir/release/streamcube"
    fi
    [[ -x "$BIN" ]] || { echo "no streamcube binary at $BIN" >&2; return 1; }
    BIN_SHA="$(sha256sum "$BIN" | cut -c1-16)"
}

# machine_and_versions TOOLS: TOOLS names what the benchmark runs besides streamcube.
machine_and_versions() {
    step "machine and versions"
    echo "  $(nproc) cores, $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)," \
        "$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)"
    echo "  $1, $("$BIN" --version 2>/dev/null || echo "streamcube (version unknown)")" \
        "(binary $BIN_SHA)"
    echo "  load average: $(cut -d' ' -f1-3 /proc/loadavg)" \
        "(the figures are only comparable on a quiet machine)"
}

py_versions() {
    "$PY" -c 'import sys
from importlib.metadata import version
names = [f"python {sys.version.split()[0]}"] + [f"{n} {version(n)}" for n in sys.argv[1:]]
print(", ".join(names))' "$@"
}

measure() {
    local label="$1" json="$2"
    shift 2
    "$PY" "$MEASURE" measure --label "$label" --json "$json" ${MEASURE_MARK:+--mark "$MEASURE_MARK"} -- "$@"
}

# generate DIR KEY=VALUE...: writes DIR/events.csv (events.csv.gz with gzip=1) and
# DIR/catalog.csv with `streamcube generate`, each pair giving an option (events=N, days=N,
# start=DATE, seed=N, bad_rows=N, gzip=0|1), unless an earlier complete generation of the same
# pairs is there. Sets EVENTS_FILE to the events file.
generate() {
    local dir="$1"
    shift
    local params="$*" args=() pair key name=events.csv
    for pair in "$@"; do
        key="${pair%%=*}"
        case "$pair" in
            gzip=1) args+=(--gzip); name=events.csv.gz ;;
            gzip=0) ;;
            *) args+=("--${key//_/-}" "${pair#*=}") ;;
        esac
    done
    EVENTS_FILE="$dir/$name"
    if is_complete "$dir" "$params" "$name" catalog.csv; then
        echo "using existing data in $(rel "$dir") ($params)"
        return
    fi
    step "generating $(rel "$dir"): $params"
    rm -rf "$dir"
    mkdir -p "$dir"
    local started=$SECONDS
    "$BIN" generate "${args[@]}" --out-dir "$dir"
    echo "generated in $((SECONDS - started)) s"
    echo "$params" >"$dir/.complete"
}

is_complete() {
    local dir="$1" params="$2" f
    shift 2
    for f in "$@"; do
        [[ -f "$dir/$f" ]] || return 1
    done
    [[ "$(cat "$dir/.complete" 2>/dev/null)" == "$params" ]]
}

file_sizes() {
    local f
    for f in "$@"; do
        awk -v f="$(basename "$f")" -v b="$(stat -c %s "$f")" \
            'BEGIN { printf "  %-14s %8.1f MiB\n", f, b / 1048576 }'
    done
}

# warn_if_future START DAYS TEXT...: streamcube rejects events from the future (by the wall
# clock), so data from START over DAYS days that reaches past today is worth a warning; TEXT
# says what that does to the benchmark.
warn_if_future() {
    local end today
    end="$(date -u -d "$1 + $2 days" +%F)"
    today="$(date -u +%F)"
    if [[ "$end" > "$today" ]]; then
        echo "  WARNING: the data runs until $end but today is $today: ${*:3}"
    fi
}

rows_label() {
    local n="$1"
    if ((n % 1000000 == 0)); then
        echo "$((n / 1000000))m"
    elif ((n % 1000 == 0)); then
        echo "$((n / 1000))k"
    else
        echo "$n"
    fi
}

# bronze_data DIR ROWS DAYS START GZIP: DIR/events.csv (or events.csv.gz with GZIP=1) of ROWS
# rows from START over DAYS days, every BAD_EVERY-th of them bad. Sets EVENTS_FILE.
bronze_data() {
    local dir="$1" rows="$2" days="$3" start="$4" gz="$5"
    local bad=$((rows / BAD_EVERY))
    generate "$dir" events=$((rows - bad)) bad_rows="$bad" days="$days" start="$start" \
        seed="$SEED" gzip="$gz"
    file_sizes "$EVENTS_FILE"
    warn_if_future "$start" "$days" "the events after now are rejected as being in the future" \
        "(by every tool run on them, so comparisons hold, but the accepted counts shrink)."
}

# timed_consolidations NAME SRC_DIR: $RUNS timed `streamcube consolidate` runs, each of a fresh
# copy of the data directory SRC_DIR; records runs in $RES/NAME-runN.json and the cells of the
# last one in $RES/NAME-cells.json (with consolidate.py, $HELPER).
timed_consolidations() {
    local name="$1" src="$2" work="$OUT/consolidate-work" i
    for ((i = 1; i <= RUNS; i++)); do
        rm -rf "$work"
        cp -a "$src" "$work"
        rm -f "$work/.complete"
        cat "$work/streamcube.db"* >/dev/null # the page cache as right after an ingest
        # The pipeline logs "day published" once the day's new generation is live in gold
        # and its exports are in the lake; what follows is the acknowledgement of the hours.
        MEASURE_MARK="day published" measure "streamcube consolidate, $name (run $i)" \
            "$RES/$name-run$i.json" \
            env RUST_LOG=streamcube_pipeline::consolidate=info "$BIN" --data-dir "$work" consolidate
    done
    "$PY" "$HELPER" cells --db "$work/streamcube.db" --json "$RES/$name-cells.json"
    local exports
    exports="$(du -sk "$work/lake" | cut -f1)"
    echo "  lake exports: $((exports / 1024)) MiB; data directory: $(du -sm "$work" | cut -f1) MiB"
    rm -rf "$work"
}
