"""Helper of bronze_aws.sh: checks a bronze file processed through the AWS adapters against
the same file processed on the embedded backend, removes the run's tables, and prints the
summary table. Runs with the emulator's venv (boto3), against AWS_ENDPOINT_URL.

  check   the report in the lake bucket has the embedded report's counts (rows, accepted,
          duplicates, rejected, per reason) and the silver table holds exactly `accepted` items
  drop    deletes the run's tables (the emulator keeps every item in memory)
  summary appends one data set's line to the summary (JSON lines)
  table   prints the summary
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import benchlib
import boto3

COUNTS = ("rows", "accepted", "duplicates", "rejected", "rejected_by_reason")


def client(service: str):
    return boto3.client(service, endpoint_url=os.environ["AWS_ENDPOINT_URL"])


def item_count(table: str) -> int:
    """Items in the table. The emulator's DescribeTable counts them live (DynamoDB refreshes
    its count every few hours); a paginated scan would be quadratic in the emulator, which
    walks the table from the start for every page."""
    return client("dynamodb").describe_table(TableName=table)["Table"]["ItemCount"]


def cmd_check(args) -> int:
    embedded = benchlib.read_json(args.embedded_report)
    body = client("s3").get_object(Bucket=args.lake_bucket, Key=args.report_key)["Body"]
    aws = json.loads(body.read())
    ok = True
    for field in COUNTS:
        a, e = aws.get(field), embedded.get(field)
        ok &= a == e
        if isinstance(e, dict) and a == e:
            benchlib.verdict(
                True, f"report {field}: the same {len(e)} reasons and counts"
            )
        else:
            benchlib.verdict(a == e, f"report {field}: {args.who} {a}, embedded {e}")
    items = item_count(args.silver_table)
    same = items == embedded["accepted"]
    ok &= same
    benchlib.verdict(
        same, f"silver table items: {items:,} (accepted: {embedded['accepted']:,})"
    )
    Path(args.json).write_text(json.dumps({"ok": ok, "items": items}) + "\n")
    return 0 if ok else 1


def cmd_drop(args) -> int:
    ddb = client("dynamodb")
    for t in args.tables:
        ddb.delete_table(TableName=t)
    return 0


def cmd_summary(args) -> int:
    moto = json.loads(Path(args.emulator_cpu).read_text())
    line = {
        "label": args.label,
        "rows": args.rows,
        "aws": benchlib.best_of(args.aws),
        "boto3": benchlib.best_of(args.boto3),
        "embedded": benchlib.best_of(args.embedded),
        "emulator_cpu_seconds": moto["cpu_seconds"],
        "boto3_emulator_cpu_seconds": moto["boto3_cpu_seconds"],
    }
    with open(args.append, "a") as f:
        f.write(json.dumps(line) + "\n")
    return 0


def cmd_table(args) -> int:
    lines = [json.loads(x) for x in Path(args.summary).read_text().splitlines() if x]
    print(
        f"  {'data set':<14} {'backend':<22} {'wall s':>8} {'rows/s':>9} {'peak MiB':>9} "
        f"{'anon MiB':>9} {'cpu s':>7} {'rows/cpu s':>10} {'emulator cpu s':>15}"
    )
    for line in lines:
        rows = line["rows"]
        for name, run, emu in (
            (
                "AWS adapters, emulator",
                line["aws"],
                f"{line['emulator_cpu_seconds']:.1f}",
            ),
            (
                "boto3 job, emulator",
                line["boto3"],
                f"{line['boto3_emulator_cpu_seconds']:.1f}",
            ),
            ("embedded (SQLite)", line["embedded"], "-"),
        ):
            print(
                f"  {line['label']:<14} {name:<22} {run['seconds']:>8.1f} "
                f"{rows / run['seconds']:>9,.0f} {benchlib.mib(run['peak_rss_bytes']):>9.0f} "
                f"{benchlib.anon(run):>9} {benchlib.cpu_seconds(run):>7.1f} "
                f"{rows / benchlib.cpu_seconds(run):>10,.0f} {emu:>15}"
            )
    for line in lines:
        ours, theirs = line["aws"], line["boto3"]
        print(
            f"  {line['label']}: the boto3 job against the AWS adapters: "
            f"{benchlib.cpu_seconds(theirs) / benchlib.cpu_seconds(ours):.2f}x the client CPU, "
            f"{theirs['seconds'] / ours['seconds']:.2f}x the wall time, "
            f"{theirs['peak_rss_bytes'] / ours['peak_rss_bytes']:.2f}x the peak memory"
        )
    if len(lines) > 1:
        first, last = lines[0], lines[-1]
        for what in ("peak_rss_bytes", "peak_anon_bytes"):
            a, b = first["aws"].get(what), last["aws"].get(what)
            if a and b:
                print(
                    f"  AWS adapters' {what.split('_')[1]} memory, {first['label']} -> "
                    f"{last['label']}: {benchlib.mib(a):.0f} -> {benchlib.mib(b):.0f} MiB "
                    f"({b / a:.2f}x)"
                )
    return 0


def main() -> int:
    p, sub = benchlib.commands(__doc__)
    c = benchlib.command(sub, "check", cmd_check)
    c.add_argument("--embedded-report", required=True)
    c.add_argument("--lake-bucket", required=True)
    c.add_argument("--report-key", required=True)
    c.add_argument("--silver-table", required=True)
    c.add_argument("--json", required=True)
    c.add_argument("--who", default="AWS", help="whose report it is, for the output")
    d = benchlib.command(sub, "drop", cmd_drop)
    d.add_argument("tables", nargs="+")
    s = benchlib.command(sub, "summary", cmd_summary)
    s.add_argument("--label", required=True)
    s.add_argument("--rows", type=int, required=True)
    s.add_argument("--aws", nargs="+", required=True)
    s.add_argument("--boto3", nargs="+", required=True)
    s.add_argument("--embedded", nargs="+", required=True)
    s.add_argument("--emulator-cpu", required=True)
    s.add_argument("--append", required=True)
    t = benchlib.command(sub, "table", cmd_table)
    t.add_argument("--summary", required=True)
    return benchlib.run(p)


if __name__ == "__main__":
    sys.exit(main())
