"""What the Python helpers of bench/ share: their command line, the runs that
`cube_vs_duckdb.py measure` records, the report lines, and the DuckDB SQL that
computes streamcube's cube from the generated CSV files.

The helpers are run as scripts from bench/, so they import this module by name.
It needs only the standard library (query_latency.py runs with the system's
python3); duckdb is imported where a connection is made.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

# --------------------------------------------------------------------------
# command line


def commands(doc: str) -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    """A parser whose first argument names a subcommand (doc: the helper's docstring), and
    the object to add the subcommands to."""
    p = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    return p, p.add_subparsers(dest="command", required=True)


def command(sub: argparse._SubParsersAction, name: str, func) -> argparse.ArgumentParser:
    """Adds the subcommand `name`, run by func(args)."""
    c = sub.add_parser(name)
    c.set_defaults(func=func)
    return c


def run(p: argparse.ArgumentParser) -> int:
    """Parses the command line and runs the subcommand it names."""
    args = p.parse_args()
    return args.func(args)


# --------------------------------------------------------------------------
# runs and reports


def read_json(path: str | Path):
    return json.loads(Path(path).read_text())


def best_of(paths: list[str]) -> dict:
    """Best (lowest) wall time of the runs, highest peak RSS (and anonymous memory), CPU of the
    best run."""
    runs = [read_json(p) for p in paths]
    best = dict(min(runs, key=lambda r: r["seconds"]))
    for peak in ("peak_rss_bytes", "peak_anon_bytes"):
        if all(peak in r for r in runs):
            best[peak] = max(r[peak] for r in runs)
    best["runs"] = len(runs)
    return best


def mib(b: float) -> float:
    return b / 2**20


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of sorted values."""
    k = max(0, math.ceil(p / 100 * len(sorted_values)) - 1)
    return sorted_values[k]


def anon(run: dict) -> str:
    """Peak anonymous memory in MiB, or `-` for a run measured before it was sampled."""
    return f"{mib(run['peak_anon_bytes']):.0f}" if "peak_anon_bytes" in run else "-"


def cpu_seconds(run: dict) -> float:
    """User and system time of a measured run."""
    return run["user_seconds"] + run["system_seconds"]


def verdict(ok: bool, text: str, words: tuple[str, str] = ("PASS", "FAIL")) -> None:
    """Prints a target or check line: `  PASS  text` (or FAIL, or the given words)."""
    print(f"  {words[0] if ok else words[1]:<4}  {text}")


# --------------------------------------------------------------------------
# DuckDB

EVENT_COLUMNS = {
    "event_id": "VARCHAR",
    "occurred_at": "TIMESTAMPTZ",
    "viewer_id": "VARCHAR",
    "content_id": "VARCHAR",
    "device": "VARCHAR",
    "country": "VARCHAR",
    "watch_seconds": "BIGINT",
    "bitrate_kbps": "BIGINT",
    "buffering_ms": "BIGINT",
    "completed": "BOOLEAN",
}
CATALOG_COLUMNS = {
    "content_id": "VARCHAR",
    "title": "VARCHAR",
    "genre": "VARCHAR",
    "release_year": "INTEGER",
    "duration_seconds": "INTEGER",
}


def sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def sql_struct(d: dict[str, str]) -> str:
    return "{" + ", ".join(f"{sql_str(k)}: {sql_str(v)}" for k, v in d.items()) + "}"


def read_csv_sql(files: list[str], columns: dict[str, str]) -> str:
    file_list = "[" + ", ".join(sql_str(f) for f in files) + "]"
    return (
        f"read_csv({file_list}, header = true, auto_detect = false, delim = ',', "
        f"quote = '\"', escape = '\"', columns = {sql_struct(columns)})"
    )


def duckdb_connect(threads: int):
    """A DuckDB connection set up as the timed queries run: `threads` threads, UTC, and
    insertion order not kept."""
    import duckdb

    con = duckdb.connect()
    con.execute(f"SET threads = {int(threads)}")
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET preserve_insertion_order = false")
    return con


def cube_sql(
    events: list[str],
    catalog: str,
    out: str,
    period: str,
    period_expr: str,
    period_group: str | None = None,
    viewers: str = "approx_count_distinct(viewer_id)",
) -> str:
    """COPY to the CSV file `out` of the cube streamcube computes from these files: dedup by
    event_id, left join of the catalog (genre 'unknown' when missing), GROUP BY the period
    (named `period`, computed as `period_expr` from the event `e`; grouped as `period_group`,
    by default the period itself), CUBE(country, device, genre, content_id), with plays,
    watch_seconds, completed, buffering_ms, bitrate_sum, bitrate_count and unique_viewers (as
    `viewers`)."""
    return f"""
COPY (
    WITH events AS (
        -- Duplicates are exact copies of a row, so dropping repeated rows
        -- deduplicates by event_id (and is DuckDB's fastest way).
        SELECT DISTINCT *
        FROM {read_csv_sql(events, EVENT_COLUMNS)}
    ),
    catalog AS (
        SELECT content_id, any_value(genre) AS genre
        FROM {read_csv_sql([catalog], CATALOG_COLUMNS)}
        GROUP BY content_id
    ),
    plays AS (
        SELECT {period_expr} AS {period},  -- session TimeZone is UTC
               e.country, e.device, coalesce(c.genre, 'unknown') AS genre, e.content_id,
               e.viewer_id, e.watch_seconds, e.completed, e.buffering_ms, e.bitrate_kbps
        FROM events e LEFT JOIN catalog c ON e.content_id = c.content_id
    )
    SELECT {period}, country, device, genre, content_id,
           count(*) AS plays,
           sum(watch_seconds) AS watch_seconds,
           count(*) FILTER (WHERE completed) AS completed,
           coalesce(sum(buffering_ms), 0) AS buffering_ms,
           coalesce(sum(bitrate_kbps), 0) AS bitrate_sum,
           count(bitrate_kbps) AS bitrate_count,
           {viewers} AS unique_viewers
    FROM plays
    GROUP BY {period_group or period}, CUBE (country, device, genre, content_id)
) TO {sql_str(out)} (FORMAT csv, HEADER true)
"""
