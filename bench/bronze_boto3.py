"""The bronze job as a Python Lambda would do it on AWS, for bench/bronze_aws.sh: the events
file is put in the bronze bucket and read back (to /tmp, as a Lambda would), read, validated,
deduplicated and pseudonymized by the pandas job of bronze_pandas.py, and written to the silver
DynamoDB table with boto3: a consistent BatchGetItem for the ids already stored, then
BatchWriteItem of the new rows (retrying what DynamoDB leaves unprocessed), in the items
streamcube's AWS adapter writes (shared/aws/src/silver.rs). The quarantine and the report go to
the lake bucket under a prefix of their own, in streamcube's shapes.

  ingest      the job on event files, against AWS_ENDPOINT_URL
  same-items  a sample of the items streamcube wrote is in the job's table, identical
"""

from __future__ import annotations

import os
import random
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.dont_write_bytecode = True  # no __pycache__ in bench/ for the imports below
import benchlib  # noqa: E402
import boto3  # noqa: E402
import bronze_pandas  # noqa: E402

# shared/aws/src/silver.rs: HOUR_SHARDS, the by_hour index's shards of an hour.
HOUR_SHARDS = 16
GET_BATCH = 100  # BatchGetItem's limit
WRITE_BATCH = 25  # BatchWriteItem's limit


def client(service: str):
    return boto3.client(service, endpoint_url=os.environ["AWS_ENDPOINT_URL"])


def shard_of(event_id: str) -> int:
    """streamcube's `shard_of`: FNV-1a (64 bits) of the id's bytes, modulo the shards."""
    h = 0xCBF29CE484222325
    for b in event_id.encode("utf-8"):
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h % HOUR_SHARDS


class S3Lake:
    def __init__(self, s3, bucket: str, prefix: str):
        self.s3, self.bucket, self.prefix = s3, bucket, prefix

    def put(self, rel: str, data: bytes) -> None:
        self.s3.put_object(Bucket=self.bucket, Key=self.prefix + rel, Body=data)

    def delete(self, rel: str) -> None:
        self.s3.delete_object(Bucket=self.bucket, Key=self.prefix + rel)


def batch_get(ddb, table: str, ids: list[str]) -> set[str]:
    """The ids of `ids` already in the table (consistent reads, unprocessed keys retried)."""
    found: set[str] = set()
    for start in range(0, len(ids), GET_BATCH):
        request = {
            table: {
                "Keys": [{"event_id": {"S": i}} for i in ids[start : start + GET_BATCH]],
                "ConsistentRead": True,
                "ProjectionExpression": "event_id",
            }
        }
        delay = 0.05
        while request:
            r = ddb.batch_get_item(RequestItems=request)
            found.update(item["event_id"]["S"] for item in r["Responses"].get(table, []))
            request = r.get("UnprocessedKeys") or {}
            if request:
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
    return found


def batch_write(ddb, table: str, items: list[dict]) -> None:
    for start in range(0, len(items), WRITE_BATCH):
        request = {table: [{"PutRequest": {"Item": it}} for it in items[start : start + WRITE_BATCH]]}
        delay = 0.05
        while request:
            r = ddb.batch_write_item(RequestItems=request)
            request = r.get("UnprocessedItems") or {}
            if request:
                time.sleep(delay)
                delay = min(delay * 2, 2.0)


def dynamo_writer(ddb, table: str, slice_rows: int = 100_000):
    """`write_silver` for the DynamoDB silver table, in slices of the kept rows as streamcube
    writes a file's batches."""

    def write(r: bronze_pandas.KeptRows, lap) -> int:
        inserted = 0
        origin = f"{r.key}#{r.version}"
        for start in range(0, len(r.keep), slice_rows):
            rows = r.keep[start : start + slice_rows]
            ids = r.id_values[rows].tolist()
            existing = batch_get(ddb, table, ids)
            items = []
            for j, event_id in enumerate(ids):
                if event_id in existing:
                    continue
                i = rows[j]
                hour = int(r.hours[i])
                item = {
                    "event_id": {"S": event_id},
                    "hour": {"N": str(hour)},
                    "hour_shard": {"S": f"{hour}#{shard_of(event_id)}"},
                    "occurred_at": {"N": str(int(r.occurred_ms[i]))},
                    "viewer": {"S": r.pseudonyms[r.v_codes[i]].hex()},
                    "content_id": {"S": r.contents[r.c_codes[i]]},
                    "device": {"S": r.devices[r.d_codes[i]]},
                    "country": {"S": r.countries[r.k_codes[i]]},
                    "watch_seconds": {"N": str(int(r.numbers["watch_seconds"][i]))},
                    "completed": {"BOOL": bool(r.completed[i])},
                    "origin": {"S": f"{origin}:{int(r.lines[i])}"},
                }
                for field in ("bitrate_kbps", "buffering_ms"):
                    v = int(r.numbers[field][i])
                    if v >= 0:
                        item[field] = {"N": str(v)}
                items.append(item)
            batch_write(ddb, table, items)
            inserted += len(items)
        return inserted

    return write


def cmd_ingest(args) -> int:
    key_secret = bytes.fromhex(os.environ["STREAMCUBE_PSEUDONYM_KEY"].strip())
    s3, ddb = client("s3"), client("dynamodb")
    for name in args.files:
        source = Path(name)
        started = time.perf_counter()
        key = f"events/{source.name}"
        s3.upload_file(str(source), args.bronze_bucket, key)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / source.name
            s3.download_file(args.bronze_bucket, key, str(path))
            r = bronze_pandas.ingest_file(
                path,
                key_secret,
                dynamo_writer(ddb, args.silver_table),
                S3Lake(s3, args.lake_bucket, args.lake_prefix),
            )
        bronze_pandas.print_report("boto3 job", r, time.perf_counter() - started)
    return 0


def cmd_same_items(args) -> int:
    """A sample of the embedded run's event ids, read back from both tables: the same items."""
    ddb = client("dynamodb")
    with sqlite3.connect(f"file:{args.embedded_db}?mode=ro", uri=True) as con:
        ids = [r[0] for r in con.execute("SELECT event_id FROM silver_events ORDER BY seq")]
    ids = random.Random(7).sample(ids, min(args.sample, len(ids)))
    differ = missing = 0
    for event_id in ids:
        key = {"event_id": {"S": event_id}}
        a = ddb.get_item(TableName=args.streamcube_table, Key=key, ConsistentRead=True).get("Item")
        b = ddb.get_item(TableName=args.table, Key=key, ConsistentRead=True).get("Item")
        if a is None or b is None:
            missing += 1
        elif a != b:
            differ += 1
            if differ <= 3:
                print(f"    {event_id}: streamcube {a}\n    {' ' * len(event_id)}  boto3 {b}")
    same = differ == 0 and missing == 0
    benchlib.verdict(
        same,
        f"{len(ids)} sampled items identical in both tables ({differ} differ, {missing} missing)",
    )
    return 0 if same else 1


def main() -> int:
    p, sub = benchlib.commands(__doc__)
    i = benchlib.command(sub, "ingest", cmd_ingest)
    i.add_argument("--bronze-bucket", required=True)
    i.add_argument("--lake-bucket", required=True)
    i.add_argument("--lake-prefix", default="python/")
    i.add_argument("--silver-table", required=True)
    i.add_argument("files", nargs="+")
    c = benchlib.command(sub, "same-items", cmd_same_items)
    c.add_argument("--table", required=True, help="the boto3 job's silver table")
    c.add_argument("--streamcube-table", required=True)
    c.add_argument("--embedded-db", required=True, help="the embedded run's streamcube.db")
    c.add_argument("--sample", type=int, default=200)
    return benchlib.run(p)


if __name__ == "__main__":
    sys.exit(main())
