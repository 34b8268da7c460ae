#!/usr/bin/env python3
"""Helper of bench/cube_vs_duckdb.sh: measuring, DuckDB's cube, checks, report.

Run by the shell script with the benchmark's venv (bench/.venv, which has the
pinned duckdb). Subcommands:

  measure --label L --json OUT [--mark TEXT] -- CMD...
      Runs CMD, records its wall time and peak RSS (from wait4 on that one
      child, so earlier children do not count) into OUT, and fails if CMD does.
      With --mark, CMD's stderr passes through this process, and the seconds
      from the start to the last stderr line containing TEXT (for a command
      that logs it once per day, when the last day was done) are recorded as
      `mark_seconds` (null when no line contained it).

  duckdb-cube --events F... --catalog F --out F [--threads N] [--exact]
      Computes the cube with DuckDB: dedup by event_id, left join of the
      catalog (genre 'unknown' when missing), GROUP BY day, CUBE(country,
      device, genre, content_id), measures as streamcube's; unique_viewers is
      approx_count_distinct(viewer_id), or count(DISTINCT viewer_id) with
      --exact (the reference for the accuracy check).

  check --ours F --duckdb F --exact F
      Compares streamcube's cube CSV with DuckDB's: same cell set, identical
      exact measures, and unique_viewers error against the exact counts
      (streamcube's and, for reference, DuckDB's approx_count_distinct).
      Exit status 1 if correctness fails.

  report --streamcube JSON --duckdb JSON
      Prints the time / memory table and the speed and memory targets
      (informational: they never change the exit status).

  big-report --streamcube JSON --events N --days D
      Prints the 10M-event run's time and peak memory against its target.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.dont_write_bytecode = True  # no __pycache__ in bench/ for the import below
import benchlib  # noqa: E402
from benchlib import best_of, mib, read_csv_sql, verdict  # noqa: E402

# Targets (see bench/cube_vs_duckdb.sh).
TARGET_SPEEDUP = 5.0  # streamcube at least 5x faster than DuckDB
TARGET_MEMORY_RATIO = 3.0  # streamcube at most 1/3 of DuckDB's peak memory
TARGET_P99_REL = 0.025  # unique_viewers p99 relative error, cells >= 1000
TARGET_MAX_REL = 0.04  # unique_viewers max relative error, cells >= 1000
TARGET_MAX_ABS_SMALL = 3  # unique_viewers max absolute error, cells < 1000
BIG_CELL = 1000
TARGET_BIG_PEAK_BYTES = 4 * 1024**3

DIMENSIONS = ["day", "country", "device", "genre", "content_id"]
EXACT_MEASURES = [
    "plays",
    "watch_seconds",
    "completed",
    "buffering_ms",
    "bitrate_sum",
    "bitrate_count",
]
CUBE_COLUMNS = DIMENSIONS + EXACT_MEASURES + ["unique_viewers"]

CUBE_TYPES = {
    "day": "DATE",
    "country": "VARCHAR",
    "device": "VARCHAR",
    "genre": "VARCHAR",
    "content_id": "VARCHAR",
    **{m: "BIGINT" for m in EXACT_MEASURES},
    "unique_viewers": "BIGINT",
}


# --------------------------------------------------------------------------
# measure


class AnonSampler(threading.Thread):
    """Samples RssAnon of a process (/proc/PID/status) every 20 ms until it exits, keeping the
    peak: the memory the process allocated itself, as opposed to the file pages it maps (a
    memory-mapped SQLite file counts in the peak RSS up to the map's size, but is page cache).
    `timeline` keeps about one sample a second, [seconds since the start, bytes], to show how
    the memory moves over a run (flat, or growing with the data)."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.status = Path(f"/proc/{pid}/status")
        self.peak_anon_bytes = 0
        self.timeline: list[list[float]] = []

    def run(self) -> None:
        start = time.perf_counter()
        while True:
            try:
                text = self.status.read_text()
            except OSError:
                return
            for line in text.splitlines():
                if line.startswith("RssAnon:"):
                    kib = int(line.split()[1])
                    self.peak_anon_bytes = max(self.peak_anon_bytes, kib * 1024)
                    now = time.perf_counter() - start
                    if not self.timeline or now - self.timeline[-1][0] >= 1.0:
                        self.timeline.append([round(now, 2), kib * 1024])
            # A zombie (exited, not yet reaped) has no memory left: stop there.
            if "State:\tZ" in text:
                return
            time.sleep(0.02)


def watch_stderr(proc: subprocess.Popen, mark: str, start: float, marks: list[float]) -> None:
    """Copies the child's stderr to ours, noting when each line containing `mark` arrived."""
    needle = mark.encode()
    for line in proc.stderr:
        if needle in line:
            marks.append(time.perf_counter() - start)
        sys.stderr.buffer.write(line)
        sys.stderr.buffer.flush()


def cmd_measure(args: argparse.Namespace) -> int:
    cmd = args.cmd[1:] if args.cmd and args.cmd[0] == "--" else args.cmd
    if not cmd:
        sys.exit("measure: no command given")
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE if args.mark else None)
    sampler = AnonSampler(proc.pid)
    sampler.start()
    marks: list[float] = []
    watcher = None
    if args.mark:
        watcher = threading.Thread(target=watch_stderr, args=(proc, args.mark, start, marks))
        watcher.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    sampler.join()
    if watcher is not None:
        watcher.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    result = {
        "label": args.label,
        "command": cmd,
        "seconds": wall,
        "peak_rss_bytes": usage.ru_maxrss * 1024,  # Linux reports KiB
        # The process's own memory (heap, stacks), without the file pages it maps: sampled.
        "peak_anon_bytes": sampler.peak_anon_bytes,
        "anon_timeline": sampler.timeline,
        "user_seconds": usage.ru_utime,
        "system_seconds": usage.ru_stime,
        "exit_code": proc.returncode,
    }
    if args.mark:
        result["mark"] = args.mark
        result["mark_seconds"] = marks[-1] if marks else None
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    if proc.returncode != 0:
        print(f"{args.label}: command failed with exit code {proc.returncode}", file=sys.stderr)
        return proc.returncode if proc.returncode > 0 else 1
    marked = ""
    if args.mark:
        seen = result["mark_seconds"]
        marked = f" ({args.mark!r} after {seen:.2f} s)" if seen is not None else f" (no {args.mark!r})"
    print(
        f"  {args.label}: {wall:.2f} s, peak {result['peak_rss_bytes'] / 2**20:.0f} MiB{marked}",
        flush=True,
    )
    return 0


# --------------------------------------------------------------------------
# duckdb-cube


def cmd_duckdb_cube(args: argparse.Namespace) -> int:
    con = benchlib.duckdb_connect(args.threads)
    started = time.perf_counter()
    viewers = "count(DISTINCT viewer_id)" if args.exact else "approx_count_distinct(viewer_id)"
    con.execute(
        benchlib.cube_sql(
            args.events,
            args.catalog,
            args.out,
            period="day",
            period_expr="CAST(e.occurred_at AS DATE)",
            viewers=viewers,
        )
    )
    print(
        f"  duckdb {'exact' if args.exact else 'cube'} query: "
        f"{time.perf_counter() - started:.2f} s (inside the process)",
        flush=True,
    )
    return 0


# --------------------------------------------------------------------------
# check


def cmd_check(args: argparse.Namespace) -> int:
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"SET threads = {int(args.threads)}")

    def load(name: str, path: str) -> None:
        with Path(path).open("rb") as f:
            header = f.readline().decode("utf-8", "replace").strip()
        if header.split(",") != CUBE_COLUMNS:
            raise SystemExit(f"{path}: header is\n  {header}\nexpected\n  {','.join(CUBE_COLUMNS)}")
        dims = ", ".join(f"nullif({d}, '') AS {d}" if d != "day" else d for d in DIMENSIONS)
        rest = ", ".join(EXACT_MEASURES + ["unique_viewers"])
        con.execute(
            f"CREATE TABLE {name} AS SELECT {dims}, {rest} FROM {read_csv_sql([path], CUBE_TYPES)}"
        )

    load("ours", args.ours)
    load("duck", args.duckdb)
    load("exact", args.exact)

    key_eq = " AND ".join(f"a.{d} IS NOT DISTINCT FROM b.{d}" for d in DIMENSIONS)
    dims = ", ".join(DIMENSIONS)
    failures: list[str] = []

    def scalar(q: str):
        return con.execute(q).fetchone()[0]

    n_ours = scalar("SELECT count(*) FROM ours")
    n_duck = scalar("SELECT count(*) FROM duck")
    n_exact = scalar("SELECT count(*) FROM exact")
    print(f"cells: streamcube {n_ours}, duckdb {n_duck}, exact reference {n_exact}")

    for name in ("ours", "duck", "exact"):
        dup = scalar(
            f"SELECT count(*) FROM (SELECT {dims} FROM {name} GROUP BY ALL HAVING count(*) > 1)"
        )
        if dup:
            failures.append(f"{name}: {dup} cells appear more than once")

    only_ours = scalar(f"SELECT count(*) FROM ours a ANTI JOIN duck b ON {key_eq}")
    only_duck = scalar(f"SELECT count(*) FROM duck a ANTI JOIN ours b ON {key_eq}")
    same_cells = only_ours == 0 and only_duck == 0
    print(f"cells only in streamcube: {only_ours}, only in duckdb: {only_duck}")
    if not same_cells:
        for label, q in (
            ("only in streamcube", f"SELECT a.* FROM ours a ANTI JOIN duck b ON {key_eq} LIMIT 5"),
            ("only in duckdb", f"SELECT a.* FROM duck a ANTI JOIN ours b ON {key_eq} LIMIT 5"),
        ):
            rows = con.execute(q).fetchall()
            if rows:
                print(f"  examples {label}:")
                for r in rows:
                    print("   ", r)

    diff_pred = " OR ".join(f"a.{m} IS DISTINCT FROM b.{m}" for m in EXACT_MEASURES)
    mismatched = scalar(f"SELECT count(*) FROM ours a JOIN duck b ON {key_eq} WHERE {diff_pred}")
    print(f"cells whose exact measures differ: {mismatched}")
    if mismatched:
        per_measure = ", ".join(
            f"count(*) FILTER (WHERE a.{m} IS DISTINCT FROM b.{m}) AS {m}" for m in EXACT_MEASURES
        )
        row = con.execute(f"SELECT {per_measure} FROM ours a JOIN duck b ON {key_eq}").fetchone()
        print(
            "  differing cells per measure: "
            + ", ".join(f"{m}={n}" for m, n in zip(EXACT_MEASURES, row))
        )
        dim_cols = ", ".join(f"a.{d}" for d in DIMENSIONS)
        pairs = ", ".join(f"a.{m}, b.{m}" for m in EXACT_MEASURES)
        q = f"SELECT {dim_cols}, {pairs} FROM ours a JOIN duck b ON {key_eq} WHERE {diff_pred} LIMIT 5"
        print("  examples (measure: streamcube vs duckdb):")
        for r in con.execute(q).fetchall():
            cell = ",".join("" if v is None else str(v) for v in r[: len(DIMENSIONS)])
            vals = r[len(DIMENSIONS) :]
            diffs = [
                f"{m}: {vals[2 * i]} vs {vals[2 * i + 1]}"
                for i, m in enumerate(EXACT_MEASURES)
                if vals[2 * i] != vals[2 * i + 1]
            ]
            print(f"    [{cell}] " + "; ".join(diffs))

    # The exact reference must agree with DuckDB's approx run on everything
    # else, or the accuracy numbers below would compare different cells.
    ref_bad = scalar(
        f"SELECT count(*) FROM exact a FULL JOIN duck b ON {key_eq} "
        f"WHERE a.plays IS NULL OR b.plays IS NULL OR {diff_pred}"
    )
    if ref_bad:
        failures.append(
            f"internal: the exact reference and DuckDB's cube differ on {ref_bad} cells"
        )

    def accuracy(name: str) -> dict:
        q = f"""
            WITH e AS (
                SELECT b.unique_viewers AS exact, a.unique_viewers AS est
                FROM {name} a JOIN exact b ON {key_eq}
            )
            SELECT
                count(*) FILTER (WHERE exact >= {BIG_CELL}),
                quantile_disc(abs(est - exact) / exact, 0.99) FILTER (WHERE exact >= {BIG_CELL}),
                max(abs(est - exact) / exact) FILTER (WHERE exact >= {BIG_CELL}),
                count(*) FILTER (WHERE exact < {BIG_CELL}),
                max(abs(est - exact)) FILTER (WHERE exact < {BIG_CELL}),
                count(*) FILTER (WHERE exact < {BIG_CELL} AND est <> exact),
                count(*) FILTER (WHERE est IS NULL)
            FROM e
        """
        r = con.execute(q).fetchone()
        return {
            "big_cells": r[0],
            "p99_rel": r[1] or 0.0,
            "max_rel": r[2] or 0.0,
            "small_cells": r[3],
            "max_abs_small": r[4] or 0,
            "inexact_small": r[5],
            "missing": r[6],
        }

    acc = {"streamcube": accuracy("ours"), "duckdb approx_count_distinct": accuracy("duck")}
    print()
    print("unique_viewers against count(DISTINCT viewer_id):")
    print(
        f"  {'':30} {'cells>=1000':>11} {'p99 rel':>8} {'max rel':>8}"
        f" {'cells<1000':>10} {'max abs':>7} {'inexact':>8}"
    )
    for label, a in acc.items():
        print(
            f"  {label:30} {a['big_cells']:>11} {a['p99_rel']:>8.2%} {a['max_rel']:>8.2%}"
            f" {a['small_cells']:>10} {a['max_abs_small']:>7} {a['inexact_small']:>8}"
        )
    ours = acc["streamcube"]
    if ours["missing"]:
        failures.append(f"{ours['missing']} streamcube cells have no unique_viewers")

    checks = [
        ("cell set identical to DuckDB's", same_cells),
        ("exact measures identical to DuckDB's", mismatched == 0 and same_cells),
        (
            f"unique_viewers p99 error <= {TARGET_P99_REL:.1%} on cells >= {BIG_CELL}",
            ours["p99_rel"] <= TARGET_P99_REL,
        ),
        (
            f"unique_viewers max error <= {TARGET_MAX_REL:.1%} on cells >= {BIG_CELL}",
            ours["max_rel"] <= TARGET_MAX_REL,
        ),
        (
            f"unique_viewers max abs error <= {TARGET_MAX_ABS_SMALL} on cells < {BIG_CELL}",
            ours["max_abs_small"] <= TARGET_MAX_ABS_SMALL,
        ),
    ]
    print()
    for label, ok in checks:
        verdict(ok, label)
        if not ok:
            failures.append(label)
    if args.json:
        Path(args.json).write_text(
            json.dumps({"cells": n_ours, "accuracy": acc, "failures": failures}, indent=2) + "\n"
        )
    if failures:
        print("\ncorrectness FAILED:\n  " + "\n  ".join(failures))
        return 1
    print("\ncorrectness passed")
    return 0


# --------------------------------------------------------------------------
# report


def cmd_report(args: argparse.Namespace) -> int:
    ours = best_of(args.streamcube)
    duck = best_of(args.duckdb)
    speed = duck["seconds"] / ours["seconds"]
    mem = duck["peak_rss_bytes"] / ours["peak_rss_bytes"]
    print(f"{'tool':<24} {'seconds':>9} {'peak MiB':>9} {'cpu s':>7}")
    for label, r in (("streamcube cube", ours), ("duckdb", duck)):
        cpu = benchlib.cpu_seconds(r)
        print(f"{label:<24} {r['seconds']:>9.2f} {mib(r['peak_rss_bytes']):>9.0f} {cpu:>7.2f}")
    print(f"{'duckdb / streamcube':<24} {speed:>8.2f}x {mem:>8.2f}x")
    print(
        f"(best wall time of {ours['runs']} run(s) and highest peak RSS, whole process;"
        " DuckDB's process includes the Python interpreter)"
    )
    print()
    verdict(
        speed >= TARGET_SPEEDUP,
        f"streamcube at least {TARGET_SPEEDUP:g}x faster than DuckDB"
        f" (DuckDB time / streamcube time = {speed:.2f})",
    )
    verdict(
        mem >= TARGET_MEMORY_RATIO,
        f"streamcube at most 1/{TARGET_MEMORY_RATIO:g} of DuckDB's peak memory"
        f" (DuckDB peak / streamcube peak = {mem:.2f})",
    )
    return 0


def cmd_big_report(args: argparse.Namespace) -> int:
    r = best_of(args.streamcube)
    rate = args.events / r["seconds"] if r["seconds"] > 0 else float("inf")
    print(f"streamcube cube, {args.events:,} events over {args.days} days:")
    print(
        f"  {r['seconds']:.2f} s ({rate / 1e6:.2f} M events/s), peak {mib(r['peak_rss_bytes']):.0f} MiB"
    )
    verdict(
        r["peak_rss_bytes"] < TARGET_BIG_PEAK_BYTES,
        f"peak memory below {TARGET_BIG_PEAK_BYTES / 2**30:g} GiB",
    )
    return 0


# --------------------------------------------------------------------------


def main() -> int:
    p, sub = benchlib.commands(__doc__)

    m = benchlib.command(sub, "measure", cmd_measure)
    m.add_argument("--label", required=True)
    m.add_argument("--json", required=True)
    m.add_argument("--mark", help="note when a stderr line containing this text appears")
    m.add_argument("cmd", nargs=argparse.REMAINDER)

    d = benchlib.command(sub, "duckdb-cube", cmd_duckdb_cube)
    d.add_argument("--events", nargs="+", required=True)
    d.add_argument("--catalog", required=True)
    d.add_argument("--out", required=True)
    d.add_argument("--threads", type=int, default=2)
    d.add_argument("--exact", action="store_true")

    c = benchlib.command(sub, "check", cmd_check)
    c.add_argument("--ours", required=True)
    c.add_argument("--duckdb", required=True)
    c.add_argument("--exact", required=True)
    c.add_argument("--threads", type=int, default=2)
    c.add_argument("--json")

    r = benchlib.command(sub, "report", cmd_report)
    r.add_argument("--streamcube", nargs="+", required=True)
    r.add_argument("--duckdb", nargs="+", required=True)

    b = benchlib.command(sub, "big-report", cmd_big_report)
    b.add_argument("--streamcube", nargs="+", required=True)
    b.add_argument("--events", type=int, required=True)
    b.add_argument("--days", type=int, required=True)

    return benchlib.run(p)


if __name__ == "__main__":
    sys.exit(main())
