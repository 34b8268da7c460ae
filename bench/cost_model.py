#!/usr/bin/env python3
"""cost_model.py: what streamcube costs on AWS per month, for a few daily event volumes.

    python3 bench/cost_model.py                 # 1M, 10M and 100M events a day
    python3 bench/cost_model.py --volumes 5e6 --mix 1,0,0 --queries-per-day 50000
    python3 bench/cost_model.py --help          # every assumption is an option

Prints Markdown: the monthly bill by component for each volume; the consolidation as deployed
(stream-marker marks the hours the silver stream changed, cube-consolidator publishes them on its
schedule)
next to other ways of doing it (the same every hour, an AWS Glue job hourly or daily); the
per-event and per-run units the figures come from; the assumptions. Standard library only; nothing is measured or called here.

Where the numbers come from (each constant below says which):
  - prices: AWS public list prices for us-east-1 (PRICES_AS_OF);
  - resource use: read off template.yaml, shared/aws/src/*.rs and shared/pipeline/src/*.rs;
  - CPU and data sizes: measured with bench/*.sh on the project's 2-core build machine, used as
    local proxies for what a Lambda function spends (they are not Lambda measurements);
  - latencies of DynamoDB, S3 and Glue calls, traffic, Glue job throughput: assumptions, each a
    command-line option.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass, field, fields

# =================================================================================================
# Prices: us-east-1 public list prices (aws.amazon.com/<service>/pricing). Recheck before use.
# =================================================================================================
PRICES_AS_OF = "us-east-1 list prices as of 2026-01; DynamoDB on demand as cut on 2024-11-01"

LAMBDA_GB_S = {  # aws.amazon.com/lambda/pricing, first 6 billion GB-s a month (arm64: 7.5)
    "arm64": 0.0000133334,
    "x86_64": 0.0000166667,
}
LAMBDA_PER_REQUEST = 0.20 / 1e6  # aws.amazon.com/lambda/pricing
APIGW_HTTP_PER_REQUEST = 1.00 / 1e6  # API Gateway HTTP API, first 300 million requests a month
APIGW_METERING_BYTES = 512 * 1024  # HTTP API meters in 512 KB steps (a bigger request counts 2)
DDB_PER_WRU = 0.625 / 1e6  # DynamoDB on-demand write request unit (1.25 before 2024-11-01)
DDB_PER_RRU = 0.125 / 1e6  # DynamoDB on-demand read request unit (0.25 before 2024-11-01)
DDB_STORAGE_GB_MONTH = 0.25  # DynamoDB Standard table class, tables and indexes
DDB_PITR_GB_MONTH = 0.20  # point-in-time recovery (continuous backups), per GB of table data
DDB_EXPORT_PER_GB = 0.10  # export to S3; incremental export per GB of changed data processed
# DynamoDB Streams: the GetRecords calls of a Lambda event source mapping are free.
S3_GB_MONTH = 0.023  # S3 Standard, first 50 TB a month
S3_PER_PUT = 0.005 / 1000  # PUT, COPY, POST, LIST (each multipart call too)
S3_PER_GET = 0.0004 / 1000  # GET; DELETE and lifecycle expirations are free
GLUE_CATALOG_PER_REQUEST = 1.00 / 100_000  # Glue Data Catalog requests beyond the free million
GLUE_DPU_HOUR = 0.44  # Glue ETL (Spark) job, per DPU-hour, billed per second
GLUE_MIN_BILLED_S = 60  # Glue 2.0 and later: a 1-minute minimum per job run
LOGS_INGEST_PER_GB = 0.50  # CloudWatch Logs, standard class, ingestion
LOGS_STORAGE_GB_MONTH = 0.03  # CloudWatch Logs storage (compressed)
XRAY_PER_TRACE = 5.00 / 1e6  # X-Ray, traces recorded
KMS_KEY_MONTH = 1.00  # a customer managed key (template: StreamcubeKey)
SECRET_MONTH = 0.40  # a Secrets Manager secret (template: PseudonymSecret)
ALARM_MONTH = 0.10  # a standard-resolution CloudWatch metric alarm

# Always-free monthly allowances (not the 12-month free tier), applied unless --no-free-tier.
FREE_LAMBDA_GB_S = 400_000
FREE_LAMBDA_REQUESTS = 1_000_000
FREE_DDB_STORAGE_GB = 25
FREE_GLUE_CATALOG_REQUESTS = 1_000_000
FREE_LOGS_GB = 5
FREE_XRAY_TRACES = 100_000

# =================================================================================================
# The template (template.yaml)
# =================================================================================================
MEMORY_MB = {  # MemorySize of each function (Globals: 512)
    "ingest-api": 512,
    "kafka-ingest": 512,
    "bronze-processor": 1024,
    "cube-consolidator": 8192,  # ConsolidatorMemorySize's default
    "stream-marker": 256,  # StreamMarkerFunction: cube-consolidator's binary for the stream
    "cube-query": 1024,
}
CONSOLIDATOR_TIMEOUT_S = 900  # CubeConsolidatorFunction Timeout (the Lambda limit)
LAMBDA_MAX_TIMEOUT_S = 900  # the Lambda limit (bronze-processor's Timeout)
STREAM_BATCH_SIZE = 1000  # SilverStream BatchSize
STREAM_WINDOW_S = 30  # SilverStream MaximumBatchingWindowInSeconds (ParallelizationFactor 1)
SCHEDULE_MINUTES = 15  # ConsolidationSchedule default: rate(15 minutes)
CHANGE_SETTLE_S = 60  # shared/aws/src/changes.rs DEFAULT_SETTLE: a fresher hour is run again
KAFKA_BATCH_SIZE = 500  # Msk BatchSize
KAFKA_WINDOW_S = 5  # Msk MaximumBatchingWindowInSeconds
RETENTION_DAYS = 395  # RetentionDays: silver TTL on expires_at
BRONZE_RETENTION_DAYS = 30  # BronzeRetentionDays
REPORT_RETENTION_DAYS = 90  # ReportRetentionDays
QUARANTINE_RETENTION_DAYS = 30  # QuarantineRetentionDays
LAKE_NONCURRENT_DAYS = 7  # LakeBucket: versioned, NoncurrentVersionExpiration 7 days
LOG_RETENTION_DAYS = 30  # LogRetentionDays
ALARMS = 15  # CloudWatch alarms without Kafka
ALARMS_KAFKA = 3  # ... and three more with MskClusterArn
API_TIMEOUT_S = 30  # API Gateway HTTP API integration timeout (cube-query Timeout: 29)
# Tables: all PAY_PER_REQUEST with point-in-time recovery. Silver: key event_id; GSI by_hour
# (hour_shard, event_id) projecting ALL; GSI by_viewer (viewer, event_id) projecting `hour`;
# stream NEW_AND_OLD_IMAGES; TTL on expires_at. Cube table: pk/sk, no index, no TTL.
# Tracing: Active on every function. LoggingConfig: JSON, application INFO, system WARN (no
# START/END/REPORT lines).

# =================================================================================================
# The code (shared/aws/src, shared/pipeline/src)
# =================================================================================================
DDB_WRITE_BATCH = 25  # dynamo.rs WRITE_BATCH: items per BatchWriteItem
DDB_GET_BATCH = 100  # dynamo.rs GET_BATCH: keys per BatchGetItem
DDB_CONCURRENCY = 8  # dynamo.rs CONCURRENCY: batch calls in flight
PUT_CONCURRENCY = 32  # silver.rs PUT_CONCURRENCY: conditional PutItem in flight (API, Kafka)
HOUR_SHARDS = 16  # silver.rs HOUR_SHARDS: by_hour queries per hour read
API_MAX_EVENTS = 500  # http.rs MAX_EVENTS per POST /v1/events
FILE_WRITE_BATCH = 500  # config.rs write_batch: events per put_new_bulk
FILE_WRITE_CONCURRENCY = 4  # config.rs write_concurrency: put_new_bulk calls in flight
BLOCK_BYTES = 300_000  # gold.rs BLOCK_BYTES: largest cell block item
CUBOIDS = 16  # the default cube: every subset of country, device, genre, content_id
# gold.rs: blocks of the 8 cuboids that keep the country are split by country (the generator's
# 40 countries); measured: 328 blocks per day level of bench/out/store-month-3000000.
GOLD_PARTS = 8 + 8 * 40
# DynamoDB billing rules (developer guide, "read and write operations", "item sizes"):
DDB_ITEM_OVERHEAD = 100  # stored bytes added per item, in tables and in indexes
DDB_READ_UNIT = 4096  # bytes per read unit: strongly consistent 1, eventually consistent 0.5
DDB_WRITE_UNIT = 1024  # bytes per write unit; a delete is billed on the deleted item's size
DDB_PAGE_BYTES = 1 << 20  # a Query or Scan page reads at most 1 MB
DDB_PARTITION_WCU_S = 1000  # most write units a second one partition takes (on demand too)
CELL_SHARDS = 8  # shared/aws/src/gold.rs: a level's blocks go round-robin to 8 partition keys
CELL_PKS = CELL_SHARDS + 1  # ... and the deletes also look under the one key of older blocks
# gold.rs Written: once a level's blocks are written, its registry item records each part's block
# count ("009/001#3,", about 11 bytes a part), which readers get with a consistent GetItem; they
# then query, eventually consistent, only the shards holding blocks of the parts they want.
RECORD_BYTES = 60 + 11 * GOLD_PARTS
# consolidate.rs, one run of one day: manifest GetItem (consistent); the catalog Scan
# (consistent, each invocation: consolidate_changes loads it); per touched hour 16 by_hour queries
# (eventually consistent) and put_cells (registry PutItem, a keys-only Query of the new
# generation, BatchWriteItem of the blocks, the registry again with its record); per untouched
# hour the record (consistent GetItem) and an eventually consistent Query of its blocks per shard;
# the day's put_cells; the conditional manifest PutItem; CSV + Parquet PutObject; Glue
# GetPartition; a second manifest read (reexport_if_replaced); delete_generations of what the flip
# replaced (a consistent keys-only Query, billed on whole items, BatchWriteItem deletes billed on
# each deleted block's size, the registry DeleteItem); the orphan sweep (a consistent Query).
# Every block of one level and generation has the same partition key (gold.rs cells_pk).

# Silver item attributes (silver.rs DynamoSilver::item): name and value bytes. A number takes
# about (significant digits / 2 + 1) bytes. Lengths measured on generated data
# (bench/out/store-month-300000: event_id 36, content_id 7.0, device 4.34, viewer 32 bytes = 64
# hex digits).
SILVER_ATTRS = [
    ("event_id", 36),
    ("hour", 4),  # ~494,000 hours since the epoch
    ("hour_shard", 9),  # "<hour>#<0..15>"
    ("occurred_at", 8),  # 13-digit epoch milliseconds
    ("viewer", 64),  # hex of the HMAC pseudonym
    ("content_id", 7),
    ("device", 4.34),
    ("country", 2),
    ("watch_seconds", 3),
    ("bitrate_kbps", 3),
    ("buffering_ms", 3),
    ("completed", 1),
    ("expires_at", 6),  # 10-digit epoch seconds
]
OPTIONAL_PRESENT = 0.95  # bitrate_kbps and buffering_ms are absent on 5% of generated events
ORIGIN_BYTES = {  # `origin`: absent for the API; "kafka:<topic>:<partition>:<offset>" for Kafka;
    "api": 0,  # "<key>#<S3 version id>:<line>" for a file (a key of ~40 characters assumed)
    "kafka": 34,
    "file": 80,
}
BY_VIEWER_ITEM_BYTES = (6 + 64) + (8 + 36) + (4 + 4)  # viewer, event_id, the projected hour
CATALOG_ITEM_BYTES = 95  # content_id, title (~26 characters), genre, release_year, duration
LEDGER_ITEM_BYTES = 450  # ledger#<key>, v#<version>, report JSON (~85 B measured), processed_at

# =================================================================================================
# Measured on the project's 2-core build machine (AMD EPYC, shared): local proxies only
# =================================================================================================
# bench/cube_vs_duckdb.sh: `streamcube cube --threads 2`, 1,000,000 events in 2.64 s (an earlier
# run): validation + pseudonymization + cube on 2 threads, ~5.3 us of CPU per event.
# Kept from the run before the cube rolled coarse cuboids up from finer ones (1.84 s since): the
# CPU figure, a small part of the bill, is on the high side.
CUBE_CPU_US_PER_EVENT = 2.64e6 * 2 / 1_000_000
# bench/bronze_aws.sh (2026-12-05): 1,000,000 rows through the AWS adapters against the local
# emulator in 40.7 s of streamcube's CPU: reading, validation and pseudonymization, and the SDK's
# work for each item (serializing, signing, HTTP), the command's upload of the file included.
# Taken for every ingest path: a floor for the API and Kafka, whose conditional PutItem per event
# is a request of its own.
INGEST_CPU_US_PER_EVENT = 40.7e6 / 1_000_000
# bench/consolidate.sh (2026-12-05, this build): a day of 2,400,000 events consolidated with its
# day level and exports on the embedded backend in 12.3 to 13.9 s of CPU in five runs (the
# whole command, the viewer index after publication included; 15.0 to 15.7 s before the
# consolidation read only the cube's columns of silver, when a day of 10,000,000 took 51.3 s).
# A profile of the day (docs/performance.md, Consolidation) puts 37% of it on reading silver,
# building the hour cubes and indexing viewers, which follow the events recomputed (counted at
# CUBE_CPU_US_PER_EVENT, which also reads, validates and pseudonymizes, for the SDK's reads);
# the rest, merging the hours, encoding and writing gold and the exports, is taken to scale
# with the gold bytes handled. The slowest run is taken.
CONSOLIDATE_CPU_S = 13.9
CONSOLIDATE_REF_EVENTS = 2_400_000
CONSOLIDATE_GOLD_SHARE = 0.63
# bench/consolidate.sh (2026-12-05): peak own memory (RssAnon) of a day consolidated with its
# day level and exports on the embedded backend: 698 to 722 MB for 2,400,000 events (three
# runs), 1,573 MB for 10,000,000, 2,705 MB for 30,000,000 and 4,032 MB for 60,000,000 (one run
# each); and of the run closing a day of 99,500,084 events (2026-12-06, prepared with
# consolidate.sh's steps for --closing: its last hour recomputed, 23 read back): 5,108 MB,
# sampled each second. What grows is the day level's cells (with their viewer sketches) and the
# exports held until the flip: a closing run is taken to follow the day level's bytes
# (gold_bytes), on straight lines between the days (the whole days, which held 1 to 12% more
# than closing runs of the same size, on the high side), and beyond the last on its slope.
CLOSING_MEMORY_POINTS = [(2_400_000, 722e6), (10_000_000, 1_573e6), (30_000_000, 2_705e6),
                         (60_000_000, 4_032e6), (99_500_084, 5_108e6)]
# bench/consolidate_hour.sh (2026-12-05): a scheduled run recomputing one hour of the open day
# (hours only, as the runs before the closing one), peak own memory (RssAnon) for hours of
# 99,494, 994,937 and 2,984,742 events: 55, 233 and 469 MiB (160,551, 608,682 and 1,026,382
# hour cells), and (2026-12-06, `--events 9300000 --runs 1`) 1,053 MiB for 9,252,994 events
# (1,563,772 cells), about the busiest hour of a 100M-event day. The hour is read in parts
# (SilverStore::hour_parts), so what grows is its cube (cells with their viewer sketches) and
# 32 bytes of facts an event: 124 bytes an event from 1M to 3M, 98 from 3M to 9.3M.
# Interpolated between the points; beyond the last, its slope (cells grow more slowly than
# events, so that overstates). A run builds two hours at a time, taken as one hour
# of both hours' events. On the AWS backend against the local emulator, a day whose 59,695
# events all fall in one hour (its hour and day levels, its exports) peaked at 114 MB.
HOUR_MEMORY_POINTS = [(99_494, 55 * 2**20), (994_937, 233 * 2**20), (2_984_742, 469 * 2**20),
                      (9_252_994, 1_053 * 2**20)]
# bench/query_latency.sh: answers p50 7-29 ms over HTTP on the embedded backend.
QUERY_LOCAL_MS = 25
# shared/pipeline/src/query.rs: days read at once, at most, the memory their cells may take,
# and the hour levels of a day read at once.
DAY_READS = 8
READ_AHEAD_BYTES = 128 << 20
HOUR_READS = 8
# A day's cells in memory against their encoded bytes, at most about twice: 136 bytes a cell
# (coordinates, measures, a sketch holding up to two viewers inline) against 82 to 202 encoded
# (gold_bytes / level_cells from 100,000 to 10M events), a sparse sketch 8 bytes a viewer in
# both, a dense one 16 KiB of registers against 12 KiB.
QUERY_MEMORY_PER_BYTE = 2.0
# The dashboard queries of bench/query_latency.sh, taken as the query mix: (query, days read,
# share of a day's day-level block bytes it reads). Shares measured per cuboid in
# bench/out/store-month-300000 (day level); denser data moves bytes towards the title cuboids.
# The top 10 reads BR's part of its cuboid only (blocks split by country): 17.5% of the
# cuboid's bytes in bench/out/store-month-3000000, so 0.0929 * 0.175.
QUERY_MIX = [
    ("trend: 30-day daily plays and unique viewers, cuboid {}", 30, 0.0060),
    ("top10: top 10 titles in BR over 7 days, BR's part of {country, content_id}", 7, 0.0163),
    ("breakdown: one day by country, device and genre", 1, 0.0583),
]
# Gold block bytes per event of one level (a day or an hour) holding N events. Every cell carries
# its unique-viewers sketch (exact, 8 bytes per viewer up to 1,536 viewers, then 12 KiB), so the
# bytes follow (viewer, cell) pairs and shrink per event as the data gets denser and the cells
# fill up (the generator has 200,000 viewers and 5,000 titles). Measured levels, encoded bytes
# (`consolidate.py cells`, its "levels"):
#   N = 9,948: bench/out/store-month-300000, day level, 61,973,174 bytes for 298,435 events in
#     30 days = 207.7 bytes per event;
#   N = 103,075: one hour consolidated as its day (two identical levels); the database grew from
#     37,552,128 to 64,389,120 bytes: 130.2 bytes per event (the 2.4M-event day's hour 12 of
#     103,075 events: 129.9);
#   N = 896,456, 9,281,091 and 99,500,084: the quietest and busiest hours and the day level of
#     the 100M-event day closed after midnight (2026-12-06): 66,342,932, 341,515,600 and
#     1,650,234,996 bytes, 74.0, 36.8 and 16.6 bytes per event;
#   N = 2,277,143: the 2.4M-event day's day level without its last hour, 128,576,371 bytes (56.5).
# Straight lines in log(bytes per event) against log(N) between the points, the end slopes
# beyond them. (The power law through the first two, 130.2 * (N / 103,075) ** -0.20, which the
# model used before the larger days were measured, put 1.14x to 1.44x the bytes on the 100M
# day's hours and 1.99x on its day level; --gold-exponent E uses that law with power E, and
# --gold-exponent 0 keeps 130.2 bytes per event at every size.)
GOLD_REF_EVENTS = 103_075
GOLD_REF_BYTES_PER_EVENT = (64_389_120 - 37_552_128) / 2 / 103_075
GOLD_POINTS = [(9_948, 207.66), (GOLD_REF_EVENTS, GOLD_REF_BYTES_PER_EVENT),
               (896_456, 66_342_932 / 896_456), (2_277_143, 128_576_371 / 2_277_143),
               (9_281_091, 341_515_600 / 9_281_091), (99_500_084, 1_650_234_996 / 99_500_084)]
# gold.rs stores each block compressed (Zstandard level 3, ZSTD_LEVEL). Stored / encoded bytes,
# each level's blocks compressed one by one (`zstd -3`): on the SQLite store of a day of
# 2,400,000 generated events (`streamcube demo --events 2400000 --days 1`), the 24 hour levels
# (100,000 events each on average) 277.05 -> 191.67 MB and the day level 117.57 -> 61.48 MB;
# on the 100M-event day, its busiest hour (9,281,091 events) 341.5 -> 169.4 MB and its day
# level 1,650.2 -> 678.8 MB (its quietest hour, 896,456 events, 0.575, as the line between the
# first two puts it). Log-linear in a level's events between the points, held beyond them;
# --uncompressed-gold sets it to 1.
GOLD_STORED = ((100_000, 191.67 / 277.05), (2_400_000, 61.48 / 117.57),
               (9_281_091, 169_440_794 / 341_515_600), (99_500_084, 678_841_336 / 1_650_234_996))
# CPU of the compression on the build machine, `zstd -b3 -B300K` over those blocks (libzstd
# 1.5): 128 MB/s compressing, 982 MB/s decompressing (in microseconds per encoded byte).
ZSTD_COMPRESS_US_PER_BYTE = 1 / 128
ZSTD_DECOMPRESS_US_PER_BYTE = 1 / 982
# Cells per event of a level: 163,458 / 103,075 = 1.586 (hour-cells.json) and 995,184 / 298,435
# = 3.335 at 9,948 events (store-month): cells/event = 1.586 * (N / 103,075) ** -0.318, ...
CELLS_REF_PER_EVENT = 163_458 / 103_075
CELLS_EXPONENT = math.log(3.335 / CELLS_REF_PER_EVENT) / math.log(GOLD_REF_EVENTS / 9_948)
# ... at most the cells that can exist over the 16 cuboids with the generator's 40 countries,
# 5 devices, 12 genres + unknown, 5,000 titles + 250 outside the catalog (genre follows title).
MAX_CELLS_PER_LEVEL = (
    1 + 40 + 5 + 13 + 5250 + 40 * 5 + 40 * 13 + 40 * 5250 + 5 * 13 + 5 * 5250 + 5250
    + 40 * 5 * 13 + 40 * 5 * 5250 + 40 * 5250 + 5 * 5250 + 40 * 5 * 5250
)
CSV_BYTES_PER_DAY_CELL = 50.7  # store-month: 50,440,371 B of exports/*.csv / 995,184 day cells
PARQUET_BYTES_PER_CELL = 9.07  # store-month: 27,789,783 B of gold/*.parquet / 3,064,695 cells
BRONZE_CSV_BYTES_PER_EVENT = 100.7  # bench/out/data-bronze-1m: 100,707,340 B for 1M rows
BRONZE_GZ_BYTES_PER_EVENT = 46.8  # the same file gzipped: 46,785,584 B
EVENT_JSON_BYTES = 245  # one event in a POST body (events/http-post-events.json)
QUARANTINE_BYTES_PER_ROW = 300  # a refused row as JSON: raw text, line, reasons
REPORT_BYTES = 300  # reports/<key>.json (~270 B measured)
# Hour-of-day weights of the generator (shared/datagen/src/model.rs HOUR_WEIGHTS): quiet at
# night, an evening peak 2.2x the mean. They set how much of a day exists when a run happens.
HOUR_WEIGHTS = [
    3.0, 2.2, 1.6, 1.2, 1.0, 1.0, 1.4, 2.0, 2.8, 3.3, 3.8, 4.3, 4.8, 4.9, 4.8, 5.2, 5.8, 6.8,
    8.2, 9.6, 10.4, 10.0, 8.0, 5.2,
]

LAMBDA_MB_PER_VCPU = 1769  # Lambda gives a full vCPU at 1,769 MB, proportionally less below
INVOKE_OVERHEAD_S = 0.005  # per invocation outside the work modelled (assumption)
# bench/cold_start.sh (2026-12-06): cube-consolidator's release binary as stream-marker, on
# stream batches of 45 and 1,000 INSERT records (the embedded backend: the marks go to SQLite),
# the invocation itself from the first `invocation/next` to the answer posted, p50 of 20 cold
# starts each: (records, ms) below. A straight line through the two gives a batch's fixed CPU
# and each record's (parsing its JSON, mostly). On Lambda a batch adds its UpdateItems, one
# round in flight, and the CPU is divided by stream-marker's vCPU share.
MARK_SMALL, MARK_FULL = (45, 1.6), (1000, 23.8)
MARK_CPU_PER_RECORD_S = (MARK_FULL[1] - MARK_SMALL[1]) / (MARK_FULL[0] - MARK_SMALL[0]) / 1000
MARK_CPU_FIXED_S = MARK_SMALL[1] / 1000 - MARK_SMALL[0] * MARK_CPU_PER_RECORD_S
DAYS_PER_MONTH = 30.4


# =================================================================================================
# Options: assumptions about traffic, latencies and the Glue job
# =================================================================================================
def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n", 1)[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    a = p.add_argument
    a("--volumes", default="1e6,1e7,1e8", help="events a day, comma-separated")
    a("--mix", default="0.5,0.4,0.1",
      help="shares of events arriving by HTTP API, bronze files, Kafka (normalized)")
    a("--api-batch", type=int, default=API_MAX_EVENTS, help="events per POST /v1/events")
    a("--events-per-file", type=int, default=100_000, help="events per bronze file")
    a("--gzip-files", action="store_true", help="bronze files are .csv.gz")
    a("--file-span-hours", type=int, default=1,
      help="hours of events a bronze file holds (it lands when they are over)")
    a("--kafka-pollers", type=int, default=1,
      help="Kafka partitions polled at once, sharing the Kafka traffic")
    a("--duplicate-rate", type=float, default=0.005, help="resent events (generator: 0.5%%)")
    a("--reject-rate", type=float, default=0.001, help="refused rows (bronze bench: 0.1%%)")
    a("--queries-per-day", type=float, default=10_000,
      help="GET /v1/cube requests a day, an even mix of QUERY_MIX")
    a("--titles", type=int, default=5000, help="catalog size (the generator's default)")
    a("--retention-days", type=int, default=RETENTION_DAYS, help="silver TTL (RetentionDays)")
    a("--gold-days", type=int, default=None,
      help="days of gold kept (gold has no TTL; default: --retention-days)")
    a("--architecture", choices=sorted(LAMBDA_GB_S), default="arm64")
    a("--consolidator-memory", type=int, default=MEMORY_MB["cube-consolidator"],
      help="MB for cube-consolidator (ConsolidatorMemorySize, 1024 to 10240)")
    a("--schedule-minutes", type=int, default=SCHEDULE_MINUTES,
      help="minutes between scheduled consolidations (ConsolidationSchedule; divides 60)")
    a("--stream-shards", type=int, default=None,
      help="silver stream shards (default: silver partitions at steady state, "
           "max(4, stored GB / 10))")
    a("--index-rereads", type=float, default=0.0,
      help="extra reads of an hour per run (the code reads each once; an hour changed within "
           "the settle time is read again by the next run, which the model counts)")
    a("--gold-exponent", type=float, default=None,
      help="gold bytes per event as the power law 130.2 B x (events / 103,075) ^ -E instead "
           "of the measured levels (0: 130 B per event at every size)")
    a("--uncompressed-gold", action="store_true",
      help="cell blocks stored as encoded, as before their compression")
    a("--ddb-single-ms", type=float, default=6,
      help="one GetItem, PutItem or DeleteItem (assumption)")
    a("--ddb-batch-ms", type=float, default=10,
      help="one BatchWriteItem of 25 items or BatchGetItem of 100 keys (assumption)")
    a("--ddb-page-ms", type=float, default=30, help="one 1 MB Query or Scan page (assumption)")
    a("--s3-request-ms", type=float, default=30, help="one S3 request (assumption)")
    a("--s3-mb-per-s", type=float, default=80, help="one S3 stream (assumption)")
    a("--glue-api-ms", type=float, default=40, help="one Glue Data Catalog call (assumption)")
    a("--log-line-bytes", type=float, default=350,
      help="a JSON application log line or API access log line (assumption)")
    a("--logs-compression", type=float, default=0.15,
      help="stored / ingested size of CloudWatch Logs (assumption)")
    a("--xray-reservoir-per-s", type=float, default=1.0, help="X-Ray default sampling rule")
    a("--xray-rate", type=float, default=0.05, help="X-Ray default sampling rule")
    a("--glue-dpus", type=float, default=2,
      help="Glue job DPUs (G.1X workers, at least 2: a driver and an executor)")
    a("--glue-rows-per-s", type=float, default=50_000,
      help="rows one Glue executor (4 vCPU) aggregates into the 16-cuboid cube per second "
           "(assumption; DuckDB does ~240,000/s on 2 threads)")
    a("--glue-fixed-s", type=float, default=30,
      help="billed seconds of a Glue run besides the aggregation: Spark start, listing, "
           "Parquet commit (assumption)")
    a("--glue-s3-requests", type=float, default=50,
      help="S3 requests of one Glue run (assumption)")
    a("--no-free-tier", action="store_true", help="ignore the always-free monthly allowances")
    args = p.parse_args(argv)
    if args.schedule_minutes <= 0 or 60 % args.schedule_minutes:
        p.error("--schedule-minutes must divide 60 (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30, 60)")
    if not 1024 <= args.consolidator_memory <= 10240:
        p.error("--consolidator-memory must be within 1024 and 10240 (ConsolidatorMemorySize)")
    # One model per process: the functions below read the memory sizes from MEMORY_MB.
    MEMORY_MB["cube-consolidator"] = args.consolidator_memory
    args.volumes = [float(v) for v in args.volumes.split(",") if v.strip()]
    mix = [float(x) for x in args.mix.split(",")]
    if len(mix) != 3 or sum(mix) <= 0 or min(mix) < 0:
        p.error("--mix takes three non-negative shares: api,files,kafka")
    args.mix = {k: v / sum(mix) for k, v in zip(("api", "file", "kafka"), mix)}
    if args.gold_days is None:
        args.gold_days = args.retention_days
    return args


# =================================================================================================
# Sizes
# =================================================================================================
def silver_item_bytes(path: str) -> float:
    """The size DynamoDB computes for one silver item (attribute names + values)."""
    size = 0.0
    for name, value in SILVER_ATTRS:
        present = OPTIONAL_PRESENT if name in ("bitrate_kbps", "buffering_ms") else 1.0
        size += (len(name) + value) * present
    if ORIGIN_BYTES[path]:
        size += len("origin") + ORIGIN_BYTES[path]
    return size


def gold_bytes(events: float, a: argparse.Namespace) -> float:
    """Bytes of the cell blocks of one level (an hour or a day) holding `events` events."""
    if events <= 0:
        return 0.0
    if a.gold_exponent is not None:
        return events * GOLD_REF_BYTES_PER_EVENT * (events / GOLD_REF_EVENTS) ** -a.gold_exponent
    return events * log_log_interpolated(GOLD_POINTS, events)


def segment(points: list[tuple[float, float]], x: float):
    """The two neighbouring `points` (sorted by x) around x: the first two below them, the last
    two beyond them."""
    return next(((p, q) for p, q in zip(points, points[1:]) if x <= q[0]),
                (points[-2], points[-1]))


def log_log_interpolated(points: list[tuple[float, float]], x: float) -> float:
    """y at x on straight lines through `points` (sorted by x) in log-log, end slopes beyond."""
    (x0, y0), (x1, y1) = segment(points, x)
    slope = math.log(y1 / y0) / math.log(x1 / x0)
    return y0 * (x / x0) ** slope


def gold_stored(events: float, a: argparse.Namespace) -> float:
    """Bytes of those blocks as DynamoDB stores them (compressed): what storage, writes, reads
    and their waits are billed and timed on. CPU stays on gold_bytes."""
    if a.uncompressed_gold:
        return gold_bytes(events, a)
    pts = GOLD_STORED
    n = min(max(events, pts[0][0]), pts[-1][0])
    (n0, r0), (n1, r1) = segment(pts, n)
    return gold_bytes(events, a) * (r0 + (r1 - r0) * math.log(n / n0) / math.log(n1 / n0))


def level_cells(events: float) -> float:
    if events <= 0:
        return 0.0
    cells = events * CELLS_REF_PER_EVENT * (events / GOLD_REF_EVENTS) ** -CELLS_EXPONENT
    return min(cells, MAX_CELLS_PER_LEVEL)


def hour_run_bytes(events: float) -> float:
    """Own memory of a run recomputing hours of `events` events in all (HOUR_MEMORY_POINTS)."""
    pts = HOUR_MEMORY_POINTS
    if events <= pts[0][0]:
        return pts[0][1]
    (e0, m0), (e1, m1) = segment(pts, events)
    return m0 + (m1 - m0) * (events - e0) / (e1 - e0)


def closing_run_bytes(events: float, a: argparse.Namespace) -> float:
    """Own memory of the run closing a day of `events` events (CLOSING_MEMORY_POINTS)."""
    pts = [(gold_bytes(e, a), m) for e, m in CLOSING_MEMORY_POINTS]
    g = gold_bytes(events, a)
    (g0, m0), (g1, m1) = segment(pts, g)
    return max(0.0, m0 + (m1 - m0) * (g - g0) / (g1 - g0))


def vcpu(memory_mb: int) -> float:
    return min(1.0, memory_mb / LAMBDA_MB_PER_VCPU)


def profile() -> list[float]:
    total = sum(HOUR_WEIGHTS)
    return [w / total for w in HOUR_WEIGHTS]


# =================================================================================================
# Units: what an operation consumes
# =================================================================================================
@dataclass
class Units:
    wru: float = 0.0
    rru: float = 0.0
    s3_put: float = 0.0
    glue_calls: float = 0.0
    seconds: float = 0.0  # waiting on DynamoDB, S3 and Glue, as the code issues the calls
    export_bytes: float = 0.0  # CSV + Parquet written (each becomes a noncurrent version)

    def __add__(self, o: Units) -> Units:
        return Units(*(getattr(self, f.name) + getattr(o, f.name) for f in fields(self)))

    def scaled(self, k: float) -> Units:
        return Units(*(getattr(self, f.name) * k for f in fields(self)))


def single(a: argparse.Namespace, wru: float = 0, rru: float = 0, calls: int = 1) -> Units:
    """Single-item calls (GetItem, PutItem, DeleteItem, an empty Query), one after the other."""
    return Units(wru=wru, rru=rru, seconds=calls * a.ddb_single_ms / 1000)


def gold_write(nbytes: float, a: argparse.Namespace) -> Units:
    """BatchWriteItem of one level's blocks, puts or deletes (a delete is billed on the size of
    the block it removes). They are spread over CELL_SHARDS partition keys, each taking at most
    1,000 WRU a second."""
    if nbytes <= 0:
        return Units()
    items = max(GOLD_PARTS, math.ceil(nbytes / BLOCK_BYTES) + GOLD_PARTS / 2)
    wru = nbytes / DDB_WRITE_UNIT + items * 0.5  # each item rounds up to a whole KB
    calls = math.ceil(items / DDB_WRITE_BATCH)
    seconds = max(math.ceil(calls / DDB_CONCURRENCY) * a.ddb_batch_ms / 1000,
                  wru / (DDB_PARTITION_WCU_S * CELL_SHARDS))
    return Units(wru=wru, seconds=seconds)


def gold_keys(nbytes: float, a: argparse.Namespace) -> Units:
    """The keys of one level's blocks before they are deleted: a consistent keys-only Query under
    each of its partition keys, at once; each key's pages one after the other. Read units count
    whole items, and every Query at least one."""
    if nbytes <= 0:
        return single(a, rru=CELL_PKS)
    pages = math.ceil(nbytes / DDB_PAGE_BYTES / CELL_SHARDS)
    return Units(rru=nbytes / DDB_READ_UNIT + CELL_SHARDS * 0.5 + 1,
                 seconds=pages * a.ddb_page_ms / 1000)


def record_read(a: argparse.Namespace) -> Units:
    """The registry's record of a level's blocks: a consistent GetItem."""
    return single(a, rru=math.ceil(RECORD_BYTES / DDB_READ_UNIT))


def gold_read(nbytes: float, a: argparse.Namespace) -> Units:
    """The cells of one level (gold.cells): the record, then an eventually consistent Query of
    each shard holding blocks, at once; each shard's pages one after the other. Each Query rounds
    up to a whole read unit (half a unit eventually consistent): a quarter unit on average."""
    queries = min(CELL_SHARDS, max(1, math.ceil(nbytes / BLOCK_BYTES)))
    pages = max(1, math.ceil(nbytes / DDB_PAGE_BYTES / CELL_SHARDS))
    return record_read(a) + Units(rru=0.5 * nbytes / DDB_READ_UNIT + queries * 0.25,
                                  seconds=pages * a.ddb_page_ms / 1000)


def silver_hour_read(events: float, item_bytes: float, a: argparse.Namespace) -> Units:
    """SilverStore::hour_events: 16 by_hour queries (eventually consistent, 8 in flight)."""
    nbytes = events * item_bytes
    pages = max(HOUR_SHARDS, math.ceil(nbytes / DDB_PAGE_BYTES) + HOUR_SHARDS / 2)
    reads = 1 + a.index_rereads
    return Units(
        rru=(0.5 * nbytes / DDB_READ_UNIT + HOUR_SHARDS * 0.25) * reads,
        seconds=reads * math.ceil(pages / DDB_CONCURRENCY) * a.ddb_page_ms / 1000,
    )


def s3_put(nbytes: float, a: argparse.Namespace) -> Units:
    return Units(s3_put=1, export_bytes=nbytes,
                 seconds=a.s3_request_ms / 1000 + nbytes / (a.s3_mb_per_s * 1e6))


@dataclass
class Run:
    """One consolidation of one day."""
    units: Units
    cpu_s: float  # CPU seconds, at the build machine's speed

    def lambda_seconds(self) -> float:
        return self.units.seconds + self.cpu_s / vcpu(MEMORY_MB["cube-consolidator"])


def consolidation_run(
    touched: list[tuple[float, float]],
    day_events: float,
    untouched: list[float],
    item_bytes: float,
    a: argparse.Namespace,
    build: bool = True,
    replaces_day: bool = True,
) -> Run:
    """consolidate_day as the code runs it. touched: for each recomputed hour, the events silver
    holds for it and those of its previous generation (0: none); day_events: the day as published;
    untouched: the events of each hour read back from gold. build: the day level is built
    (DayLevel::Build; otherwise only the touched hours are written, untouched must be empty);
    replaces_day: the manifest it replaces has a day level, whose blocks are deleted."""
    catalog = a.titles * CATALOG_ITEM_BYTES
    u = Units(rru=catalog / DDB_READ_UNIT,  # catalog.load(): a consistent Scan, every invocation
              seconds=max(1, math.ceil(catalog / DDB_PAGE_BYTES)) * a.ddb_page_ms / 1000)
    u += single(a, rru=1)  # the manifest
    read_events = gold_in = gold_out = 0.0
    for events, previous in touched:
        read_events += events
        u += silver_hour_read(events, item_bytes, a)
        # registry PutItem, the Queries of the new generation's keys (a repeat replaces), the
        # registry again with the record of the blocks
        u += single(a, wru=1 + math.ceil(RECORD_BYTES / DDB_WRITE_UNIT), rru=CELL_PKS, calls=3)
        gold_out += gold_bytes(events, a)
        u += gold_write(gold_stored(events, a), a)
        if previous > 0:  # the hour's replaced generation
            old = gold_stored(previous, a)
            u += gold_keys(old, a) + gold_write(old, a) + single(a, wru=1)
    for events in untouched:  # gold.cells of each untouched hour, one after the other
        gold_in += gold_bytes(events, a)
        u += gold_read(gold_stored(events, a), a)
    if build:
        day_blocks = gold_stored(day_events, a)
        gold_out += gold_bytes(day_events, a)
        u += (single(a, wru=1 + math.ceil(RECORD_BYTES / DDB_WRITE_UNIT), rru=CELL_PKS, calls=3)
              + gold_write(day_blocks, a))
    u += single(a, wru=1)  # the conditional manifest PutItem
    if build:
        day_cells = level_cells(day_events)
        hour_cells = (sum(level_cells(e) for e in untouched)
                      + sum(level_cells(e) for e, _ in touched))
        u += s3_put(day_cells * CSV_BYTES_PER_DAY_CELL, a)
        u += s3_put((day_cells + hour_cells) * PARQUET_BYTES_PER_CELL, a)
        u += Units(glue_calls=1, seconds=a.glue_api_ms / 1000)  # GetPartition
        u += single(a, rru=1)  # reexport_if_replaced: the manifest again
    if build and replaces_day and day_events > read_events:  # the day's replaced generation
        old = gold_stored(day_events - read_events + sum(p for _, p in touched), a)
        u += gold_keys(old, a) + gold_write(old, a) + single(a, wru=1)
    u += single(a, rru=1)  # sweep_orphans: the registry
    # CPU: the cube of the recomputed hours from their events, and what scales with the gold
    # handled, calibrated on the measured day (which wrote 24 hour levels and the day level).
    ref = CONSOLIDATE_REF_EVENTS
    ref_gold = gold_bytes(ref, a) + sum(gold_bytes(ref * x, a) for x in profile())
    us_per_byte = CONSOLIDATE_GOLD_SHARE * CONSOLIDATE_CPU_S * 1e6 / ref_gold
    cpu_s = (read_events * CUBE_CPU_US_PER_EVENT + (gold_in + gold_out) * us_per_byte) / 1e6
    if not a.uncompressed_gold:  # the calibration day was measured on uncompressed blocks
        cpu_s += (gold_out * ZSTD_COMPRESS_US_PER_BYTE
                  + gold_in * ZSTD_DECOMPRESS_US_PER_BYTE) / 1e6
    return Run(units=u, cpu_s=cpu_s)


# =================================================================================================
# The ingest paths
# =================================================================================================
@dataclass
class Path:
    events: float
    invocations: float
    seconds: float  # per invocation
    gb_s: float
    wru: float
    rru: float
    api_requests: float = 0.0
    s3_put: float = 0.0
    s3_get: float = 0.0
    files: float = 0.0


def ingest_paths(E: float, a: argparse.Namespace) -> dict[str, Path]:
    """A day of E events through the HTTP API, Kafka and bronze files."""
    new, dup = 1 - a.duplicate_rate, a.duplicate_rate
    out = {}
    # HTTP API: put_new, a conditional PutItem per event, 32 in flight. A new event writes the
    # item, its by_hour entry and its by_viewer entry: 3 WRU; a duplicate fails the condition: 1.
    ev = E * a.mix["api"]
    req = ev / a.api_batch
    s = (INVOKE_OVERHEAD_S
         + a.api_batch * INGEST_CPU_US_PER_EVENT / 1e6 / vcpu(MEMORY_MB["ingest-api"])
         + math.ceil(a.api_batch / PUT_CONCURRENCY) * a.ddb_single_ms / 1000)
    meter = math.ceil(a.api_batch * EVENT_JSON_BYTES / APIGW_METERING_BYTES)
    out["api"] = Path(ev, req, s, req * s * MEMORY_MB["ingest-api"] / 1024,
                      wru=ev * (3 * new + dup), rru=0.0, api_requests=req * meter)
    # Kafka: the same writes; a batch is 500 records or what 5 s bring to one poller.
    ev = E * a.mix["kafka"]
    batch = min(KAFKA_BATCH_SIZE, max(1.0, ev / 86400 * KAFKA_WINDOW_S / max(1, a.kafka_pollers)))
    inv = ev / batch
    s = (INVOKE_OVERHEAD_S
         + batch * INGEST_CPU_US_PER_EVENT / 1e6 / vcpu(MEMORY_MB["kafka-ingest"])
         + math.ceil(batch / PUT_CONCURRENCY) * a.ddb_single_ms / 1000)
    out["kafka"] = Path(ev, inv, s, inv * s * MEMORY_MB["kafka-ingest"] / 1024,
                        wru=ev * (3 * new + dup), rru=0.0,
                        s3_put=inv * (1 - (1 - a.reject_rate) ** batch))  # quarantine object
    # Bronze files: BatchGetItem first (consistent: 1 RRU per key, found or not), then
    # BatchWriteItem of the new events (3 WRU each). Per file: the ledger's GetItem and PutItem,
    # the object GET, the stored report GET (remove_stale_quarantine), the report PUT, a
    # quarantine PUT when a row is refused, the client's PUT into bronze.
    ev = E * a.mix["file"]
    files = ev / a.events_per_file
    per_chunk = (math.ceil(math.ceil(FILE_WRITE_BATCH / DDB_GET_BATCH) / DDB_CONCURRENCY)
                 + math.ceil(math.ceil(FILE_WRITE_BATCH / DDB_WRITE_BATCH) / DDB_CONCURRENCY)
                 ) * a.ddb_batch_ms / 1000
    io_per_event = per_chunk / FILE_WRITE_BATCH / FILE_WRITE_CONCURRENCY
    cpu_per_event = INGEST_CPU_US_PER_EVENT / 1e6 / vcpu(MEMORY_MB["bronze-processor"])
    s = (INVOKE_OVERHEAD_S + 2 * a.ddb_single_ms / 1000 + 4 * a.s3_request_ms / 1000
         + a.events_per_file * max(io_per_event, cpu_per_event))
    parts = max(1, math.ceil(s / (LAMBDA_MAX_TIMEOUT_S - 60)))  # self-continued invocations
    out["file"] = Path(ev, files * parts, s, files * s * MEMORY_MB["bronze-processor"] / 1024,
                       wru=ev * 3 * new + files * math.ceil(LEDGER_ITEM_BYTES / DDB_WRITE_UNIT),
                       rru=ev + files,
                       s3_put=files * (2 + 1 - (1 - a.reject_rate) ** a.events_per_file),
                       s3_get=files * 2, files=files)
    return out


# =================================================================================================
# The consolidation: as deployed, on an hourly schedule, by a Glue job
# =================================================================================================
@dataclass
class Deployed:
    """cube-consolidator at one volume and schedule (figures per day)."""
    shards: int
    batches: float  # stream batches with changes, each marking its hours (an invocation each)
    ttl_only: float  # invocations holding only TTL expiries
    mark_s: float  # seconds of a batch that marks hours
    ttl_s: float  # seconds of a batch of TTL expiries only
    mark_wru: float  # the marks' write units
    run_s: float  # mean seconds per scheduled run
    longest_s: float
    runs: float  # scheduled runs
    status: str
    per_run: Units  # mean units of a scheduled run
    gold_per_run: float
    read_per_run: float


def stream_shards(E: float, a: argparse.Namespace, item_bytes: float) -> int:
    """DynamoDB Streams has a shard per table partition; a partition holds at most 10 GB."""
    if a.stream_shards:
        return a.stream_shards
    stored = E * (1 - a.duplicate_rate) * a.retention_days * (item_bytes + DDB_ITEM_OVERHEAD)
    return max(4, math.ceil(stored / 10e9))


CLOSING = 24  # the closing run's place in the day: after its last hour
# consolidate.rs CLOSE_RETRY_SECS: a failed closing attempt is tried again this much later,
# and MAX_CLOSE_ATTEMPTS: attempts in all.
CLOSE_RETRY_S = 6 * 3600
MAX_CLOSE_ATTEMPTS = 3


def deployed(E: float, a: argparse.Namespace, shards: int, item_bytes: float,
             minutes: int) -> Deployed:
    """Every shard's stream batch (30 s window or 1,000 records) marks the hours it touched; every
    `minutes` a scheduled run recomputes the marked hours and publishes their day once, without
    its day level while the day is open (the current UTC day). The first run after midnight
    recomputes the day's last hour and builds the day level and exports (the closing run)."""
    w = profile()
    live = E * (a.mix["api"] + a.mix["kafka"])  # arrives as it happens
    windows = 86400 / STREAM_WINDOW_S
    files = E * a.mix["file"] / a.events_per_file
    p_live = 1 - math.exp(-live / shards / windows) if live else 0.0  # a window has an insert
    p_file = min(1.0, files / windows)  # a window has a file's rows (they reach every shard)
    p_any = 1 - (1 - p_live) * (1 - p_file)
    # At steady state the stream carries a TTL expiry per insert, which fills batches too.
    records = 2 * E * (1 - a.duplicate_rate)
    batches = max(shards * windows * p_any, records / STREAM_BATCH_SIZE if E else 0.0)
    ttl_only = shards * windows * (1 - p_any) * (1 - math.exp(-E / shards / windows))
    hours_per_batch = 1 + (p_file / p_any) * a.file_span_hours if p_any else 0.0
    mark_wru = batches * hours_per_batch  # an UpdateItem of a small item: 1 WRU
    # A TTL-only batch holds the expiries of a window without inserts (at least one); the other
    # batches share the rest of the records.
    lam = E / shards / windows if E else 0.0
    ttl_records = lam / (1 - math.exp(-lam)) if lam > 0 else 1.0
    mark_records = max(1.0, (records - ttl_only * ttl_records) / batches) if batches else 0.0
    marker_vcpu = vcpu(MEMORY_MB["stream-marker"])
    mark_s = (INVOKE_OVERHEAD_S + a.ddb_single_ms / 1000
              + (MARK_CPU_FIXED_S + mark_records * MARK_CPU_PER_RECORD_S) / marker_vcpu)
    ttl_s = (INVOKE_OVERHEAD_S
             + (MARK_CPU_FIXED_S + ttl_records * MARK_CPU_PER_RECORD_S) / marker_vcpu)

    n = 60 // minutes  # runs per hour
    # (hour of the day or CLOSING, run, gold bytes written, events recomputed)
    runs_at: list[tuple[int, Run, float, float]] = []
    total, secs = Units(), []
    gold_out = read = hours_mb = 0.0
    first_cut = first_late = None
    for h in range(24):
        live_h = live * w[h]
        for k in range(1, n + 1):
            # The live hour as arrived by the run (its previous generation from the run
            # before), and in the hour's first run the hours before it: the last hour again
            # (its last minute was too fresh to clear) and those a file just brought.
            touched = [(live_h * k / n, live_h * (k - 1) / n)] if live else []
            first = h
            if k == 1 and h > 0:
                span = a.file_span_hours if files else 0
                first = max(0, h - max(1, span))
                for j in range(first, h):
                    in_file = j >= h - span
                    prev = E * w[j] * (1 - a.mix["file"]) if in_file else E * w[j]
                    if j == h - 1 or in_file:
                        touched.append((E * w[j], prev))
            if not touched:
                continue
            day_events = sum(w[:h]) * E + live_h * k / n
            two = sum(sorted(e for e, _ in touched)[-2:])
            hours_mb = max(hours_mb, hour_run_bytes(two) / 1e6)
            run = consolidation_run(touched, day_events, [], item_bytes, a, build=False)
            runs_at.append((h, run, sum(gold_stored(e, a) for e, _ in touched),
                            sum(e for e, _ in touched)))
    # The closing run, in the next day's first minutes: the day's last hour once more (with
    # the file that brings it, if any), the 23 others read back, the day level and exports.
    closing_s = 0.0
    if E:
        last = E * w[23]
        run = consolidation_run([(last, last)], E, [E * x for x in w[:23]], item_bytes, a,
                                build=True, replaces_day=False)
        closing_s = run.lambda_seconds()
        runs_at.append((CLOSING, run, gold_stored(E, a) + gold_stored(last, a), last))
    # What the closing run holds in memory, against the function's memory size.
    closing_mb = closing_run_bytes(E, a) / 1e6 if E else 0.0
    out_of_memory = closing_mb > MEMORY_MB["cube-consolidator"]
    closing_cut = closing_s > CONSOLIDATOR_TIMEOUT_S or out_of_memory
    # Each day is tried MAX_CLOSE_ATTEMPTS times, CLOSE_RETRY_S apart: at steady state, that
    # many attempts a day (the hours they start in, for the runs they share).
    step = max(1, CLOSE_RETRY_S // 3600)
    retry_hours = set(range(step, 24, step)[:MAX_CLOSE_ATTEMPTS - 1])
    for h, run, written, recomputed in runs_at:
        s_, units = run.lambda_seconds(), run.units
        if closing_cut and h in retry_hours:
            # The day keeps no day level, so a run tries to close it again once the last
            # attempt is CLOSE_RETRY_S old, after its own work, until the timeout or the end of
            # the memory (taken as a whole closing run): spent for nothing. (The first attempt
            # is the closing run.)
            retry_hours.discard(h)
            cut = runs_at[-1][1]
            spent = min(closing_s, max(0.0, CONSOLIDATOR_TIMEOUT_S - s_))
            units = units + cut.units.scaled(spent / closing_s)
            s_ += spent
        if s_ > CONSOLIDATOR_TIMEOUT_S:  # killed at the timeout, having spent this much
            first_cut = h if first_cut is None else first_cut
            units = units.scaled(CONSOLIDATOR_TIMEOUT_S / s_)
            s_ = CONSOLIDATOR_TIMEOUT_S
        elif s_ > minutes * 60:
            first_late = h if first_late is None else first_late
        total += units
        secs.append(s_)
        gold_out += written
        read += recomputed
    runs = len(secs)
    run_s = sum(secs) / runs if runs else 0.0
    longest = max(secs, default=0.0)
    closing = f"; the closing run {closing_s:,.0f} s"
    memory = MEMORY_MB["cube-consolidator"]
    if hours_mb > memory:
        status = (f"fails: the busiest hours' runs need about {hours_mb:,.0f} MB, over the "
                  f"function's {memory:,} MB (and the closing run about {closing_mb:,.0f} MB)")
    elif closing_cut:
        longest_live = max((r.lambda_seconds() for h, r, *_ in runs_at if h != CLOSING),
                           default=0.0)
        why = (f"needs about {closing_mb:,.0f} MB, over the function's {memory:,} MB"
               if out_of_memory else
               f"takes {closing_s:,.0f} s, over the {CONSOLIDATOR_TIMEOUT_S} s timeout")
        status = (f"fails: the closing run (day level and exports) {why}, {MAX_CLOSE_ATTEMPTS} "
                  f"attempts {CLOSE_RETRY_S // 3600} h apart, then left (the hours are published: "
                  f"longest run {longest_live:,.0f} s)")
    elif first_cut is not None:
        status = (f"fails: runs from {first_cut:02d}:00 UTC hit the {CONSOLIDATOR_TIMEOUT_S} s "
                  "timeout")
    elif first_late is not None and first_late != CLOSING:
        status = (f"lags: runs from {first_late:02d}:00 UTC outlast the {minutes}-minute "
                  f"interval (longest {longest:,.0f} s){closing}")
    else:
        longest_live = max((r.lambda_seconds() for h, r, *_ in runs_at if h != CLOSING),
                           default=0.0)
        status = (f"keeps up: longest run {longest_live:,.0f} s of the {minutes * 60:,} s "
                  f"interval{closing} (memory: about {max(hours_mb, closing_mb):,.0f} MB of "
                  f"{memory:,})")
    k = 1 / runs if runs else 0.0
    return Deployed(shards, batches, ttl_only, mark_s, ttl_s, mark_wru, run_s, longest, runs,
                    status, total.scaled(k), gold_out * k, read * k)


def gold_load(E: float, a: argparse.Namespace, hourly: bool) -> Units:
    """Writing a cube computed elsewhere into the cube table's layout, so that cube-query answers
    from it: hourly, the finished hour's blocks, the day's blocks again and the old day's deleted;
    daily, 24 hours and the day once."""
    w = profile()
    u = Units()
    for h in range(24):
        u += gold_write(gold_stored(E * w[h], a), a)
        if hourly:
            old = gold_stored(sum(w[:h]) * E, a)
            u += gold_write(gold_stored(sum(w[: h + 1]) * E, a), a)
            u += gold_keys(old, a) + gold_write(old, a) + single(a, wru=4, rru=3)
    if not hourly:
        u += gold_write(gold_stored(E, a), a) + single(a, wru=26, rru=2)
    return u


def glue_runs(E: float, a: argparse.Namespace, hourly: bool) -> list[float]:
    """Seconds of each run of a Glue (Spark) job reading silver's incremental export: the new
    events become hour cubes; an hourly run also merges the day's hour cubes into the day."""
    w = profile()
    rate = a.glue_rows_per_s * max(1.0, a.glue_dpus - 1)  # one DPU is the driver
    if not hourly:
        return [a.glue_fixed_s + E / rate]
    return [a.glue_fixed_s + (E * w[h] + sum(level_cells(E * w[k]) for k in range(h + 1))) / rate
            for h in range(24)]


# =================================================================================================
# One volume
# =================================================================================================
@dataclass
class Bill:
    parts: dict[str, float] = field(default_factory=dict)

    def add(self, key: str, usd: float) -> None:
        self.parts[key] = self.parts.get(key, 0.0) + usd

    def total(self) -> float:
        return sum(self.parts.values())


def model(E: float, a: argparse.Namespace) -> dict:
    m = DAYS_PER_MONTH
    gb_s_price = LAMBDA_GB_S[a.architecture]
    items = {k: silver_item_bytes(k) for k in ("api", "file", "kafka")}
    item_bytes = sum(items[k] * a.mix[k] for k in items)
    w = profile()
    paths = ingest_paths(E, a)
    shards = stream_shards(E, a, item_bytes)
    cons = deployed(E, a, shards, item_bytes, a.schedule_minutes)
    cons_mem = MEMORY_MB["cube-consolidator"] / 1024
    marker_mem = MEMORY_MB["stream-marker"] / 1024

    # Lambda
    gb_s = sum(p.gb_s for p in paths.values())
    invocations = sum(p.invocations for p in paths.values())
    def cons_lambda(c: Deployed) -> tuple[float, float]:
        """GB-s and invocations a day: the scheduled runs and stream-marker's batches."""
        return (c.runs * c.run_s * cons_mem
                + (c.batches * c.mark_s + c.ttl_only * c.ttl_s) * marker_mem,
                c.runs + c.batches + c.ttl_only)
    cons_gb_s, cons_inv = cons_lambda(cons)
    # cube-query (query.rs): per day read, the manifest twice (consistent GetItem), then the
    # level's record of its blocks (consistent GetItem) and an eventually consistent Query of
    # each shard holding blocks of the cuboid (the top 10: of the country's part), at once
    # (gold_read). The first day is read alone; then up to DAY_READS days at once, as many as
    # READ_AHEAD_BYTES holds at the size of a day's cells in memory (QUERY_MEMORY_PER_BYTE of
    # the blocks' bytes), and each round waits for its slowest day.
    # Every query reaches the open day, its last, which has no day level: its hours published so
    # far are read instead, 8 at a time, each like a day level. Queries follow the traffic's
    # profile over the day, so a query at hour h reads the hours up to h.
    # Decompressing the blocks read is CPU on top of the local answer time, one day after the
    # other.
    unzip_s = 0.0 if a.uncompressed_gold else (
        ZSTD_DECOMPRESS_US_PER_BYTE / 1e6 / vcpu(MEMORY_MB["cube-query"]))
    hour_bytes = [gold_stored(E * x, a) for x in w]
    hour_raw = [gold_bytes(E * x, a) for x in w]
    single_s = a.ddb_single_ms / 1000
    q_rru, q_s = [], []
    for _name, days, share in QUERY_MIX:
        day_read = gold_read(gold_stored(E, a) * share, a)
        day_raw = gold_bytes(E, a) * share
        at_once = max(1, min(DAY_READS, int(READ_AHEAD_BYTES
                                            // max(1.0, day_raw * QUERY_MEMORY_PER_BYTE))))
        closed = days - 1
        closed_s = 2 * single_s + day_read.seconds
        open_rru = query_s = 0.0
        for h in range(24):
            reads = [gold_read(b * share, a) for b in hour_bytes[:h + 1]]
            open_rru += w[h] * (2 + sum(r.rru for r in reads))
            open_s = (2 * single_s + math.ceil(len(reads) / HOUR_READS)
                      * max(r.seconds for r in reads))
            if closed == 0:
                waits = open_s
            else:
                # The first closed day alone, then the others and the open day in rounds; the
                # open day is in the last round.
                rounds = math.ceil(closed / at_once)
                waits = closed_s + (rounds - 1) * closed_s + max(closed_s, open_s)
            unzip = (closed * day_raw + sum(hour_raw[:h + 1]) * share) * unzip_s
            query_s += w[h] * (waits + unzip)
        q_rru.append(closed * (2 + day_read.rru) + open_rru)
        q_s.append(QUERY_LOCAL_MS / 1000 + query_s)
    query_rru, query_s = sum(q_rru) / len(q_rru), sum(q_s) / len(q_s)
    gb_s += cons_gb_s + a.queries_per_day * query_s * MEMORY_MB["cube-query"] / 1024
    invocations += cons_inv + a.queries_per_day

    # DynamoDB
    wru_ingest = sum(p.wru for p in paths.values())
    rru_ingest = sum(p.rru for p in paths.values())
    wru_cons = cons.runs * cons.per_run.wru + cons.mark_wru
    rru_cons = cons.runs * cons.per_run.rru
    rru_query = a.queries_per_day * query_rru
    kept = E * (1 - a.duplicate_rate) * a.retention_days
    silver_gb = kept * (item_bytes + DDB_ITEM_OVERHEAD) / 1e9
    by_hour_gb = silver_gb  # projection ALL: a second copy of every item
    by_viewer_gb = kept * (BY_VIEWER_ITEM_BYTES + DDB_ITEM_OVERHEAD) / 1e9
    gold_day = gold_stored(E, a) + sum(gold_stored(E * x, a) for x in w)
    gold_gb = a.gold_days * gold_day / 1e9
    other_gb = (a.gold_days * paths["file"].files * (LEDGER_ITEM_BYTES + DDB_ITEM_OVERHEAD)
                + a.titles * (CATALOG_ITEM_BYTES + DDB_ITEM_OVERHEAD)) / 1e9
    table_gb = silver_gb + gold_gb + other_gb  # PITR covers table data, not global indexes

    # S3
    bronze = BRONZE_GZ_BYTES_PER_EVENT if a.gzip_files else BRONZE_CSV_BYTES_PER_EVENT
    puts = sum(p.s3_put for p in paths.values()) + cons.runs * cons.per_run.s3_put
    gets = sum(p.s3_get for p in paths.values())
    export_day = (level_cells(E) * (CSV_BYTES_PER_DAY_CELL + PARQUET_BYTES_PER_CELL)
                  + sum(level_cells(E * x) for x in w) * PARQUET_BYTES_PER_CELL)
    s3_gb = (E * a.mix["file"] * bronze * BRONZE_RETENTION_DAYS
             + E * (a.mix["file"] + a.mix["kafka"]) * a.reject_rate * QUARANTINE_BYTES_PER_ROW
             * QUARANTINE_RETENTION_DAYS
             + paths["file"].files * REPORT_BYTES * REPORT_RETENTION_DAYS
             + a.gold_days * export_day) / 1e9
    # every export overwrites the day's CSV and Parquet in a versioned bucket: the old ones stay
    # 7 days as noncurrent versions
    noncurrent_gb = cons.runs * cons.per_run.export_bytes * LAKE_NONCURRENT_DAYS / 1e9

    glue_calls = cons.runs * cons.per_run.glue_calls + 1  # + CreatePartition once a day
    api_requests = paths["api"].api_requests + a.queries_per_day
    log_bytes = a.log_line_bytes * (
        sum(p.invocations for p in paths.values())  # one INFO line per batch or file
        + 3 * cons.runs + cons.batches + cons.ttl_only  # per day, per mark, TTL notice
        + api_requests)  # API access log
    reservoir = a.xray_reservoir_per_s * 86400
    traces = min(invocations, reservoir) + a.xray_rate * max(0.0, invocations - reservoir)

    free = 0.0 if a.no_free_tier else 1.0
    bill = Bill()
    bill.add("Lambda compute + requests",
             max(0.0, gb_s * m - free * FREE_LAMBDA_GB_S) * gb_s_price
             + max(0.0, invocations * m - free * FREE_LAMBDA_REQUESTS) * LAMBDA_PER_REQUEST)
    bill.add("API Gateway HTTP API", api_requests * m * APIGW_HTTP_PER_REQUEST)
    bill.add("DynamoDB writes", (wru_ingest + wru_cons) * m * DDB_PER_WRU)
    bill.add("DynamoDB reads", (rru_ingest + rru_cons + rru_query) * m * DDB_PER_RRU)
    bill.add(f"DynamoDB storage ({a.retention_days} d of silver, {a.gold_days} d of gold)",
             max(0.0, table_gb + by_hour_gb + by_viewer_gb - free * FREE_DDB_STORAGE_GB)
             * DDB_STORAGE_GB_MONTH)
    bill.add("DynamoDB point-in-time recovery", table_gb * DDB_PITR_GB_MONTH)
    bill.add("S3 requests + storage", (puts * S3_PER_PUT + gets * S3_PER_GET) * m
             + (s3_gb + noncurrent_gb) * S3_GB_MONTH)
    bill.add("Glue Data Catalog", max(0.0, glue_calls * m - free * FREE_GLUE_CATALOG_REQUESTS)
             * GLUE_CATALOG_PER_REQUEST)
    bill.add("CloudWatch Logs",
             max(0.0, log_bytes * m / 1e9 - free * FREE_LOGS_GB) * LOGS_INGEST_PER_GB
             + log_bytes / 1e9 * LOG_RETENTION_DAYS * a.logs_compression * LOGS_STORAGE_GB_MONTH)
    bill.add("X-Ray traces", max(0.0, traces * m - free * FREE_XRAY_TRACES) * XRAY_PER_TRACE)
    alarms = ALARMS + (ALARMS_KAFKA if a.mix["kafka"] > 0 else 0)
    bill.add("fixed: KMS key, secret, alarms", KMS_KEY_MONTH + SECRET_MONTH + alarms * ALARM_MONTH)

    # The ways of consolidating, a month each, at list prices (no free tier).
    def way(c: Deployed) -> dict:
        gb_s, inv = cons_lambda(c)
        return dict(
            lambda_=(gb_s * gb_s_price + inv * LAMBDA_PER_REQUEST) * m,
            dynamodb=((c.runs * c.per_run.wru + c.mark_wru) * DDB_PER_WRU
                      + c.runs * c.per_run.rru * DDB_PER_RRU) * m,
            s3_glue=c.runs * (c.per_run.s3_put * S3_PER_PUT
                              + c.per_run.glue_calls * GLUE_CATALOG_PER_REQUEST) * m
            + c.runs * c.per_run.export_bytes * LAKE_NONCURRENT_DAYS / 1e9 * S3_GB_MONTH,
            note=c.status)
    ways: dict[str, dict] = {"deployed": way(cons)}
    ways["lambda_hourly"] = way(deployed(E, a, shards, item_bytes, 60))
    for key, hourly in (("glue_hourly", True), ("glue_daily", False)):
        runs = glue_runs(E, a, hourly)
        load = gold_load(E, a, hourly)
        dpu_h = a.glue_dpus / 3600
        ways[key] = dict(
            glue=sum(max(GLUE_MIN_BILLED_S, s) for s in runs) * dpu_h * GLUE_DPU_HOUR * m,
            export=E * item_bytes / 1e9 * DDB_EXPORT_PER_GB * m,
            s3_glue=len(runs) * (a.glue_s3_requests * S3_PER_PUT
                                 + 2 * GLUE_CATALOG_PER_REQUEST) * m,
            # the load's DynamoDB units, and the DPU time spent waiting on the partition limit
            load=(load.wru * DDB_PER_WRU + load.rru * DDB_PER_RRU
                  + load.seconds * dpu_h * GLUE_DPU_HOUR) * m,
            note=f"{len(runs)} run(s) a day, longest {max(runs):,.0f} s"
            + f"; the load adds {load.seconds / len(runs):,.0f} s a run"
            + ("; with the load, runs outlast the hour"
               if hourly and max(runs) + load.seconds / len(runs) > 3600 else ""))

    figures = dict(
        items=items, shards=shards, cons=cons,
        silver_gb=silver_gb, by_hour_gb=by_hour_gb, by_viewer_gb=by_viewer_gb, gold_gb=gold_gb,
        gold_day=gold_day, s3_gb=s3_gb, noncurrent_gb=noncurrent_gb, log_gb=log_bytes / 1e9,
        query_rru=query_rru, query_s=query_s, query_s_max=max(q_s), paths=paths,
        wru_ingest=wru_ingest, wru_cons=wru_cons,
        rru_ingest=rru_ingest, rru_cons=rru_cons, rru_query=rru_query, traces=traces,
    )
    return dict(bill=bill, ways=ways, figures=figures)


# =================================================================================================
# Output
# =================================================================================================
def usd(x: float) -> str:
    return f"${x:,.0f}" if x >= 100 else f"${x:,.1f}" if x >= 10 else f"${x:,.2f}"


def num(x: float) -> str:
    if x >= 1e9:
        return f"{x / 1e9:,.2f} G"
    if x >= 1e6:
        return f"{x / 1e6:,.2f} M"
    if x >= 1e4:
        return f"{x / 1e3:,.1f} k"
    return f"{x:,.0f}" if x >= 100 else f"{x:,.2f}"


def label(E: float) -> str:
    return f"{E / 1e6:g}M/day" if E >= 1e6 else f"{E / 1e3:g}k/day"


def table(header: list[str], rows: list[list[str]], numbers: bool = True) -> str:
    lines = ["| " + " | ".join(header) + " |",
             "|---|" + ("---:|" if numbers else "---|") * (len(header) - 1)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def ways_cost(way: dict, parts: list[str]) -> float:
    return sum(way[p] for p in parts)


WAYS = [
    ("deployed", "stream-marker marks, cube-consolidator publishes on its schedule (as deployed)",
     [("Lambda", "lambda_"), ("DynamoDB reads + writes", "dynamodb"),
      ("S3 exports and their noncurrent versions, Glue catalog", "s3_glue")]),
    ("lambda_hourly", "the same with `ConsolidationSchedule: rate(60 minutes)`",
     [("Lambda", "lambda_"), ("DynamoDB reads + writes", "dynamodb"),
      ("S3 exports and their noncurrent versions, Glue catalog", "s3_glue")]),
    ("glue_hourly", "Glue job, hourly",
     [("Glue DPU-hours", "glue"), ("silver to S3 (DynamoDB incremental export)", "export"),
      ("S3 requests, Glue catalog", "s3_glue")]),
    ("glue_daily", "Glue job, daily",
     [("Glue DPU-hours", "glue"), ("silver to S3 (DynamoDB incremental export)", "export"),
      ("S3 requests, Glue catalog", "s3_glue")]),
]


def main(argv: list[str]) -> int:
    a = parse_args(argv)
    results = [model(E, a) for E in a.volumes]
    heads = [label(E) for E in a.volumes]

    def row(name: str, f) -> list[str]:
        return [name] + [f(r) for r in results]

    mix = a.mix
    print(f"# streamcube on AWS: monthly cost\n\n{PRICES_AS_OF}. Arrival: {mix['api']:.0%} "
          f"HTTP API (batches of {a.api_batch}), {mix['file']:.0%} bronze files "
          f"({a.events_per_file:,} events each), {mix['kafka']:.0%} Kafka; "
          f"{a.queries_per_day:,.0f} cube queries a day; "
          f"{a.architecture}; {DAYS_PER_MONTH} days a month; "
          + ("no free tier." if a.no_free_tier else "always-free allowances deducted.") + "\n")

    print("## Monthly bill by component (USD)\n")
    rows = [row(k, lambda r, k=k: usd(r["bill"].parts[k])) for k in results[0]["bill"].parts]
    rows.append(row("**total**", lambda r: f"**{usd(r['bill'].total())}**"))
    deployed_parts = [p for _, p in WAYS[0][2]]
    rows.append(row("of which stream-marker and cube-consolidator",
                    lambda r: usd(ways_cost(r["ways"]["deployed"], deployed_parts))))
    rows.append(row("cube-consolidator as deployed", lambda r: r["ways"]["deployed"]["note"]))

    def swapped(r) -> float:
        glue = r["ways"]["glue_hourly"]
        return (r["bill"].total() - ways_cost(r["ways"]["deployed"], deployed_parts)
                + ways_cost(glue, ["glue", "export", "s3_glue", "load"]))
    rows.append(row("total with an hourly Glue job (+ load) in place of both",
                    lambda r: usd(swapped(r))))
    print(table(["component", *heads], rows))

    print("\n## Consolidation: as deployed and other ways (USD a month)\n")
    rows = []
    for key, name, parts in WAYS:
        if key.startswith("glue"):
            name += f", {a.glue_dpus:g} DPU"
        rows.append([f"**{name}**"] + [""] * len(results))
        rows += [row(f"{pname}", lambda r, p=p, k=key: usd(r["ways"][k][p]))
                 for pname, p in parts]
        keys = [p for _, p in parts]
        rows.append(row("total", lambda r, k=key: f"**{usd(ways_cost(r['ways'][k], keys))}**"))
        if key.startswith("glue"):
            rows.append(row("+ loading the cube into the cube table for cube-query",
                            lambda r, k=key: usd(r["ways"][k]["load"])))
            rows.append(row("total with the load", lambda r, k=key: "**" + usd(
                ways_cost(r["ways"][k], keys + ["load"])) + "**"))
        rows.append(row("note", lambda r, k=key: r["ways"][k]["note"]))
    print(table(["way", *heads], rows))

    print("\n## Units the figures come from\n")
    items = results[0]["figures"]["items"]
    print(f"Silver item as DynamoDB sizes it: {items['api']:.0f} B from the API, "
          f"{items['kafka']:.0f} B from Kafka, {items['file']:.0f} B from a file (the `origin` "
          f"attribute); a by_viewer entry {BY_VIEWER_ITEM_BYTES} B; every stored item and index "
          f"entry {DDB_ITEM_OVERHEAD} B more.\n")
    print(table(["per event", "WRU", "RRU", "other"], [
        ["new, HTTP API or Kafka", "3: item, by_hour, by_viewer", "0",
         f"1/{a.api_batch} API request and invocation"],
        ["duplicate, HTTP API or Kafka", "1: the failed conditional PutItem", "0", ""],
        ["new, bronze file", "3", "1: consistent BatchGetItem",
         "per file: ledger GetItem + PutItem, 2 S3 GET, 2-3 S3 PUT"],
        ["duplicate, bronze file", "0", "1", ""],
        ["TTL expiry", "0: TTL deletes are free", "0", "a stream record for stream-marker"],
    ], numbers=False))
    print()

    def fig(name: str, f) -> list[str]:
        return row(name, lambda r: f(r["figures"]))

    rows = [
        fig("stream shards (silver partitions at steady state)", lambda g: f"{g['shards']:,}"),
        fig("stream batches a day marking hours (an invocation, an UpdateItem per hour)",
            lambda g: num(g["cons"].batches)),
        fig("invocations a day with TTL expiries only", lambda g: num(g["cons"].ttl_only)),
        fig("scheduled consolidation runs a day (the closing run counted apart)", lambda g: num(g["cons"].runs)),
        fig("silver events read per scheduled run", lambda g: num(g["cons"].read_per_run)),
        fig("gold bytes written per scheduled run (as many deleted)",
            lambda g: num(g["cons"].gold_per_run) + "B"),
        fig("WRU, RRU per scheduled run",
            lambda g: f"{num(g['cons'].per_run.wru)}, {num(g['cons'].per_run.rru)}"),
        fig(f"seconds per scheduled run at {MEMORY_MB['cube-consolidator']:,} MB: mean, longest",
            lambda g: f"{g['cons'].run_s:,.1f}, {g['cons'].longest_s:,.0f}"),
        fig("gold bytes of a day (day + 24 hour levels)", lambda g: num(g["gold_day"]) + "B"),
        fig("WRU a day: ingest, consolidation",
            lambda g: f"{num(g['wru_ingest'])}, {num(g['wru_cons'])}"),
        fig("RRU a day: ingest, consolidation, queries",
            lambda g: f"{num(g['rru_ingest'])}, {num(g['rru_cons'])}, {num(g['rru_query'])}"),
        fig("per query: RRU, mean seconds, slowest query's seconds",
            lambda g: f"{num(g['query_rru'])}, {g['query_s']:.2f}, {g['query_s_max']:.1f}"
            + (" (over the API's 30 s)" if g["query_s_max"] > API_TIMEOUT_S else "")),
        fig("DynamoDB GB: silver, by_hour, by_viewer, gold",
            lambda g: f"{g['silver_gb']:,.0f}, {g['by_hour_gb']:,.0f}, "
                      f"{g['by_viewer_gb']:,.0f}, {g['gold_gb']:,.0f}"),
        fig("S3 GB: current objects, noncurrent export versions",
            lambda g: f"{g['s3_gb']:,.1f}, {g['noncurrent_gb']:,.0f}"),
        fig("Lambda seconds: API request, Kafka batch, bronze file",
            lambda g: ", ".join(f"{g['paths'][k].seconds:.2f}" for k in ("api", "kafka", "file"))),
        fig("X-Ray traces a day", lambda g: num(g["traces"])),
        fig("CloudWatch Logs GB a day", lambda g: f"{g['log_gb']:.3f}"),
    ]
    print(table(["per volume", *heads], rows))

    print("\n## Assumptions\n")
    for line in assumptions(a):
        print(f"- {line}")
    return 0


def assumptions(a: argparse.Namespace) -> list[str]:
    return [
        f"Prices: {PRICES_AS_OF}. Lambda {a.architecture} "
        f"${LAMBDA_GB_S[a.architecture]:.10f}/GB-s and "
        f"${LAMBDA_PER_REQUEST * 1e6:.2f}/M requests; API Gateway HTTP API "
        f"${APIGW_HTTP_PER_REQUEST * 1e6:.2f}/M requests (512 KB steps); DynamoDB on demand "
        f"${DDB_PER_WRU * 1e6}/M WRU, ${DDB_PER_RRU * 1e6}/M RRU, "
        f"${DDB_STORAGE_GB_MONTH}/GB-month, "
        f"PITR ${DDB_PITR_GB_MONTH}/GB-month, export to S3 ${DDB_EXPORT_PER_GB}/GB, stream reads "
        f"by Lambda free; S3 ${S3_GB_MONTH}/GB-month, ${S3_PER_PUT * 1000}/1,000 PUT, "
        f"${S3_PER_GET * 1000}/1,000 GET; Glue Data Catalog "
        f"${GLUE_CATALOG_PER_REQUEST * 1e5:.2f}/100,000 requests after the free million; Glue "
        f"ETL ${GLUE_DPU_HOUR}/DPU-hour, per second, {GLUE_MIN_BILLED_S} s minimum; CloudWatch "
        f"Logs ${LOGS_INGEST_PER_GB}/GB; X-Ray ${XRAY_PER_TRACE * 1e6:.2f}/M traces.",
        f"Storage at steady state: silver holds {a.retention_days} days (TTL); gold has no TTL "
        f"and is shown at {a.gold_days} days. Stream shards = silver partitions = "
        f"max(4, stored GB / 10) unless --stream-shards.",
        "Resource use per event and per run as template.yaml and the code make them (see the "
        "units above and the comments of bench/cost_model.py).",
        f"Consolidation runs every {a.schedule_minutes} minutes; events follow the generator's "
        f"hour-of-day profile; a run recomputes the live hour as arrived so far, and the first "
        f"run of an hour also the hour before (its last changes were under the "
        f"{CHANGE_SETTLE_S} s settle time) and the hours a bronze file brought (a file holds the "
        f"{a.file_span_hours} finished hour(s) before it); "
        f"{a.index_rereads:g} extra hour reads per run. These runs publish the open day's hours "
        f"without its day level; the first run after midnight (the closing run) recomputes the "
        f"last hour, reads the 23 others back, and writes the day level and the exports. "
        f"stream-marker ({MEMORY_MB['stream-marker']} MB) marks a stream batch's hours with "
        f"an UpdateItem each, one round in flight, after {MARK_CPU_FIXED_S * 1e3:.2f} ms of CPU "
        f"a batch and {MARK_CPU_PER_RECORD_S * 1e6:.1f} us a record (measured, "
        f"bench/cold_start.sh).",
        f"Lambda time = the waits of the calls as the code issues them (single-item call "
        f"{a.ddb_single_ms:g} ms; BatchWriteItem or BatchGetItem {a.ddb_batch_ms:g} ms, 8 in "
        f"flight; 1 MB Query page {a.ddb_page_ms:g} ms; one partition key takes at most "
        f"{DDB_PARTITION_WCU_S} WRU/s, a gold level {CELL_SHARDS} keys; S3 {a.s3_request_ms:g} ms + {a.s3_mb_per_s:g} MB/s) + CPU "
        f"measured on the 2-core build machine (ingest through the AWS adapters "
        f"{INGEST_CPU_US_PER_EVENT:.1f} us/event; cube {CUBE_CPU_US_PER_EVENT:.1f} us/event; "
        f"consolidation {CONSOLIDATE_CPU_S * 1e6 / CONSOLIDATE_REF_EVENTS:.1f} us/event of a "
        f"{CONSOLIDATE_REF_EVENTS:,}-event day, {CONSOLIDATE_GOLD_SHARE:.0%} of it taken to "
        f"scale with the gold bytes handled) / the "
        f"vCPU share of the memory (1 vCPU at {LAMBDA_MB_PER_VCPU} MB).",
        (f"Gold blocks of a level of N events: {GOLD_REF_BYTES_PER_EVENT:.1f} B/event x "
         f"(N / {GOLD_REF_EVENTS:,})^-{a.gold_exponent:.2f} (--gold-exponent)."
         if a.gold_exponent is not None else
         "Gold blocks of a level of N events: bytes per event on straight lines in log-log "
         "through measured levels of " + ", ".join(f"{n:,}" for n, _ in GOLD_POINTS)
         + " events (" + ", ".join(f"{b:.1f}" for _, b in GOLD_POINTS) + " B/event), "
         "their end slopes beyond; stored compressed at the measured ratio of "
         f"{GOLD_STORED[0][1]:.2f} (100,000 events) to {GOLD_STORED[-1][1]:.2f} "
         f"({GOLD_STORED[-1][0]:,})."),
        f"Duplicates {a.duplicate_rate:.1%}, refused rows {a.reject_rate:.1%}. Queries: an even "
        f"mix of the dashboard queries of bench/query_latency.sh (30-day trend, 7-day top 10 "
        f"titles, 1-day breakdown), each reading its cuboid's measured share of the day-level "
        f"blocks with eventually consistent reads (after a consistent read of the level's "
        f"record of its blocks); every query also reaches the open day, and reads the same "
        f"share of each of its hours published so far (queries follow the traffic's "
        f"hour-of-day profile).",
        f"Glue job: {a.glue_dpus:g} DPU (a driver and an executor), "
        f"{a.glue_rows_per_s:,.0f} rows/s per executor, {a.glue_fixed_s:g} s fixed per run, "
        f"billed at least {GLUE_MIN_BILLED_S} s; silver reaches S3 by DynamoDB incremental export "
        f"(point-in-time recovery is already on).",
        "Not modelled: erasures, the dashboard's CloudFront traffic, the MSK cluster (not part "
        "of the stack), cold starts, Secrets Manager and KMS calls, data transfer.",
    ]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
