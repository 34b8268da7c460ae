#!/usr/bin/env python3
"""bronze_pandas.py — streamcube's bronze step as a pandas job, with the checks and the report
of bench/bronze_vs_pandas.sh.

Run by the shell script with the benchmark's venv (bench/.venv, which has the pinned pandas).
Subcommands:

  ingest --db F --lake D FILE...
      The work `streamcube ingest FILE...` does on the embedded backend, written the way a data
      team's Python script would do it: pd.read_csv of the whole file (plain or gzip); every
      field validated with the contract's rules (a vectorized regex over the event ids, every
      other rule once per distinct value, exact per-row code for the few rows that fail);
      viewer_id pseudonymized with HMAC-SHA-256 under the hex key in
      STREAMCUBE_PSEUDONYM_KEY; duplicates dropped by event_id (the first occurrence wins, also
      against rows already in the database); the accepted rows written with executemany in one
      transaction into a SQLite database in WAL mode with streamcube's schema (read from
      shared/embedded/src/sqlite.rs), pragmas and silver_events column encodings (hour = occurred_at_ms div 3600000, the viewer as
      the 32-byte HMAC, origin `events/<name>#sha256:<hex>` once in silver_origins and each
      row's line number), and the hours touched
      recorded in silver_changes. Refused rows go to D/quarantine/events/<name>.jsonl with
      their line, raw text and reasons, and the counts to D/reports/events/<name>.json: the
      same paths and JSON shapes as streamcube's lake.
      Limits (none of which the generated data reaches): one CSV record per line (no line
      breaks inside quoted fields; the job stops with an error if it meets one), a single
      pseudonymization key (no key ring), CSV only.

  check --streamcube-dir D --db F --lake D --name NAME [--json OUT]
      Compares the two runs on one file: the reports' rows, accepted, duplicates and rejected
      (and the counts per reason), each silver table's size against its accepted count, the
      set of event_ids of the two silver tables, every column of the rows they share, and the
      quarantined rows (line, raw text, reasons). Exit status 1 if anything differs.

  summary --label L --rows N --streamcube JSON... --pandas JSON... --append F
      Records one data set's best run of each tool (from the `measure` JSON files written by
      bench/cube_vs_duckdb.py) as a line of F.

  table --summary F
      Prints the rows/s and peak memory table of every data set in F, the ratios, and the
      targets (informational: they never change the exit status).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import hmac
import itertools
import json
import os
import re
import sqlite3
import sys
import time
import warnings
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

sys.dont_write_bytecode = True  # no __pycache__ in bench/ for the import below
import benchlib  # noqa: E402
from benchlib import anon, best_of, cpu_seconds, mib, verdict  # noqa: E402

# --------------------------------------------------------------------------
# The contract (shared/model/src/event.rs, ../shared/ARCHITECTURE.md)

CONTRACT = [
    "event_id",
    "occurred_at",
    "viewer_id",
    "content_id",
    "device",
    "country",
    "watch_seconds",
    "bitrate_kbps",
    "buffering_ms",
    "completed",
]
OPTIONAL = {"bitrate_kbps", "buffering_ms"}
DEVICES = {"tv", "mobile", "web", "tablet", "console"}
# The assigned ISO 3166-1 alpha-2 codes streamcube accepts: the `celes` table it is built with,
# without the user-assigned XK.
ASSIGNED_COUNTRIES = frozenset(
    """
    AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ
    BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM
    DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS
    GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN
    KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ
    MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM
    PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV
    SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI
    VN VU WF WS YE YT ZA ZM ZW
    """.split()
)
assert len(ASSIGNED_COUNTRIES) == 249

MAX_EVENT_ID_LEN = 128
MAX_TEXT_LEN = 256
MAX_FUTURE_MS = 5 * 60 * 1000
MS_PER_HOUR = 3_600_000
INTEGERS = {  # field: (min, max)
    "watch_seconds": (0, 86_400),
    "bitrate_kbps": (1, 200_000),
    "buffering_ms": (0, 86_400_000),
}

# Reason codes (0: valid), names as streamcube's reports and quarantine spell them.
REASONS = [
    None,
    "missing",
    "empty",
    "too_long",
    "invalid_characters",
    "invalid_timestamp",
    "in_future",
    "not_an_integer",
    "out_of_range",
    "unknown_device",
    "unknown_country",
    "not_upper_case",
    "not_a_boolean",
]
(
    OK,
    MISSING,
    EMPTY,
    TOO_LONG,
    INVALID_CHARACTERS,
    INVALID_TIMESTAMP,
    IN_FUTURE,
    NOT_AN_INTEGER,
    OUT_OF_RANGE,
    UNKNOWN_DEVICE,
    UNKNOWN_COUNTRY,
    NOT_UPPER_CASE,
    NOT_A_BOOLEAN,
) = range(len(REASONS))

EVENT_ID_RE = re.compile(r"[A-Za-z0-9._:-]+")
INTEGER_RE = re.compile(r"-?[0-9]{1,20}")
# RFC 3339 as chrono's parse_from_rfc3339 reads it: `T`, `t` or a space between date and time,
# any number of fractional digits, `Z`, `z` or a +hh:mm / -hh:mm offset below 24 hours.
RFC3339_RE = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})"
    r"(?:\.([0-9]+))?(?:[Zz]|([+-])([01][0-9]|2[0-3]):([0-5][0-9]))"
)
# The common shapes, which pandas' ISO 8601 parser reads exactly like chrono; anything else
# that RFC3339_RE accepts (leap seconds, lower-case t/z, a space, years pandas cannot hold in
# nanoseconds) goes through rfc3339_ms().
FAST_TIMESTAMP = (
    r"[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])"
    r"T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,9})?"
    r"(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
)
EPOCH_ORDINAL = date(1970, 1, 1).toordinal()

# --------------------------------------------------------------------------
# streamcube's SQLite schema and pragmas (shared/embedded/src/sqlite.rs)

# The schema is read from that source when the job runs, so that it is always streamcube's.
SCHEMA_SOURCE = Path(__file__).resolve().parent.parent / "shared/embedded/src/sqlite.rs"
SCHEMA_RE = re.compile(r'^const SCHEMA: &str = "([^"\\]*)";$', re.MULTILINE)
PRAGMAS = [
    "PRAGMA journal_mode = WAL",
    "PRAGMA secure_delete = ON",
    "PRAGMA synchronous = NORMAL",
    "PRAGMA cache_size = -65536",
    "PRAGMA mmap_size = 1073741824",
    "PRAGMA temp_store = MEMORY",
    "PRAGMA wal_autocheckpoint = 50000",
]
# silver_events' columns, in the order of the rows ingest_file() writes: the contract's fields
# from content_id on keep their names there.
SILVER_COLUMNS = [
    "event_id",
    "hour",
    "occurred_at_ms",
    "viewer",
    *CONTRACT[CONTRACT.index("content_id") :],
    "origin",
    "origin_file",
    "origin_line",
]
# A row is written unless its id is in the id index (silver_ids, which this job brings up to
# date at the end of each file): the index is keyed by the id's hash (the last parameter, see
# id_keys), and a row found through it is the id's only if its event_id is. `seq` continues
# from silver_meta.last_seq, as streamcube's does.
INSERT_SQL = (
    f"INSERT INTO silver_events (seq, {', '.join(SILVER_COLUMNS)}) "
    f"SELECT {', '.join(f'?{i}' for i in range(1, len(SILVER_COLUMNS) + 2))} "
    "WHERE NOT EXISTS (SELECT 1 FROM silver_ids i CROSS JOIN silver_events e "
    f"WHERE i.id_hash = ?{len(SILVER_COLUMNS) + 2} AND e.seq = i.seq AND e.event_id = ?2)"
)
# The file's new rows into the id index, in key order (one sorted pass), and silver_meta to
# match.
INDEX_SQL = "INSERT INTO silver_ids (id_hash, seq) VALUES (?, ?)"
CHANGES_SQL = (
    "INSERT INTO silver_changes(hour, counter, acked) VALUES (?, 1, 0) "
    "ON CONFLICT(hour) DO UPDATE SET counter = counter + 1"
)
# Rows per executemany call (all in one transaction): keeps the Python tuples of one slice in
# memory, not of the whole file.
INSERT_SLICE = 100_000


def streamcube_schema() -> str:
    """The SQL streamcube runs when it opens its database: the string of `const SCHEMA: &str`
    in SCHEMA_SOURCE."""
    try:
        source = SCHEMA_SOURCE.read_text(encoding="utf-8")
    except OSError as e:
        raise SystemExit(f"cannot read streamcube's SQLite schema: {e}") from None
    m = SCHEMA_RE.search(source)
    if m is None:
        raise SystemExit(
            f'{SCHEMA_SOURCE}: no line `const SCHEMA: &str = "...` ending in `";`'
            " (a plain string, without escapes) to read streamcube's SQLite schema from"
        )
    return m.group(1)


def create_schema(con: sqlite3.Connection) -> None:
    """streamcube's schema in `con`, with silver_events as this job writes it."""
    con.executescript(streamcube_schema())
    # The row streamcube's migration writes into a new file, with a random seed for the ids'
    # hash.
    con.execute("INSERT OR IGNORE INTO silver_meta VALUES (0, 0, 0, 0, random())")
    # `seq` is the row's arrival number, which SQLite assigns.
    columns = {row[1] for row in con.execute("PRAGMA table_info(silver_events)")} - {"seq"}
    if columns != set(SILVER_COLUMNS):
        raise SystemExit(
            f"{SCHEMA_SOURCE}: silver_events has the columns {sorted(columns)}, but this job"
            f" writes {sorted(SILVER_COLUMNS)}"
        )


# --------------------------------------------------------------------------
# Field rules, applied to one value (a distinct value of a column, or a row that failed the
# vectorized check)


def nbytes(s: str) -> int:
    return len(s.encode("utf-8", "surrogateescape"))


def not_utf8(s: str) -> bool:
    """Whether the text came from bytes that are not UTF-8 (read with surrogateescape)."""
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def text_reason(s: str, limit: int) -> int:
    if s == "":
        return EMPTY
    if nbytes(s) > limit:
        return TOO_LONG
    return OK


def event_id_reason(s: str) -> int:
    r = text_reason(s, MAX_EVENT_ID_LEN)
    if r == OK and not (s.isascii() and EVENT_ID_RE.fullmatch(s)):
        return INVALID_CHARACTERS
    return r


def device_reason(s: str) -> int:
    r = text_reason(s, 16)
    if r == OK and s not in DEVICES:
        return UNKNOWN_DEVICE
    return r


def country_reason(s: str) -> int:
    r = text_reason(s, 16)
    if r != OK:
        return r
    if len(s) != 2 or not (s.isascii() and s.isalpha()):
        return UNKNOWN_COUNTRY
    if s.upper() not in ASSIGNED_COUNTRIES:
        return UNKNOWN_COUNTRY
    return OK if s.isupper() else NOT_UPPER_CASE


def completed_value(s: str) -> tuple[int, bool]:
    if s == "true":
        return OK, True
    if s == "false":
        return OK, False
    return (EMPTY if s == "" else NOT_A_BOOLEAN), False


def integer_value(s: str, lo: int, hi: int, optional: bool) -> tuple[int, int]:
    """(reason, value); value -1 for an absent optional field."""
    if s == "":
        return (OK if optional else EMPTY), -1
    if not (s.isascii() and INTEGER_RE.fullmatch(s)):
        return NOT_AN_INTEGER, -1
    v = int(s)
    if v < lo or v > hi:
        return OUT_OF_RANGE, -1
    return OK, v


def rfc3339_ms(s: str) -> int | None:
    """Milliseconds since the epoch of an RFC 3339 timestamp, None if it is not one."""
    m = RFC3339_RE.fullmatch(s) if s.isascii() else None
    if not m:
        return None
    y, mo, d, h, mi, sec, frac, sign, oh, om = m.groups()
    try:
        day = date(int(y), int(mo), int(d))
    except ValueError:
        return None
    h, mi, sec = int(h), int(mi), int(sec)
    if h > 23 or mi > 59 or sec > 60:  # 60: a leap second, as chrono allows
        return None
    nanos = int((frac or "0")[:9].ljust(9, "0"))
    offset = 0 if sign is None else (int(oh) * 3600 + int(om) * 60) * (1 if sign == "+" else -1)
    secs = (day.toordinal() - EPOCH_ORDINAL) * 86_400 + h * 3600 + mi * 60 + sec - offset
    return secs * 1000 + nanos // 1_000_000


def timestamp_value(s: str, now_ms: int) -> tuple[int, int]:
    r = text_reason(s, 64)
    if r != OK:
        return r, 0
    ms = rfc3339_ms(s)
    if ms is None:
        return INVALID_TIMESTAMP, 0
    if ms > now_ms + MAX_FUTURE_MS:
        return IN_FUTURE, 0
    return OK, ms


# --------------------------------------------------------------------------
# ingest


def is_gzip(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(2) == b"\x1f\x8b"


def open_binary(path: Path):
    return gzip.open(path, "rb") if is_gzip(path) else path.open("rb")


def file_version(path: Path) -> str:
    """sha256 of the file's bytes, as streamcube names the version it lands."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def read_header(path: Path) -> list[str]:
    with open_binary(path) as f:
        first = f.readline().decode("utf-8", "surrogateescape")
    if first.startswith("\ufeff"):
        first = first[1:]
    names = next(csv.reader([first]), [])
    names = [n.strip() for n in names]
    for field in CONTRACT:
        n = names.count(field)
        if n > 1 or (n == 0 and field not in OPTIONAL):
            raise SystemExit(
                f"{path}: the header must name {field} once (header: {','.join(names)})"
            )
    # Columns outside the contract are read (their bytes must be UTF-8) but not kept.
    return [n if n in CONTRACT else f"_ignored_{i}" for i, n in enumerate(names)]


def id_keys(con: sqlite3.Connection, event_ids: list[str]):
    """The keys of `event_ids` in silver_ids of the store in `con`, as streamcube computes
    them (`id_hash` in shared/embedded/src/idmap.rs): XXH3 (64 bits) of the id's UTF-8 bytes,
    seeded with silver_meta.id_seed, read as a signed 64-bit integer. One call per id, in a
    loop of Python's own (neither numpy nor pandas has XXH3)."""
    import numpy as np
    import xxhash

    (stored,) = con.execute("SELECT id_seed FROM silver_meta WHERE id = 0").fetchone()
    seed = stored & 0xFFFF_FFFF_FFFF_FFFF
    hash64 = xxhash.xxh3_64_intdigest
    hashes = np.fromiter(
        (hash64(i.encode("utf-8"), seed) for i in event_ids), dtype=np.uint64, count=len(event_ids)
    )
    return hashes.view(np.int64)


def per_value(col, rule):
    """Applies `rule` once per distinct value of `col`: (codes, distinct values, results)."""
    import pandas as pd

    codes, uniques = pd.factorize(col, sort=False)
    uniques = uniques.tolist()
    return codes, uniques, [rule(v) for v in uniques]


@dataclass
class KeptRows:
    """The rows a file keeps (valid, first of their event_id), as column arrays indexed by
    `keep`, with the distinct values of the text columns coded."""

    key: str
    version: str
    keep: Any
    id_values: Any
    hours: Any
    occurred_ms: Any
    pseudonyms: Any
    v_codes: Any
    contents: Any
    c_codes: Any
    devices: Any
    d_codes: Any
    countries: Any
    k_codes: Any
    numbers: dict
    completed: Any
    lines: Any


class LocalLake:
    """The lake as a directory, as the embedded backend keeps it."""

    def __init__(self, root: Path):
        self.root = root

    def put(self, rel: str, data: bytes) -> None:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def delete(self, rel: str) -> None:
        (self.root / rel).unlink(missing_ok=True)


def sqlite_writer(con: sqlite3.Connection):
    """`write_silver` for streamcube's SQLite silver: one transaction, executemany over slices
    of the kept rows, then the file's ids into the id index in one sorted pass."""
    import numpy as np

    def write(r: KeptRows, lap) -> int:
        key, version, keep = r.key, r.version, r.keep
        id_values, hours, occurred_ms, lines = r.id_values, r.hours, r.occurred_ms, r.lines
        pseudonyms, v_codes, contents, c_codes = r.pseudonyms, r.v_codes, r.contents, r.c_codes
        devices, d_codes, countries, k_codes = r.devices, r.d_codes, r.countries, r.k_codes
        numbers, completed = r.numbers, r.completed
        inserted = 0
        keys = id_keys(con, id_values[keep].tolist())
        lap("hash ids")
        con.execute("BEGIN IMMEDIATE")
        try:
            # The file's origin, once: each row holds its line and the file's id.
            con.execute(
                "INSERT OR IGNORE INTO silver_origins (origin) VALUES (?)", (f"{key}#{version}",)
            )
            (file_id,) = con.execute(
                "SELECT id FROM silver_origins WHERE origin = ?", (f"{key}#{version}",)
            ).fetchone()
            through, last_seq = con.execute(
                "SELECT indexed_through, last_seq FROM silver_meta WHERE id = 0"
            ).fetchone()
            seqs = np.arange(last_seq + 1, last_seq + 1 + len(keep), dtype=np.int64)
            for start in range(0, len(keep), INSERT_SLICE):
                rows = keep[start : start + INSERT_SLICE]
                bitrate = numbers["bitrate_kbps"][rows]
                buffering = numbers["buffering_ms"][rows]
                tuples = zip(
                    range(last_seq + start + 1, last_seq + start + 1 + len(rows)),
                    id_values[rows].tolist(),
                    hours[rows].tolist(),
                    occurred_ms[rows].tolist(),
                    pseudonyms[v_codes[rows]].tolist(),
                    contents[c_codes[rows]].tolist(),
                    devices[d_codes[rows]].tolist(),
                    countries[k_codes[rows]].tolist(),
                    numbers["watch_seconds"][rows].tolist(),
                    np.where(bitrate < 0, None, bitrate).tolist(),
                    np.where(buffering < 0, None, buffering).tolist(),
                    completed[rows].tolist(),
                    itertools.repeat(""),
                    itertools.repeat(file_id),
                    lines[rows].tolist(),
                    keys[start : start + len(rows)].tolist(),
                )
                inserted += con.executemany(INSERT_SQL, tuples).rowcount
            # The rows written (a row already in silver from an earlier file was not), by key.
            written = np.ones(len(keep), dtype=bool)
            if inserted < len(keep):
                new_rows = con.execute("SELECT seq FROM silver_events WHERE seq > ?", (through,))
                stored = np.fromiter((r[0] for r in new_rows), dtype=np.int64)
                written = np.isin(seqs, stored)
            order = np.lexsort((seqs[written], keys[written]))
            con.executemany(
                INDEX_SQL, zip(keys[written][order].tolist(), seqs[written][order].tolist())
            )
            last_seq += len(keep)
            con.execute(
                "UPDATE silver_meta SET indexed_through = ?1, last_seq = ?1 WHERE id = 0", (last_seq,)
            )
            con.executemany(CHANGES_SQL, [(h,) for h in np.unique(hours[keep]).tolist()])
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        return inserted

    return write


def ingest_file(path: Path, key_secret: bytes, write_silver, lake) -> dict:
    """Reads, validates, deduplicates and pseudonymizes the events file at `path`, then hands
    the kept rows to `write_silver(rows, lap)` (which returns how many it stored: a row already
    in silver from an earlier file is not) and puts the quarantine and the report through
    `lake` ([`LocalLake`] or an S3 one: `put(relative path, bytes)`, `delete(relative path)`).
    Returns the report, with the stages' timings."""
    import numpy as np
    import pandas as pd

    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = now - clock
        clock = now

    now_ms = int(time.time() * 1000)
    key = f"events/{path.name}"
    version = file_version(path)
    names = read_header(path)
    lap("hash file")

    # The whole file, every column as text: validation needs the text as it was written.
    # keep_default_na=False keeps "NA" (Namibia) and friends as text; surrogateescape keeps
    # bytes that are not UTF-8 visible; skip_blank_lines=False keeps one row per line, so a
    # row's index gives its line; rows with too many fields come back as ParserWarnings.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        df = pd.read_csv(
            path,
            compression="gzip" if is_gzip(path) else None,
            header=None,
            skiprows=1,
            names=names,
            index_col=False,
            dtype=str,
            keep_default_na=False,
            na_filter=False,
            skip_blank_lines=False,
            encoding="utf-8",
            encoding_errors="surrogateescape",
            on_bad_lines="warn",
        )
    long_lines = sorted(
        int(m.group(1))
        for w in caught
        for m in re.finditer(r"Skipping line (\d+): expected \d+ fields", str(w.message))
    )
    lap("read_csv")

    n = len(df)
    for field in OPTIONAL - set(df.columns):
        df[field] = ""
    reasons: dict[str, np.ndarray] = {}
    bad_bytes = np.zeros(n, dtype=bool)

    def column(results, i=None, dtype=np.int8):
        return np.array([r if i is None else r[i] for r in results], dtype=dtype)

    # event_id: nearly every value is distinct, so one vectorized regex over the column, and
    # the exact reason for the few that fail it.
    ids = df["event_id"]
    ok = ids.str.fullmatch(r"[A-Za-z0-9._:-]{1,128}").to_numpy(dtype=bool)
    r = np.zeros(n, dtype=np.int8)
    for i in np.flatnonzero(~ok):
        r[i] = event_id_reason(ids.iat[i])
    reasons["event_id"] = r

    # occurred_at: timestamps repeat (whole seconds), so each distinct one is parsed once, the
    # common shapes by pandas, the rest by rfc3339_ms().
    codes, uniques = pd.factorize(df["occurred_at"], sort=False)
    u = pd.Series(uniques, dtype=object)
    fast = u.str.fullmatch(FAST_TIMESTAMP).to_numpy(dtype=bool)
    parsed = pd.to_datetime(u.where(fast), format="ISO8601", utc=True, errors="coerce")
    u_ms = parsed.to_numpy(dtype="datetime64[ns]").astype(np.int64) // 1_000_000
    u_reason = np.zeros(len(u), dtype=np.int8)
    for j in np.flatnonzero(~fast | parsed.isna().to_numpy()):
        u_reason[j], u_ms[j] = timestamp_value(uniques[j], now_ms)
    u_reason[(u_reason == OK) & (u_ms > now_ms + MAX_FUTURE_MS)] = IN_FUTURE
    reasons["occurred_at"] = u_reason[codes]
    occurred_ms = u_ms[codes]
    lap("validate ids and timestamps")

    # The other columns have few distinct values: each is checked once.
    v_codes, viewers, res = per_value(
        df["viewer_id"], lambda s: (text_reason(s, MAX_TEXT_LEN), not_utf8(s))
    )
    reasons["viewer_id"] = column(res, 0)[v_codes]
    bad_bytes |= column(res, 1, bool)[v_codes]

    c_codes, contents, res = per_value(
        df["content_id"], lambda s: (text_reason(s, MAX_TEXT_LEN), not_utf8(s))
    )
    reasons["content_id"] = column(res, 0)[c_codes]
    bad_bytes |= column(res, 1, bool)[c_codes]

    d_codes, devices, res = per_value(df["device"], device_reason)
    reasons["device"] = column(res)[d_codes]

    k_codes, countries, res = per_value(df["country"], country_reason)
    reasons["country"] = column(res)[k_codes]

    numbers: dict[str, np.ndarray] = {}
    for field, (lo, hi) in INTEGERS.items():
        optional = field in OPTIONAL
        codes, _, res = per_value(df[field], lambda s: integer_value(s, lo, hi, optional))
        reasons[field] = column(res, 0)[codes]
        numbers[field] = column(res, 1, np.int64)[codes]  # -1: absent

    codes, _, res = per_value(df["completed"], completed_value)
    reasons["completed"] = column(res, 0)[codes]
    completed = column(res, 1, np.int64)[codes]

    for col in df.columns:
        if col.startswith("_ignored_"):
            codes, _, res = per_value(df[col], not_utf8)
            bad_bytes |= column(res, None, bool)[codes]
    lap("validate other fields")

    # Line of row k: k + 2, plus the lines pandas skipped before it.
    skipped = np.asarray(long_lines, dtype=np.int64)
    rows_before_skipped = skipped - np.arange(len(skipped)) - 2
    lines = np.arange(n, dtype=np.int64) + 2
    lines += np.searchsorted(rows_before_skipped, np.arange(n), side="right")

    invalid = bad_bytes.copy()
    for field in CONTRACT:
        invalid |= reasons[field] != OK

    # The refused rows are read again from the file for their raw text. As in streamcube, a
    # row whose field count is wrong, or whose bytes are not UTF-8, is refused as a whole, and
    # a blank line is no row at all.
    wanted: dict[int, int | None] = {int(lines[i]): int(i) for i in np.flatnonzero(invalid)}
    wanted.update({line: None for line in long_lines})
    raw = raw_lines(path, sorted(wanted)) if wanted else {}
    rejections = []
    blank_lines = 0
    for line in sorted(wanted):
        i, text = wanted[line], raw[line]
        if i is not None and text.strip(b"\r\n") == b"":
            blank_lines += 1
            continue
        fields = next(csv.reader([text.decode("utf-8", "surrogateescape")]), [])
        if i is not None and fields and fields[0] != ids.iat[i]:
            raise SystemExit(
                f"{path}: line {line} is not the row pandas read there: this job needs one "
                "record per line (no line breaks inside quoted fields)"
            )
        if len(fields) != len(names):
            errors = [("row", "field_count")]
        elif not_utf8(text.decode("utf-8", "surrogateescape")):
            errors = [("row", "invalid_utf8")]
        else:
            errors = [(f, REASONS[reasons[f][i]]) for f in CONTRACT if reasons[f][i] != OK]
        rejections.append(
            {
                "line": line,
                "raw": text.decode("utf-8", "replace"),
                "errors": [{"field": f, "reason": r} for f, r in errors],
            }
        )
    lap("quarantine")

    # Valid rows, first occurrence of each event_id.
    valid_rows = np.flatnonzero(~invalid)
    first = ~ids.iloc[valid_rows].duplicated(keep="first").to_numpy()
    keep = valid_rows[first]
    duplicates_in_file = int(len(valid_rows) - len(keep))
    lap("dedup")

    # Pseudonyms of the distinct viewers that are kept, with the key set up once.
    base = hmac.new(key_secret, digestmod=hashlib.sha256)
    pseudonyms = np.empty(len(viewers), dtype=object)
    for j in np.unique(v_codes[keep]).tolist():
        h = base.copy()
        h.update(viewers[j].encode("utf-8"))
        pseudonyms[j] = h.digest()
    lap("pseudonymize")

    rows = KeptRows(
        key=key,
        version=version,
        keep=keep,
        id_values=ids.to_numpy(),
        hours=occurred_ms // MS_PER_HOUR,
        occurred_ms=occurred_ms,
        pseudonyms=pseudonyms,
        v_codes=v_codes,
        contents=np.array(contents, dtype=object),
        c_codes=c_codes,
        devices=np.array(devices, dtype=object),
        d_codes=d_codes,
        countries=np.array(countries, dtype=object),
        k_codes=k_codes,
        numbers=numbers,
        completed=completed,
        lines=lines,
    )
    inserted = write_silver(rows, lap)
    lap("silver")

    # Quarantine and report, in streamcube's layout and shapes.
    quarantine_rel = f"quarantine/{key}.jsonl"
    if rejections:
        lake.put(
            quarantine_rel,
            "".join(
                json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n"
                for r in rejections
            ).encode("utf-8"),
        )
    else:
        lake.delete(quarantine_rel)
    by_reason: dict[str, int] = {}
    for r in rejections:
        for k in {f"{e['field']}:{e['reason']}" for e in r["errors"]}:
            by_reason[k] = by_reason.get(k, 0) + 1
    report = {
        "key": key,
        "version": version,
        "kind": "events",
        "rows": n - blank_lines + len(long_lines),
        "accepted": inserted,
        "duplicates": duplicates_in_file + (len(keep) - inserted),
        "rejected": len(rejections),
        "rejected_by_reason": dict(sorted(by_reason.items())),
        "quarantine": quarantine_rel if rejections else None,
    }
    if report["accepted"] + report["duplicates"] + report["rejected"] != report["rows"]:
        raise SystemExit(f"{path}: internal error, the counts do not add up: {report}")
    lake.put(f"reports/{key}.json", (json.dumps(report, indent=2) + "\n").encode("utf-8"))
    lap("report")
    report["timings"] = timings
    return report


def raw_lines(path: Path, wanted: list[int]) -> dict[int, bytes]:
    """The given lines (1-based, sorted) of the file, without their line break."""
    out: dict[int, bytes] = {}
    it = iter(wanted)
    target = next(it, None)
    with open_binary(path) as f:
        for number, line in enumerate(f, 1):
            if number == target:
                out[number] = line.rstrip(b"\r\n")
                target = next(it, None)
                if target is None:
                    break
    missing = [w for w in wanted if w not in out]
    if missing:
        raise SystemExit(f"{path}: lines {missing[:5]} are past the end of the file")
    return out


def print_report(job: str, r: dict, seconds: float) -> None:
    """One line of a file's report and the stages' timings (removed from the report)."""
    t = r.pop("timings")
    print(
        f"  {job}: {r['key']}: rows {r['rows']:,}, accepted {r['accepted']:,}, "
        f"duplicates {r['duplicates']:,}, rejected {r['rejected']:,} in {seconds:.2f} s ("
        + ", ".join(f"{k} {v:.2f}" for k, v in t.items())
        + ")",
        flush=True,
    )


def cmd_ingest(args: argparse.Namespace) -> int:
    key_hex = os.environ.get("STREAMCUBE_PSEUDONYM_KEY", "").strip()
    try:
        key_secret = bytes.fromhex(key_hex)
    except ValueError:
        sys.exit("STREAMCUBE_PSEUDONYM_KEY is not hex")
    if len(key_secret) < 32:
        sys.exit("STREAMCUBE_PSEUDONYM_KEY must hold at least 32 bytes (64 hex digits)")
    lake = Path(args.lake)
    con = sqlite3.connect(args.db, isolation_level=None, timeout=30)
    for p in PRAGMAS:
        con.execute(p)
    create_schema(con)
    for name in args.files:
        path = Path(name)
        if not path.exists():
            sys.exit(f"{path} does not exist")
        started = time.perf_counter()
        r = ingest_file(path, key_secret, sqlite_writer(con), LocalLake(lake))
        print_report("pandas job", r, time.perf_counter() - started)
    con.close()
    return 0


# --------------------------------------------------------------------------
# check


def cmd_check(args: argparse.Namespace) -> int:
    sc_dir = Path(args.streamcube_dir)
    pd_lake = Path(args.lake)
    key = f"events/{args.name}"

    def load_report(lake: Path, who: str) -> dict:
        p = lake / f"reports/{key}.json"
        if not p.exists():
            raise SystemExit(f"{who}: no report at {p}")
        return json.loads(p.read_text())

    sc = load_report(sc_dir / "lake", "streamcube")
    pj = load_report(pd_lake, "pandas job")

    print(f"  {'':32} {'streamcube':>12} {'pandas job':>12}")
    counts_same = True
    for k in ("rows", "accepted", "duplicates", "rejected"):
        same = sc[k] == pj[k]
        counts_same &= same
        print(f"  {k:32} {sc[k]:>12,} {pj[k]:>12,}{'' if same else '   <- differs'}")
    for r in sorted(set(sc["rejected_by_reason"]) | set(pj["rejected_by_reason"])):
        a = sc["rejected_by_reason"].get(r, 0)
        b = pj["rejected_by_reason"].get(r, 0)
        print(f"    {r:30} {a:>12,} {b:>12,}{'' if a == b else '   <- differs'}")
    reasons_same = sc["rejected_by_reason"] == pj["rejected_by_reason"]

    con = sqlite3.connect(":memory:")
    con.execute("ATTACH DATABASE ? AS sc", (str(sc_dir / "streamcube.db"),))
    con.execute("ATTACH DATABASE ? AS pj", (args.db,))

    def scalar(q: str):
        return con.execute(q).fetchone()[0]

    n_sc = scalar("SELECT count(*) FROM sc.silver_events")
    n_pj = scalar("SELECT count(*) FROM pj.silver_events")
    print(f"  {'silver rows':32} {n_sc:>12,} {n_pj:>12,}")
    sizes_ok = n_sc == sc["accepted"] and n_pj == pj["accepted"]
    # Each table's ids with their rows' seq, indexed here: silver_ids holds only the ids up to
    # silver_meta.indexed_through, and the files are not to be changed by the check.
    for a in ("sc", "pj"):
        con.execute(
            f"CREATE TEMP TABLE ids_{a} (event_id TEXT PRIMARY KEY, seq INTEGER) WITHOUT ROWID"
        )
        con.execute(f"INSERT OR IGNORE INTO ids_{a} SELECT event_id, seq FROM {a}.silver_events")

    missing = "NOT EXISTS (SELECT 1 FROM ids_{b} y WHERE y.event_id = x.event_id)"
    only = {}
    for a, b in (("sc", "pj"), ("pj", "sc")):
        only[a] = scalar(f"SELECT count(*) FROM {a}.silver_events x WHERE {missing.format(b=b)}")
    print(
        f"  event_ids only in streamcube's silver: {only['sc']:,}, "
        f"only in the pandas job's: {only['pj']:,}"
    )
    for a, b, label in (("sc", "pj", "streamcube"), ("pj", "sc", "the pandas job")):
        if only[a]:
            ex = con.execute(
                f"SELECT event_id FROM {a}.silver_events x WHERE {missing.format(b=b)} LIMIT 3"
            ).fetchall()
            print(f"    e.g. only in {label}: {', '.join(e[0] for e in ex)}")
    ids_same = only["sc"] == 0 and only["pj"] == 0

    columns = [c for c in SILVER_COLUMNS if c != "event_id"]
    # A file's id in silver_origins is each store's own: the names are compared.
    origin_name = "(SELECT origin FROM {}.silver_origins WHERE id = {}.origin_file)"
    diff = ", ".join(
        f"coalesce(sum({origin_name.format('sc', 'a')} IS NOT {origin_name.format('pj', 'b')}), 0)"
        if c == "origin_file"
        else f"coalesce(sum(a.{c} IS NOT b.{c}), 0)"
        for c in columns
    )
    row = con.execute(
        f"SELECT count(*), {diff} FROM ids_sc i JOIN ids_pj j USING (event_id)"
        " JOIN sc.silver_events a ON a.seq = i.seq JOIN pj.silver_events b ON b.seq = j.seq"
    ).fetchone()
    differing = {c: n for c, n in zip(columns, row[1:]) if n}
    print(
        f"  shared rows: {row[0]:,}; differing columns: "
        + (", ".join(f"{c} in {n:,} rows" for c, n in differing.items()) if differing else "none")
    )

    def quarantine(lake: Path, report: dict) -> dict[int, tuple]:
        out = {}
        if report.get("quarantine"):
            with (lake / report["quarantine"]).open(encoding="utf-8") as f:
                for line in f:
                    r = json.loads(line)
                    errs = tuple((e["field"], e["reason"]) for e in r["errors"])
                    out[r["line"]] = (r["raw"], errs)
        return out

    # Each store's id index: the XXH3 key (with that store's seed) and seq of every row up to its
    # indexed_through, and nothing else. Computed here in Python, so streamcube's keys are
    # checked against another implementation of XXH3 too.
    import xxhash

    def key_of(seed: int, event_id: str) -> int:
        h = xxhash.xxh3_64_intdigest(event_id.encode("utf-8"), seed & 0xFFFF_FFFF_FFFF_FFFF)
        return h - (1 << 64) if h >= 1 << 63 else h

    con.create_function("key_of", 2, key_of, deterministic=True)
    index_off = {}
    for a in ("sc", "pj"):
        index_off[a] = scalar(
            f"SELECT (SELECT count(*) FROM {a}.silver_events e, {a}.silver_meta m"
            "         WHERE e.seq <= m.indexed_through AND NOT EXISTS ("
            f"            SELECT 1 FROM {a}.silver_ids i"
            "             WHERE i.id_hash = key_of(m.id_seed, e.event_id) AND i.seq = e.seq))"
            f"     + abs((SELECT count(*) FROM {a}.silver_ids)"
            f"         - (SELECT count(*) FROM {a}.silver_events e, {a}.silver_meta m"
            "              WHERE e.seq <= m.indexed_through))"
        )
    print(
        f"  id index entries missing or extra: streamcube {index_off['sc']:,}, "
        f"pandas job {index_off['pj']:,}"
    )

    q_sc = quarantine(sc_dir / "lake", sc)
    q_pj = quarantine(pd_lake, pj)
    q_diff = sorted(k for k in set(q_sc) | set(q_pj) if q_sc.get(k) != q_pj.get(k))
    print(
        f"  quarantined rows: {len(q_sc):,} and {len(q_pj):,}; "
        f"differing in line, raw text or reasons: {len(q_diff):,}"
    )
    for k in q_diff[:3]:
        print(f"    line {k}: streamcube {q_sc.get(k)}")
        print(f"    line {k}: pandas job {q_pj.get(k)}")

    checks = [
        ("same rows, accepted, duplicates and rejected counts", counts_same),
        ("same rejected rows per reason", reasons_same),
        ("each silver table holds exactly its accepted rows", sizes_ok),
        ("same set of event_ids in both silver tables", ids_same),
        ("identical shared silver rows (every column: pseudonym, hour, origin...)", not differing),
        ("identical quarantine (line, raw text, reasons)", not q_diff),
        (
            "each id index holds the XXH3 key of exactly its indexed rows",
            not any(index_off.values()),
        ),
    ]
    print()
    for label, ok in checks:
        verdict(ok, label)
    failures = [label for label, ok in checks if not ok]
    if args.json:
        Path(args.json).write_text(
            json.dumps({"streamcube": sc, "pandas": pj, "failures": failures}, indent=2) + "\n"
        )
    return 1 if failures else 0


# --------------------------------------------------------------------------
# summary and table

TARGET_SPEEDUP = 20.0  # streamcube rows/s at least 20x the pandas job's
TARGET_FLAT = 1.25  # streamcube's peak memory on the big set at most 1.25x that on the 1M set
TARGET_WORDS = ("MET", "MISS")  # the targets are information, not checks


def cmd_summary(args: argparse.Namespace) -> int:
    entry = {
        "label": args.label,
        "rows": args.rows,
        "base": args.base,
        "streamcube": best_of(args.streamcube),
        "pandas": best_of(args.pandas),
    }
    with open(args.append, "a", encoding="utf-8") as f:
        f.write(json.dumps(entry) + "\n")
    return 0


def cmd_table(args: argparse.Namespace) -> int:
    entries = [json.loads(line) for line in Path(args.summary).read_text().splitlines() if line]
    head = (
        f"{'data set':<16} {'rows':>10} | {'streamcube':>10} {'cpu s':>6} {'rows/s':>9} {'MiB':>6}"
        f" {'anon':>5} | {'pandas':>8} {'cpu s':>6} {'rows/s':>9} {'MiB':>6} {'anon':>5} |"
        f" {'speed':>6} {'memory':>6}"
    )
    print(head)
    print("-" * len(head))

    for e in entries:
        s, p = e["streamcube"], e["pandas"]
        s_rate, p_rate = e["rows"] / s["seconds"], e["rows"] / p["seconds"]
        e["speed"] = s_rate / p_rate
        e["memory"] = p["peak_rss_bytes"] / s["peak_rss_bytes"]
        print(
            f"{e['label']:<16} {e['rows']:>10,} | {s['seconds']:>9.2f}s {cpu_seconds(s):>6.1f}"
            f" {s_rate:>9,.0f} {mib(s['peak_rss_bytes']):>6.0f} {anon(s):>5} |"
            f" {p['seconds']:>7.2f}s {cpu_seconds(p):>6.1f} {p_rate:>9,.0f}"
            f" {mib(p['peak_rss_bytes']):>6.0f} {anon(p):>5} |"
            f" {e['speed']:>5.1f}x {e['memory']:>5.1f}x"
        )
    runs = entries[0]["streamcube"]["runs"] if entries else 0
    print(
        f"speed: streamcube rows/s / pandas rows/s; memory: pandas peak RSS / streamcube peak RSS."
        f"\nBest wall time of {runs} run(s) (cpu s: user + system of that run), highest peak RSS;"
        " whole processes: the pandas one includes the Python interpreter and its libraries."
        "\nanon: peak anonymous memory (RssAnon, sampled every 20 ms), the process's own memory"
        " without the database pages it reads through its 1 GiB memory map."
    )
    print()
    for e in entries:
        verdict(
            e["speed"] >= TARGET_SPEEDUP,
            f"{e['label']}: streamcube at least {TARGET_SPEEDUP:g}x"
            f" the pandas job's throughput ({e['speed']:.1f}x)",
            TARGET_WORDS,
        )
    for e in entries:
        base = next((b for b in entries if b["label"] == e.get("base")), None)
        if base is None:
            continue
        for peak, what in (("peak_rss_bytes", "peak RSS"), ("peak_anon_bytes", "own memory")):
            if peak not in e["streamcube"] or peak not in base["streamcube"]:
                continue
            ratio = e["streamcube"][peak] / base["streamcube"][peak]
            verdict(
                ratio <= TARGET_FLAT,
                f"streamcube's {what} flat from {base['label']} to"
                f" {e['label']}: {mib(base['streamcube'][peak]):.0f} ->"
                f" {mib(e['streamcube'][peak]):.0f} MiB"
                f" ({ratio:.2f}x, target <= {TARGET_FLAT:g}x)",
                TARGET_WORDS,
            )
    print("  (the targets are information: they never change the exit status)")
    over_the_run(entries)
    return 0


def over_the_run(entries: list[dict]) -> None:
    """streamcube's own memory at points of each run (of its fastest run): a peak reached early
    and held is flat memory; one that climbs with the rows is not."""
    lines = []
    for e in entries:
        timeline = e["streamcube"].get("anon_timeline") or []
        if len(timeline) < 2:
            continue
        end = timeline[-1][0]
        points = []
        for share in (0.1, 0.25, 0.5, 0.75, 1.0):
            _, b = next(p for p in timeline if p[0] >= share * end)
            points.append(f"{share:.0%} {mib(b):.0f}")
        lines.append(f"  {e['label']:<16} ({end:.0f} s): " + ", ".join(points))
    if lines:
        print("\nstreamcube's own memory (RssAnon, MiB) at shares of its run's time:")
        print("\n".join(lines))


# --------------------------------------------------------------------------


def main() -> int:
    p, sub = benchlib.commands(__doc__)

    i = benchlib.command(sub, "ingest", cmd_ingest)
    i.add_argument("--db", required=True, help="SQLite database (created if needed)")
    i.add_argument("--lake", required=True, help="directory for quarantine/ and reports/")
    i.add_argument("files", nargs="+")

    c = benchlib.command(sub, "check", cmd_check)
    c.add_argument("--streamcube-dir", required=True, help="streamcube's data directory")
    c.add_argument("--db", required=True, help="the pandas job's database")
    c.add_argument("--lake", required=True, help="the pandas job's lake directory")
    c.add_argument("--name", required=True, help="file name of the events file")
    c.add_argument("--json")

    s = benchlib.command(sub, "summary", cmd_summary)
    s.add_argument("--label", required=True)
    s.add_argument("--rows", type=int, required=True)
    s.add_argument("--base", help="label of the data set whose memory this one should match")
    s.add_argument("--streamcube", nargs="+", required=True)
    s.add_argument("--pandas", nargs="+", required=True)
    s.add_argument("--append", required=True)

    t = benchlib.command(sub, "table", cmd_table)
    t.add_argument("--summary", required=True)

    return benchlib.run(p)


if __name__ == "__main__":
    sys.exit(main())
