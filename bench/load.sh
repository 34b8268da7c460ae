#!/usr/bin/env bash
# Load test of `streamcube serve` on the embedded backend (SQLite in WAL mode and a local
# directory), on 127.0.0.1.
#
# Builds `streamcube` and `streamcube-load` in release, starts the server on a free port with a
# fresh data directory, sends EVENTS events in batches of 500 over CONNECTIONS keep-alive
# connections (DUPLICATE_RATE of them resent on purpose), stops the server, then checks with the
# CLI that nothing was lost or counted twice: silver holds each unique event once, and after
# `streamcube consolidate` the cube's totals (plays, watch time, completions, buffering, bitrate)
# equal the sums over the unique events sent.
#
#   bench/load.sh                          1,000,000 events over 4 connections
#   EVENTS=200000 CONNECTIONS=2 bench/load.sh
#
# Settings (environment):
#   EVENTS          events to send, resends included            (1000000)
#   CONNECTIONS     concurrent connections                       (4)
#   DUPLICATE_RATE  share of the events that are resends         (0.02)
#   FORMAT          ndjson | json                                (ndjson)
#   IDS             uuid (random, as apps make them) | sequential (uuid)
#   DURATION        no batch is started after this many seconds  (120)
#   TIMEOUT         the generator is killed after this many s    (300)
#   TARGET_RATE     accepted events/s the run is compared with   (50000)
#   KEEP=1          keep the data directory and the logs
#
# Exit status: 0 when every check holds; 1 on a lost or double-counted event, a non-200 answer
# or a failed step. Falling short of TARGET_RATE is reported, not an error: the rate depends on
# the machine.
set -euo pipefail

cd "$(dirname "$0")/.."
EVENTS=${EVENTS:-1000000}
CONNECTIONS=${CONNECTIONS:-4}
DUPLICATE_RATE=${DUPLICATE_RATE:-0.02}
FORMAT=${FORMAT:-ndjson}
IDS=${IDS:-uuid}
DURATION=${DURATION:-120}
TIMEOUT=${TIMEOUT:-300}
TARGET_RATE=${TARGET_RATE:-50000}
TARGET_DIR=${CARGO_TARGET_DIR:-target}

command -v python3 >/dev/null || { echo "load.sh needs python3" >&2; exit 1; }

echo "== building streamcube and streamcube-load (release)"
cargo build --release --locked -p streamcube -p streamcube-load
BIN="$TARGET_DIR/release/streamcube"
LOAD="$TARGET_DIR/release/streamcube-load"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/streamcube-load.XXXXXX")
export STREAMCUBE_DATA_DIR="$WORK/data"
# A fixed key (hex, 32 bytes): pseudonyms are comparable between runs.
export STREAMCUBE_PSEUDONYM_KEY=6c6f61642d746573742d6b65792d6f662d33322d62797465732d6c6f6e672121
unset STREAMCUBE_BACKEND STREAMCUBE_SERVED_COUNTRIES STREAMCUBE_CUBOIDS
export RUST_LOG=${RUST_LOG:-warn}

SERVER_PID=
cleanup() {
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    if [[ "${KEEP:-0}" == 1 ]]; then
        echo "kept $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

# The server, under GNU time when there is one (peak RSS and CPU time). `time` does not pass
# signals on, so the server itself is the process stopped at the end.
TIME_V=
[[ -x /usr/bin/time ]] && /usr/bin/time -v true >/dev/null 2>&1 && TIME_V=1
echo "== starting streamcube serve (data in $STREAMCUBE_DATA_DIR)"
if [[ -n "$TIME_V" ]]; then
    /usr/bin/time -v -o "$WORK/server.time" \
        "$BIN" serve --addr 127.0.0.1:0 --dashboard "$WORK/no-dashboard" \
        >"$WORK/server.out" 2>"$WORK/server.err" &
    TIME_PID=$!
else
    "$BIN" serve --addr 127.0.0.1:0 --dashboard "$WORK/no-dashboard" \
        >"$WORK/server.out" 2>"$WORK/server.err" &
    TIME_PID=
    SERVER_PID=$!
fi

# The server prints its address (port 0: the kernel's free port) on its first line.
ADDR=
for _ in $(seq 1 300); do
    if [[ -n "$TIME_PID" && -z "$SERVER_PID" ]]; then
        SERVER_PID=$(ps -o pid= --ppid "$TIME_PID" | tr -d ' ' | head -n1 || true)
    fi
    ADDR=$(sed -n 's#^serving on http://##p' "$WORK/server.out" 2>/dev/null | head -n1)
    if [[ -n "$ADDR" && -n "$SERVER_PID" ]] \
        && curl -sf "http://$ADDR/v1/health" >/dev/null 2>&1; then
        break
    fi
    ADDR=
    sleep 0.1
done
if [[ -z "$ADDR" ]]; then
    echo "the server did not answer /v1/health:" >&2
    cat "$WORK/server.err" >&2
    exit 1
fi
echo "   http://$ADDR (pid $SERVER_PID)"

echo "== sending $EVENTS events over $CONNECTIONS connections"
CPU0=$(awk '{print $14 + $15}' "/proc/$SERVER_PID/stat")
LOAD_RC=0
LOAD_CMD=(timeout "$TIMEOUT" "$LOAD" --addr "$ADDR" --events "$EVENTS"
    --connections "$CONNECTIONS" --duplicate-rate "$DUPLICATE_RATE" --format "$FORMAT"
    --ids "$IDS" --duration "$DURATION" --json "$WORK/load.json")
if [[ -n "$TIME_V" ]]; then
    /usr/bin/time -f "%U %S" -o "$WORK/load.time" "${LOAD_CMD[@]}" || LOAD_RC=$?
else
    "${LOAD_CMD[@]}" || LOAD_RC=$?
fi
CPU1=$(awk '{print $14 + $15}' "/proc/$SERVER_PID/stat")
HWM_KB=$(awk '/^VmHWM/ {print $2}' "/proc/$SERVER_PID/status")

# SIGINT: a graceful shutdown.
kill -INT "$SERVER_PID"
for _ in $(seq 1 100); do
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.1
done
if kill -0 "$SERVER_PID" 2>/dev/null; then
    echo "the server did not stop on SIGINT; killing it" >&2
    kill -KILL "$SERVER_PID" || true
fi
[[ -n "$TIME_PID" ]] && { wait "$TIME_PID" || true; }
SERVER_PID=

if [[ ! -s "$WORK/load.json" ]]; then
    echo "the generator wrote no summary (exit status $LOAD_RC)" >&2
    exit 1
fi
DAY=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["day"])' "$WORK/load.json")

echo "== streamcube consolidate"
CONS_START=$(date +%s.%N)
"$BIN" consolidate
CONS_END=$(date +%s.%N)
"$BIN" query --from "$DAY" --to "$DAY" --granularity total --format json >"$WORK/query.json"

DB="$STREAMCUBE_DATA_DIR/streamcube.db"
if command -v sqlite3 >/dev/null; then
    SILVER=$(sqlite3 "$DB" 'SELECT count(*) FROM silver_events')
    SILVER_IDS=$(sqlite3 "$DB" 'SELECT count(DISTINCT event_id) FROM silver_events')
else
    SILVER=$(python3 -c 'import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute("SELECT count(*) FROM silver_events").fetchone()[0])' "$DB")
    SILVER_IDS=$SILVER
fi

python3 - "$WORK" "$SILVER" "$SILVER_IDS" "$LOAD_RC" "${HWM_KB:-0}" "$CPU0" "$CPU1" \
    "$(getconf CLK_TCK)" "$CONS_START" "$CONS_END" "$TARGET_RATE" "$(nproc)" <<'EOF'
import json, os, re, sys

(work, silver, silver_ids, load_rc, hwm_kb, cpu0, cpu1, tck,
 cons_start, cons_end, target, cores) = sys.argv[1:]
load = json.load(open(os.path.join(work, "load.json")))
query = json.load(open(os.path.join(work, "query.json")))
rows = query["rows"]
cube = dict(zip(query["columns"], rows[0])) if rows else {}

peak_rss_kb = int(hwm_kb)
timefile = os.path.join(work, "server.time")
if os.path.exists(timefile):
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", open(timefile).read())
    if m:
        peak_rss_kb = int(m.group(1))
server_cpu = (int(cpu1) - int(cpu0)) / int(tck)
load_cpu = None
loadtime = os.path.join(work, "load.time")
if os.path.exists(loadtime):
    try:
        user, sys_ = open(loadtime).read().split()[-2:]
        load_cpu = float(user) + float(sys_)
    except ValueError:
        pass
lat = load["latency_ms"]
unique = load["unique_events"]
exp = load["totals"]

checks = [
    ("every answer 200", load["non_200"] == 0 and load["transport_errors"] == 0,
     f'{load["statuses"]}, {load["transport_errors"]} without answer'),
    ("answers add up per batch", load["inconsistent_answers"] == 0 and load["rejected"] == 0,
     f'{load["inconsistent_answers"]} inconsistent, {load["rejected"]} rejected'),
    ("accepted == unique sent", load["accepted"] == unique, f'{load["accepted"]:,} vs {unique:,}'),
    ("accepted + duplicates == sent", load["accepted"] + load["duplicates"] == load["events_sent"],
     f'{load["accepted"] + load["duplicates"]:,} vs {load["events_sent"]:,}'),
    ("silver rows == unique sent", int(silver) == unique and int(silver_ids) == unique,
     f"{int(silver):,} rows, {int(silver_ids):,} ids"),
]
for m in ["plays", "watch_seconds", "completed", "buffering_ms", "bitrate_sum", "bitrate_count"]:
    got = cube.get(m)
    checks.append((f"cube {m} == sent", got == exp[m],
                   f"{got:,} vs {exp[m]:,}" if isinstance(got, int) else f"{got} vs {exp[m]:,}"))
checks.append(("generator exit status 0", load_rc == "0", load_rc))

rate = load["accepted_per_s"]
figures = [
    ("events sent", f'{load["events_sent"]:,} in {load["batches"]:,} batches of {load["batch_size"]} ({load["format"]}, {load["ids"]} ids)'),
    ("unique / duplicates sent", f'{unique:,} / {load["duplicates_sent"]:,}'),
    ("connections", f'{load["connections"]} (machine: {cores} cores, generator and server on it)'),
    ("elapsed", f'{load["elapsed_s"]:.2f} s'),
    ("accepted per second", f"{rate:,.0f} (target {int(target):,}: {'met' if rate >= int(target) else 'NOT met'})"),
    ("duplicates reported", f'{load["duplicates"]:,}'),
    ("latency per request", f'p50 {lat["p50"]:.1f} ms, p90 {lat["p90"]:.1f} ms, p99 {lat["p99"]:.1f} ms, max {lat["max"]:.1f} ms'),
    ("server CPU during the run", f'{server_cpu:.1f} s ({server_cpu / max(load["elapsed_s"], 1e-9):.2f} cores, {1e6 * server_cpu / max(load["events_sent"], 1):.1f} µs per event sent)'),
    ("generator CPU", "n/a" if load_cpu is None else f"{load_cpu:.1f} s (payloads generated beforehand in {load['generation_s']:.1f} s)"),
    ("server peak RSS", f"{peak_rss_kb / 1024:,.0f} MiB"),
    ("consolidate afterwards", f"{float(cons_end) - float(cons_start):.1f} s"),
]
width = max(len(k) for k, _ in figures + [(c[0], 0) for c in checks])
print()
print("streamcube serve under load".center(width + 40))
for k, v in figures:
    print(f"  {k:<{width}}  {v}")
print()
ok = True
for name, passed, detail in checks:
    ok &= bool(passed)
    print(f"  {name:<{width}}  {'ok    ' if passed else 'FAILED'}  {detail}")
if load.get("first_problem"):
    print(f"  first problem: {load['first_problem']}")
print()
print("result: " + ("ok" if ok else "FAILED"))
sys.exit(0 if ok else 1)
EOF
