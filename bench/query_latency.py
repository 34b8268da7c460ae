#!/usr/bin/env python3
"""Helper of bench/query_latency.sh: the dashboard's queries against `streamcube serve`.

  run --url http://127.0.0.1:PORT --start YYYY-MM-DD --days N [--country CC]
      [--repeat N] [--warmup N] [--json OUT] [--target-ms MS]

Sends each query over one keep-alive HTTP/1.1 connection (http.client), one
request at a time: --warmup untimed requests, then --repeat timed ones (from
sending the request to having read the whole body). Every answer, warm-up
included, must be 200 with the expected content type and at least one row;
otherwise the run stops with exit status 1. Prints p50, p99 and max in
milliseconds per query, and whether p99 is under the target (informational:
a slow query never changes the exit status).

The queries are the dashboard's usual ones over the data's last days:
  trend       the daily trend of plays and unique viewers over all N days
  top10       the top 10 titles of one country over the last 7 days, by plays
  breakdown   one day grouped by country, device and genre (granularity day)
  breakdown   the same as CSV (Accept: text/csv)
"""

from __future__ import annotations

import argparse
import csv
import http.client
import io
import json
import sys
import time
from datetime import date, timedelta
from pathlib import Path
from urllib.parse import urlencode, urlsplit

sys.dont_write_bytecode = True  # no __pycache__ in bench/ for the import below
import benchlib  # noqa: E402

TARGET_P99_MS = 50.0


def queries(start: date, days: int, country: str) -> list[dict]:
    last = start + timedelta(days=days - 1)
    week = max(start, last - timedelta(days=6))
    return [
        {
            "name": "trend",
            "what": f"{days}-day daily trend of plays and unique viewers",
            "params": {
                "from": start.isoformat(),
                "to": last.isoformat(),
                "granularity": "day",
                "measures": "plays,unique_viewers",
            },
        },
        {
            "name": "top10",
            "what": f"top 10 titles in {country} over 7 days, by plays",
            "params": {
                "from": week.isoformat(),
                "to": last.isoformat(),
                "granularity": "total",
                "group_by": "content_id",
                "country": country,
                "measures": "plays,unique_viewers,watch_seconds",
                "order_by": "plays",
                "limit": "10",
            },
        },
        {
            "name": "breakdown",
            "what": "one day by country, device and genre",
            "params": {
                "from": last.isoformat(),
                "to": last.isoformat(),
                "granularity": "day",
                "group_by": "country,device,genre",
            },
        },
        {
            "name": "breakdown.csv",
            "what": "the same as CSV (Accept: text/csv)",
            "params": {
                "from": last.isoformat(),
                "to": last.isoformat(),
                "granularity": "day",
                "group_by": "country,device,genre",
            },
            "csv": True,
        },
    ]


class Failure(Exception):
    pass


def rows_of(q: dict, status: int, ctype: str, body: bytes) -> int:
    """The number of rows of an answer; raises Failure when it is not a good one."""
    if status != 200:
        raise Failure(f"status {status}: {body[:300].decode('utf-8', 'replace')}")
    if not body:
        raise Failure("empty body")
    if q.get("csv"):
        if not ctype.startswith("text/csv"):
            raise Failure(f"content type {ctype!r}, expected text/csv")
        lines = list(csv.reader(io.StringIO(body.decode("utf-8"))))
        return len(lines) - 1  # the header
    if not ctype.startswith("application/json"):
        raise Failure(f"content type {ctype!r}, expected application/json")
    answer = json.loads(body)
    if not isinstance(answer, dict) or "rows" not in answer:
        raise Failure(f"no rows in {body[:300]!r}")
    if not answer.get("generations"):
        raise Failure("no published day in the range (empty generations)")
    return len(answer["rows"])


def cmd_run(args: argparse.Namespace) -> int:
    url = urlsplit(args.url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    start = date.fromisoformat(args.start)
    results = []
    failed = False
    for q in queries(start, args.days, args.country):
        path = "/v1/cube?" + urlencode(q["params"])
        headers = {"Accept": "text/csv" if q.get("csv") else "application/json"}
        times: list[float] = []
        rows = size = 0
        try:
            for i in range(args.warmup + args.repeat):
                t0 = time.perf_counter()
                conn.request("GET", path, headers=headers)
                resp = conn.getresponse()
                body = resp.read()
                elapsed = (time.perf_counter() - t0) * 1000
                rows = rows_of(q, resp.status, resp.getheader("content-type", ""), body)
                if rows < 1:
                    raise Failure("no rows")
                size = len(body)
                if i >= args.warmup:
                    times.append(elapsed)
        except (Failure, OSError, http.client.HTTPException, ValueError) as e:
            print(f"  FAIL  {q['name']}: {e}\n        GET {path}", file=sys.stderr)
            failed = True
            conn.close()
            conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
            continue
        times.sort()
        results.append(
            {
                "name": q["name"],
                "what": q["what"],
                "path": path,
                "rows": rows,
                "bytes": size,
                "n": len(times),
                "p50_ms": benchlib.percentile(times, 50),
                "p99_ms": benchlib.percentile(times, 99),
                "max_ms": times[-1],
                "mean_ms": sum(times) / len(times),
            }
        )
    conn.close()

    print(
        f"{'query':<14} {'rows':>6} {'bytes':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}"
        f"  ({args.repeat} timed after {args.warmup} warm-up, one keep-alive connection)"
    )
    for r in results:
        print(
            f"{r['name']:<14} {r['rows']:>6} {r['bytes']:>8} {r['p50_ms']:>8.2f}"
            f" {r['p99_ms']:>8.2f} {r['max_ms']:>8.2f}  {r['what']}"
        )
    print()
    for r in results:
        benchlib.verdict(
            r["p99_ms"] < args.target_ms,
            f"{r['name']}: p99 {r['p99_ms']:.2f} ms < {args.target_ms:g} ms (informational)",
        )
    for r in results:
        print(f"  {r['name']}: GET {r['path']}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    if failed:
        print("\nFAILED: some answers were not 200 with rows (see above)", file=sys.stderr)
        return 1
    return 0


def main() -> int:
    p, sub = benchlib.commands(__doc__)
    r = benchlib.command(sub, "run", cmd_run)
    r.add_argument("--url", required=True)
    r.add_argument("--start", required=True, help="first day of the data, YYYY-MM-DD")
    r.add_argument("--days", type=int, required=True)
    r.add_argument("--country", default="BR")
    r.add_argument("--repeat", type=int, default=200)
    r.add_argument("--warmup", type=int, default=10)
    r.add_argument("--target-ms", type=float, default=TARGET_P99_MS)
    r.add_argument("--json")
    args = p.parse_args()
    if args.repeat < 1 or args.warmup < 0 or args.days < 1:
        p.error("--repeat must be >= 1, --warmup >= 0, --days >= 1")
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
