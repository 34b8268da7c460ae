#!/usr/bin/env python3
"""Helper of bench/consolidate.sh and consolidate_hour.sh: cutting an hour, counting cells,
DuckDB's day, reports.

Run by the shell script with the benchmark's venv (bench/.venv, which has the
pinned duckdb); wall time and peak RSS come from `cube_vs_duckdb.py measure`,
the SQL and the report pieces it shares with that benchmark from benchlib.py.
Subcommands:

  cut-hour --events F --out F [--hour auto|busiest|0..23] [--json F] [--rest F]
      Counts the rows of a one-day events CSV per UTC hour of occurred_at
      (offsets such as +01:00 normalized, as silver partitions them) and
      writes the header and the rows of one hour, byte for byte, to --out.
      `auto` (the default) picks the hour whose row count is nearest to a
      24th of the file, `busiest` the hour with the most rows. With --rest,
      the header and every other row go to that file, so that the two files
      hold the input's rows between them.

  show-hour --json F [--hour H]
      Prints what cut-hour found, from its --json.

  cells --db F --json F
      Counts the cells a consolidation wrote: for every published day of the
      SQLite database, the cells of the generations its manifest references
      (hour blocks and the day block), read from the cell count at the head
      of each gold_blocks value (the codec's version byte, then a LEB128
      count), so no block is decoded.

  duckdb-day --events F --catalog F --out F [--threads N] [--levels L]
      Computes with DuckDB what a consolidation of the day computes: dedup
      by event_id, left join of the catalog (genre 'unknown' when missing),
      GROUP BY hour, CUBE(country, device, genre, content_id) (and, with
      --levels hour+day, the default, the day's CUBE too), plays,
      watch_seconds, completed, buffering_ms, bitrate_sum, bitrate_count and
      approx_count_distinct(viewer_id); writes the cells to a CSV file.

  one-hour --events F --out F --at YYYY-MM-DDTHH
      Writes the events CSV with every readable occurred_at moved into one
      UTC hour (its minutes and seconds kept), other rows as they are: an
      hour of as many events as the file has (for consolidate_hour.sh).

  hours-report --res DIR --events N... --runs R
      Prints consolidate_hour.sh's table from DIR/open-N-runI.json and
      DIR/open-N-cells.json.

  report --hour-runs JSON... --hour-cells JSON --hour-events N
         --day-runs JSON... --day-cells JSON --day-events N
         [--duckdb-runs JSON... --duckdb-cells JSON]
      Prints the table, the rates and the target (informational).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sqlite3
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.dont_write_bytecode = True  # no __pycache__ in bench/ for the import below
import benchlib  # noqa: E402
from benchlib import anon, best_of, cpu_seconds, mib, read_json  # noqa: E402

TARGET_DAY_SECONDS = 10.0


# --------------------------------------------------------------------------
# cut-hour


def utc_hour(ts: str) -> tuple[str, int]:
    """(UTC date, UTC hour) of an RFC 3339 timestamp."""
    if ts.endswith("Z") and len(ts) >= 13 and ts[10] == "T":
        return ts[:10], int(ts[11:13])  # the common case, no parsing
    dt = datetime.fromisoformat(ts)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    dt = dt.astimezone(UTC)
    return dt.strftime("%Y-%m-%d"), dt.hour


def cmd_cut_hour(args: argparse.Namespace) -> int:
    src = Path(args.events)

    def rows(f):
        # event_id is [A-Za-z0-9._:-]: the second field starts after the first comma.
        for line in f:
            parts = line.split(b",", 2)
            try:
                yield line, utc_hour(parts[1].decode())
            except (IndexError, ValueError, UnicodeDecodeError):
                yield line, None

    # Two streaming passes: count per hour, then copy the chosen hour's lines (and the others
    # to --rest).
    counts: dict[tuple[str, int], int] = {}
    bad = file_rows = 0
    with src.open("rb") as f:
        header = f.readline()
        if not header.startswith(b"event_id,occurred_at,"):
            sys.exit(f"{src}: unexpected header {header!r}")
        for _, k in rows(f):
            file_rows += 1
            if k is None:
                bad += 1
            else:
                counts[k] = counts.get(k, 0) + 1
    if not counts:
        sys.exit(f"{src}: no row with a readable occurred_at")
    days = sorted({d for d, _ in counts})
    per_hour = file_rows / 24
    busiest = max(counts, key=lambda k: counts[k])
    if args.hour == "auto":
        chosen = min(counts, key=lambda k: (abs(counts[k] - per_hour), k))
    elif args.hour == "busiest":
        chosen = busiest
    else:
        h = int(args.hour)
        if not 0 <= h <= 23:
            sys.exit("--hour must be auto, busiest or 0..23")
        main_day = max(days, key=lambda d: sum(n for (dd, _), n in counts.items() if dd == d))
        chosen = (main_day, h)
        if chosen not in counts:
            sys.exit(f"no rows in hour {h} of {main_day}")
    with contextlib.ExitStack() as files:
        f = files.enter_context(src.open("rb"))
        out = files.enter_context(Path(args.out).open("wb"))
        rest = files.enter_context(Path(args.rest).open("wb")) if args.rest else None
        header = f.readline()
        out.write(header)
        if rest is None:
            out.writelines(line for line, k in rows(f) if k == chosen)
        else:
            rest.write(header)
            for line, k in rows(f):
                (out if k == chosen else rest).write(line)
    result = {
        "day": chosen[0],
        "hour": chosen[1],
        "rows": counts[chosen],
        "file_rows": file_rows,
        "days_in_file": days,
        "mean_rows_per_hour": per_hour,
        "busiest": {"day": busiest[0], "hour": busiest[1], "rows": counts[busiest]},
        "quietest_rows": min(counts.values()),
        "unreadable": bad,
    }
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print_hour(result, args.hour)
    return 0


def cmd_one_hour(args: argparse.Namespace) -> int:
    at = args.at
    datetime.strptime(at, "%Y-%m-%dT%H")  # refuses anything else
    moved = kept = 0
    with Path(args.events).open("rb") as f, Path(args.out).open("wb") as out:
        out.write(f.readline())
        for line in f:
            parts = line.split(b",", 2)
            try:
                ts = parts[1].decode()
                if ts.endswith("Z") and len(ts) == 20 and ts[10] == "T":
                    minute_second = ts[14:19]
                else:
                    dt = datetime.fromisoformat(ts).astimezone(UTC)
                    minute_second = dt.strftime("%M:%S")
            except (IndexError, ValueError, UnicodeDecodeError):
                out.write(line)
                kept += 1
                continue
            out.write(b",".join([parts[0], f"{at}:{minute_second}Z".encode(), parts[2]]))
            moved += 1
    print(f"  {moved:,} rows moved into {at}:00Z, {kept:,} unreadable rows left as they were")
    return 0


def cmd_hours_report(args: argparse.Namespace) -> int:
    res = Path(args.res)
    print(
        f"{'events in the hour':>18} {'published':>9} {'seconds':>8} {'events/s':>10}"
        f" {'hour cells':>11} {'peak MiB':>9} {'own MiB':>8} {'bytes/event':>11} {'cpu s':>7}"
    )
    for n in args.events:
        r = best_of([str(res / f"open-{n}-run{i}.json") for i in range(1, args.runs + 1)])
        c = read_json(res / f"open-{n}-cells.json")
        n_events = c["silver_events"]
        s = r["seconds"]
        own = r.get("peak_anon_bytes")
        print(
            f"{n_events:>18,} {published(r):>9} {s:>8.2f} {n_events / s:>10,.0f}"
            f" {c['hour_cells']:>11,} {mib(r['peak_rss_bytes']):>9.0f} {benchlib.anon(r):>8}"
            f" {(own or r['peak_rss_bytes']) / n_events:>11,.0f} {cpu_seconds(r):>7.2f}"
        )
    print(
        f"(best wall time of {args.runs} run(s), highest peak; events = distinct events"
        " in silver; published = seconds until the day's hours were live; own = anonymous"
        " memory, bytes/event = own (or peak) memory / events)"
    )
    return 0


def print_hour(r: dict, how: str) -> None:
    print(
        f"  hour {r['day']} {r['hour']:02d}:00 UTC ({how}): {r['rows']:,} rows"
        f" (a 24th of the day: {r['mean_rows_per_hour']:,.0f}; busiest hour"
        f" {r['busiest']['hour']:02d}:00 with {r['busiest']['rows']:,}; quietest"
        f" {r['quietest_rows']:,})"
    )
    if len(r["days_in_file"]) > 1:
        print(
            f"  note: the file spans {len(r['days_in_file'])} UTC days: {', '.join(r['days_in_file'])}"
        )


def cmd_show_hour(args: argparse.Namespace) -> int:
    print_hour(json.loads(Path(args.json).read_text()), args.hour)
    return 0


# --------------------------------------------------------------------------
# cells


def leb128_count(block: bytes) -> int:
    """The cell count at the head of an encoded block (version byte, then LEB128)."""
    if not block or block[0] != 1:
        raise ValueError(f"unsupported cell block version {block[:1]!r}")
    v, shift = 0, 0
    for b in block[1:]:
        v |= (b & 0x7F) << shift
        if not b & 0x80:
            return v
        shift += 7
    raise ValueError("truncated cell count")


def cmd_cells(args: argparse.Namespace) -> int:
    con = sqlite3.connect(f"file:{args.db}?mode=ro", uri=True)
    manifests = [json.loads(b) for (b,) in con.execute("SELECT body FROM gold_manifests")]
    # Silver's events per UTC hour (hours since the epoch), for each level's events.
    per_hour = dict(con.execute("SELECT hour, count(*) FROM silver_events GROUP BY hour"))
    hour_cells = day_cells = blocks = hours = events = 0
    levels = []
    for m in manifests:
        day = m["day"]
        refs = [(24, m["day_generation"])] + [(int(h), g) for h, g in m["hours"].items()]
        hours += len(m["hours"])
        events += m.get("events", 0)
        first_hour = int(datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp()) // 3600
        for level, gen in refs:
            level_cells = level_bytes = 0
            for head, size in con.execute(
                "SELECT substr(cells, 1, 12), length(cells) FROM gold_blocks "
                "WHERE day = ? AND level = ? AND generation = ?",
                (day, level, gen),
            ):
                level_cells += leb128_count(head)
                level_bytes += size
                blocks += 1
            if level == 24:
                day_cells += level_cells
                level_events = m.get("events", 0)
            else:
                hour_cells += level_cells
                level_events = per_hour.get(first_hour + level, 0)
            if gen:
                levels.append(
                    {
                        "day": day,
                        "level": "day" if level == 24 else f"hour {level}",
                        "events": level_events,
                        "cells": level_cells,
                        "bytes": level_bytes,
                    }
                )
    result = {
        "days": len(manifests),
        "hours": hours,
        "events": events,
        "hour_cells": hour_cells,
        "day_cells": day_cells,
        "cells": hour_cells + day_cells,
        "blocks": blocks,
        "silver_events": sum(per_hour.values()),
        "db_bytes": Path(args.db).stat().st_size,
        # Each published level: its events, cells and bytes of encoded blocks.
        "levels": levels,
    }
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"  gold: {len(manifests)} day(s), {hours} hour partition(s), {events:,} events, "
        f"{hour_cells:,} hour cells + {day_cells:,} day cells in {blocks} blocks"
    )
    return 0


# --------------------------------------------------------------------------
# duckdb-day


def cmd_duckdb_day(args: argparse.Namespace) -> int:
    con = benchlib.duckdb_connect(args.threads)
    started = time.perf_counter()
    sql = benchlib.cube_sql(
        [args.events],
        args.catalog,
        args.out,
        period="hour",
        period_expr="date_trunc('hour', e.occurred_at)",
        # ROLLUP (hour): the hours' cubes and the day's.
        period_group="ROLLUP (hour)" if args.levels == "hour+day" else "hour",
    )
    row = con.execute(sql).fetchone()
    cells = int(row[0]) if row else -1
    seconds = time.perf_counter() - started
    if args.json:
        Path(args.json).write_text(json.dumps({"cells": cells, "levels": args.levels}) + "\n")
    print(f"  duckdb query: {seconds:.2f} s inside the process, {cells:,} cells", flush=True)
    return 0


# --------------------------------------------------------------------------
# report


def cmd_report(args: argparse.Namespace) -> int:
    rows = []
    for label, runs, cells_path, events in (
        ("hour partition", args.hour_runs, args.hour_cells, args.hour_events),
        ("whole day", args.day_runs, args.day_cells, args.day_events),
    ):
        best = best_of(runs)
        cells = read_json(cells_path)
        rows.append((label, best, cells, events))

    print(
        f"{'consolidate':<16} {'events':>10} {'hours':>5} {'published':>9} {'seconds':>8}"
        f" {'s/hour':>7} {'events/s':>10} {'cells':>10} {'cells/s':>10} {'peak MiB':>9}"
        f" {'cpu s':>7}"
    )
    for label, r, c, events in rows:
        s = r["seconds"]
        cpu = cpu_seconds(r)
        print(
            f"{label:<16} {events:>10,} {c['hours']:>5} {published(r):>9}"
            f" {s:>8.2f} {s / max(c['hours'], 1):>7.3f}"
            f" {events / s:>10,.0f} {c['cells']:>10,} {c['cells'] / s:>10,.0f}"
            f" {mib(r['peak_rss_bytes']):>9.0f} {cpu:>7.2f}"
        )
    print(
        f"(best wall time of {rows[1][1]['runs']} run(s), highest peak RSS; events = rows of the"
        " input file, duplicates included; cells = hour cells + day cells written to gold;"
        " published = seconds until the day's generation was live and its exports written,"
        " in the same run; seconds = the whole command, which then adds the hours' events"
        " to the viewer index)"
    )
    for label, _, c, _ in rows:
        print(
            f"  {label}: {c['hour_cells']:,} hour cells + {c['day_cells']:,} day cells,"
            f" {c['events']:,} distinct events published"
        )

    if args.closing_runs:
        close = best_of(args.closing_runs)
        print(
            f"  closing the day (its last hour recomputed, the others read back):"
            f" published after {published(close)} s, {close['seconds']:.2f} s,"
            f" peak {mib(close['peak_rss_bytes']):.0f} MiB (own {anon(close)} MiB),"
            f" cpu {cpu_seconds(close):.2f} s; the whole day: own {anon(rows[1][1])} MiB"
        )

    day = rows[1][1]
    if args.duckdb_runs:
        duck = best_of(args.duckdb_runs)
        dcells = read_json(args.duckdb_cells)
        ratio = duck["seconds"] / day["seconds"]
        cpu = cpu_seconds(duck)
        print()
        print(
            f"duckdb, the same day ({dcells['levels']} cells): {duck['seconds']:.2f} s,"
            f" peak {mib(duck['peak_rss_bytes']):.0f} MiB, cpu {cpu:.2f} s,"
            f" {dcells['cells']:,} cells (streamcube: {rows[1][2]['cells']:,})"
        )
        faster = "streamcube" if ratio >= 1 else "duckdb"
        print(
            f"  duckdb time / streamcube consolidate time: {ratio:.2f}"
            f" ({faster} {max(ratio, 1 / ratio):.2f}x faster)"
        )
        print(
            "  (DuckDB reads, parses and dedups the events CSV and joins the catalog CSV;"
            " streamcube reads silver from SQLite, already validated and deduplicated,"
            " writes hour and day cells with their sketches to SQLite and the day's CSV and"
            " Parquet exports. DuckDB's process includes the Python interpreter.)"
        )
    print()
    day_published = day.get("mark_seconds")
    benchlib.verdict(
        day_published is not None and day_published < TARGET_DAY_SECONDS,
        f"a day of {rows[1][3]:,} events is published in under {TARGET_DAY_SECONDS:g} s"
        f" ({published(day)} s; the command took {day['seconds']:.2f} s; informational)",
    )
    return 0


def published(run: dict) -> str:
    """Seconds until the run logged the day's publication, `-` when it did not."""
    seen = run.get("mark_seconds")
    return "-" if seen is None else f"{seen:.2f}"


# --------------------------------------------------------------------------


def main() -> int:
    p, sub = benchlib.commands(__doc__)

    c = benchlib.command(sub, "cut-hour", cmd_cut_hour)
    c.add_argument("--events", required=True)
    c.add_argument("--out", required=True)
    c.add_argument("--hour", default="auto")
    c.add_argument("--json")
    c.add_argument("--rest")

    sh = benchlib.command(sub, "show-hour", cmd_show_hour)
    sh.add_argument("--json", required=True)
    sh.add_argument("--hour", default="auto")

    n = benchlib.command(sub, "cells", cmd_cells)
    n.add_argument("--db", required=True)
    n.add_argument("--json", required=True)

    o = benchlib.command(sub, "one-hour", cmd_one_hour)
    o.add_argument("--events", required=True)
    o.add_argument("--out", required=True)
    o.add_argument("--at", required=True)

    hr = benchlib.command(sub, "hours-report", cmd_hours_report)
    hr.add_argument("--res", required=True)
    hr.add_argument("--events", type=int, nargs="+", required=True)
    hr.add_argument("--runs", type=int, default=1)

    d = benchlib.command(sub, "duckdb-day", cmd_duckdb_day)
    d.add_argument("--events", required=True)
    d.add_argument("--catalog", required=True)
    d.add_argument("--out", required=True)
    d.add_argument("--threads", type=int, default=2)
    d.add_argument("--levels", choices=["hour", "hour+day"], default="hour+day")
    d.add_argument("--json")

    r = benchlib.command(sub, "report", cmd_report)
    r.add_argument("--hour-runs", nargs="+", required=True)
    r.add_argument("--hour-cells", required=True)
    r.add_argument("--hour-events", type=int, required=True)
    r.add_argument("--day-runs", nargs="+", required=True)
    r.add_argument("--day-cells", required=True)
    r.add_argument("--day-events", type=int, required=True)
    r.add_argument("--duckdb-runs", nargs="*")
    r.add_argument("--duckdb-cells")
    r.add_argument("--closing-runs", nargs="*")

    return benchlib.run(p)


if __name__ == "__main__":
    sys.exit(main())
