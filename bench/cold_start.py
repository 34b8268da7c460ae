#!/usr/bin/env python3
"""Helper of bench/cold_start.sh: a function binary's cold start under a local Lambda
Runtime API, and the size of its deployment zip.

  run --bin PATH --event FILE --label NAME [--runs N] [--seed-dir DIR] [--work DIR]
      [--expect-status CODE] [--expect-no-failures] [--json OUT] [--target-ms MS]
  zip --bin PATH --out ZIP [--json OUT] [--target-mb MB]
  stream-batch --sample FILE --records N --hours H --out FILE

`run` starts the binary --runs times, each time as Lambda starts a new execution
environment: a fresh process whose AWS_LAMBDA_RUNTIME_API names a Runtime API
served here (the 2018-06-01 API: `invocation/next`, `invocation/{id}/response`,
`invocation/{id}/error`, `init/error`), with the function's reserved environment
variables set. Each run gets its own copy of --seed-dir as STREAMCUBE_DATA_DIR (the
copy is made before the clock starts). The clock starts just before the process is
spawned; the figures per run are
  init    until the function asks for its first invocation (`invocation/next`)
  answer  until it has posted the answer to that invocation (`.../response`)
  work    answer - init: the invocation itself, the event's transfer included
  rss     the process's peak resident memory after answering (VmHWM)
The run fails (exit status 1) when the function reports an error, posts no answer
within 30 s, exits early, with --expect-status answers an HTTP status other than
CODE, or with --expect-no-failures answers a partial batch response that names a
record: the timed work is the real work of the sample event, never an error path.

`zip` packages the binary as Lambda's custom runtime wants it (one `bootstrap`
file, mode 755, deflate level 9: what `cargo lambda build --output-format zip`
does) and prints the binary's and the zip's sizes in MB (10^6 bytes, as Lambda's
quotas count them).

`stream-batch` writes a DynamoDB stream batch of N INSERT records of the silver table,
each the sample's first INSERT record with its own event id and sequence number, spread
evenly over H consecutive hours from the sample record's: the batch stream-marker gets
when a bronze file's rows reach a shard (up to the mapping's BatchSize of 1,000).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.dont_write_bytecode = True  # no __pycache__ in bench/ for the import below
import benchlib  # noqa: E402

PREFIX = "/2018-06-01/runtime"
ANSWER_TIMEOUT_S = 30.0


class Invocation:
    """One cold start: the event to hand out once, and what the function did with it."""

    def __init__(self, event: bytes, function_name: str):
        self.event = event
        self.request_id = str(uuid.uuid4())
        self.arn = f"arn:aws:lambda:us-east-1:123456789012:function:{function_name}"
        self.handed_out = False
        self.started = 0.0
        self.init_at: float | None = None
        self.answered_at: float | None = None
        self.outcome: str | None = None  # "response", "error" or "init-error"
        self.body = b""
        self.done = threading.Event()
        self.stop = threading.Event()

    def finish(self, outcome: str, body: bytes) -> None:
        self.answered_at = time.perf_counter()
        self.outcome = outcome
        self.body = body
        self.done.set()


class QuietServer(ThreadingHTTPServer):
    """Connections the killed function leaves behind are expected, not errors."""

    def handle_error(self, request, client_address) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def runtime_api(inv: Invocation) -> ThreadingHTTPServer:
    """A Runtime API for one invocation, on a free port of 127.0.0.1."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # quiet
            pass

        def reply(self, status: int, body: bytes = b"", headers: dict | None = None) -> None:
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path != f"{PREFIX}/invocation/next":
                return self.reply(404)
            if inv.handed_out:
                # The environment would be frozen here; this one is killed instead, and the
                # request is left without an answer.
                inv.stop.wait(ANSWER_TIMEOUT_S)
                self.close_connection = True
                return None
            inv.handed_out = True
            inv.init_at = time.perf_counter()
            deadline_ms = int(time.time() * 1000) + 900_000
            self.reply(
                200,
                inv.event,
                {
                    "Lambda-Runtime-Aws-Request-Id": inv.request_id,
                    "Lambda-Runtime-Deadline-Ms": str(deadline_ms),
                    "Lambda-Runtime-Invoked-Function-Arn": inv.arn,
                    "Lambda-Runtime-Trace-Id": "Root=1-00000000-000000000000000000000000;Sampled=0",
                },
            )

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path == f"{PREFIX}/invocation/{inv.request_id}/response":
                inv.finish("response", body)
            elif self.path == f"{PREFIX}/invocation/{inv.request_id}/error":
                inv.finish("error", body)
            elif self.path == f"{PREFIX}/init/error":
                inv.finish("init-error", body)
            else:
                return self.reply(404)
            self.reply(202, b'{"status":"OK"}')

    server = QuietServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def lambda_env(port: int, name: str, data_dir: Path | None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{port}",
            "AWS_LAMBDA_FUNCTION_NAME": name,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024",
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{name}",
            "AWS_LAMBDA_LOG_STREAM_NAME": "cold-start",
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
    )
    if data_dir is not None:
        env["STREAMCUBE_DATA_DIR"] = str(data_dir)
    return env


def peak_rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def http_status(body: bytes) -> int | None:
    try:
        answer = json.loads(body)
    except ValueError:
        return None
    return answer.get("statusCode") if isinstance(answer, dict) else None


class Failure(Exception):
    pass


def cold_start(args: argparse.Namespace, event: bytes, run: int, log) -> dict:
    data_dir = None
    if args.seed_dir:
        data_dir = Path(args.work) / f"run-{run}"
        shutil.rmtree(data_dir, ignore_errors=True)
        shutil.copytree(args.seed_dir, data_dir)
    inv = Invocation(event, args.label)
    server = runtime_api(inv)
    env = lambda_env(server.server_address[1], args.label, data_dir)
    try:
        inv.started = time.perf_counter()
        proc = subprocess.Popen([args.bin], env=env, stdout=log, stderr=log)
        try:
            while not inv.done.wait(0.005):
                if proc.poll() is not None:
                    raise Failure(f"the process exited with status {proc.returncode}")
                if time.perf_counter() - inv.started > ANSWER_TIMEOUT_S:
                    raise Failure(f"no answer within {ANSWER_TIMEOUT_S:.0f} s")
            rss = peak_rss_bytes(proc.pid)
        finally:
            inv.stop.set()
            proc.kill()
            proc.wait()
    finally:
        server.shutdown()
        server.server_close()
    if inv.outcome != "response":
        raise Failure(f"{inv.outcome}: {inv.body[:300]!r}")
    status = http_status(inv.body)
    if args.expect_status is not None and status != args.expect_status:
        raise Failure(f"HTTP status {status}, expected {args.expect_status}: {inv.body[:300]!r}")
    if args.expect_no_failures:
        try:
            failures = json.loads(inv.body)["batchItemFailures"]
        except (ValueError, KeyError, TypeError):
            raise Failure(f"not a partial batch response: {inv.body[:300]!r}") from None
        if failures != []:
            raise Failure(f"records reported failed: {inv.body[:300]!r}")
    if data_dir is not None:
        shutil.rmtree(data_dir, ignore_errors=True)
    return {
        "init_ms": (inv.init_at - inv.started) * 1000,
        "answer_ms": (inv.answered_at - inv.started) * 1000,
        "peak_rss_bytes": rss,
        "status": status,
    }


def cmd_run(args: argparse.Namespace) -> int:
    event = Path(args.event).read_bytes()
    Path(args.work).mkdir(parents=True, exist_ok=True)
    runs = []
    with open(Path(args.work) / f"{args.label}.log", "wb") as log:
        for i in range(args.runs):
            try:
                runs.append(cold_start(args, event, i, log))
            except Failure as e:
                print(f"  {args.label}: run {i + 1} failed: {e}", file=sys.stderr)
                print(f"  (the function's output is in {log.name})", file=sys.stderr)
                return 1
    init = sorted(r["init_ms"] for r in runs)
    answer = sorted(r["answer_ms"] for r in runs)
    work = sorted(r["answer_ms"] - r["init_ms"] for r in runs)
    result = {
        "label": args.label,
        "event": Path(args.event).name,
        "runs": len(runs),
        "status": runs[0]["status"],
        "init_p50_ms": benchlib.percentile(init, 50),
        "answer_p50_ms": benchlib.percentile(answer, 50),
        "answer_max_ms": answer[-1],
        "work_p50_ms": benchlib.percentile(work, 50),
        "peak_rss_bytes": max(r["peak_rss_bytes"] for r in runs),
    }
    status = "" if result["status"] is None else f", HTTP {result['status']}"
    print(
        f"  {args.label:<18} init p50 {result['init_p50_ms']:6.1f} ms   first answer "
        f"p50 {result['answer_p50_ms']:6.1f} ms, max {result['answer_max_ms']:6.1f} ms "
        f"(work p50 {result['work_p50_ms']:5.1f} ms)   "
        f"peak RSS {benchlib.mib(result['peak_rss_bytes']):5.1f} MiB   "
        f"({len(runs)} runs, {result['event']}{status})"
    )
    benchlib.verdict(
        result["answer_p50_ms"] < args.target_ms,
        f"{args.label}: first answer p50 under {args.target_ms:g} ms",
        ("MET", "MISS"),
    )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


def cmd_zip(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    info = zipfile.ZipInfo("bootstrap", date_time=(1980, 1, 1, 0, 0, 0))
    info.external_attr = (0o100755 & 0xFFFF) << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    with zipfile.ZipFile(out, "w") as z, open(args.bin, "rb") as f:
        z.writestr(info, f.read(), compresslevel=9)
    result = {
        "label": Path(args.bin).name,
        "binary_bytes": Path(args.bin).stat().st_size,
        "zip_bytes": out.stat().st_size,
    }
    print(
        f"  {result['label']:<18} binary {result['binary_bytes'] / 1e6:5.1f} MB   "
        f"zip {result['zip_bytes'] / 1e6:5.1f} MB"
    )
    benchlib.verdict(
        result["zip_bytes"] < args.target_mb * 1e6,
        f"{result['label']}: zip under {args.target_mb:g} MB",
        ("MET", "MISS"),
    )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


def cmd_stream_batch(args: argparse.Namespace) -> int:
    if args.records < 1 or args.hours < 1:
        raise SystemExit("--records and --hours must be at least 1")
    sample = json.loads(Path(args.sample).read_text())
    base = next(r for r in sample["Records"] if r["eventName"] == "INSERT")
    hour0 = int(base["dynamodb"]["NewImage"]["hour"]["N"])
    seq0 = int(base["dynamodb"]["SequenceNumber"])
    records = []
    for i in range(args.records):
        r = copy.deepcopy(base)
        event_id = str(uuid.UUID(int=i + 1))
        hour = hour0 + i * args.hours // args.records
        r["eventID"] = f"{i + 1:032x}"
        r["dynamodb"]["SequenceNumber"] = str(seq0 + i)
        r["dynamodb"]["Keys"]["event_id"]["S"] = event_id
        image = r["dynamodb"]["NewImage"]
        image["event_id"]["S"] = event_id
        image["hour"]["N"] = str(hour)
        image["hour_shard"]["S"] = f"{hour}#{i % 16:02d}"
        records.append(r)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"Records": records}))
    print(f"  {out.name}: {args.records} records over {args.hours} hour(s), {out.stat().st_size:,} bytes")
    return 0


def main() -> int:
    p, sub = benchlib.commands(__doc__)
    r = benchlib.command(sub, "run", cmd_run)
    r.add_argument("--bin", required=True)
    r.add_argument("--event", required=True)
    r.add_argument("--label", required=True)
    r.add_argument("--runs", type=int, default=20)
    r.add_argument("--seed-dir")
    r.add_argument("--work", default="cold-start-work")
    r.add_argument("--expect-status", type=int)
    r.add_argument("--expect-no-failures", action="store_true")
    r.add_argument("--json")
    r.add_argument("--target-ms", type=float, default=50.0)
    z = benchlib.command(sub, "zip", cmd_zip)
    z.add_argument("--bin", required=True)
    z.add_argument("--out", required=True)
    z.add_argument("--json")
    z.add_argument("--target-mb", type=float, default=10.0)
    s = benchlib.command(sub, "stream-batch", cmd_stream_batch)
    s.add_argument("--sample", required=True)
    s.add_argument("--records", type=int, required=True)
    s.add_argument("--hours", type=int, default=1)
    s.add_argument("--out", required=True)
    return benchlib.run(p)


if __name__ == "__main__":
    sys.exit(main())
